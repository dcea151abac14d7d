//! Writing: the tree builder hands new chunks and tree pages to a [`ChunkWriter`], which packs
//! and uploads them; every few packs' worth of bytes it writes an index object naming the
//! finished packs and updates the session object, so that a rerun after a crash reuses what
//! this run stored.

use super::*;

/// Ids stored by this run (or an interrupted run being resumed).
#[derive(Default)]
pub(super) struct KnownSet {
    pub(super) ids: HashSet<ChunkId>,
}

impl KnownSet {
    pub(super) fn insert(&mut self, id: ChunkId) {
        if self.ids.len() < KNOWN_SET_LIMIT {
            self.ids.insert(id);
        }
    }
    pub(super) fn contains(&self, id: &ChunkId) -> bool {
        self.ids.contains(id)
    }
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Packs, uploads and indexes what the tree builder stores, and checkpoints the session.
pub(super) struct ChunkWriter {
    repo: Repository,
    data_packer: Packer,
    tree_packer: Packer,
    /// Ids stored by this run or the interrupted run it resumes: each is stored once.
    known: KnownSet,
    /// The session record, naming every index object written so far.
    session: SessionRecord,
    session_key: String,
    /// Uploaded packs no index object names yet.
    pending_index: Vec<UploadedPack>,
    /// Where this backup's uploaded tree pages went: pack, offset, length.
    tree_locations: HashMap<ChunkId, (ChunkId, u64, u32)>,
    /// Data chunks stored, and their bytes before compression.
    chunks_new: u64,
    data_bytes_new: u64,
}

impl ChunkWriter {
    /// A writer going on from what `resumed` says is stored, checkpointing to `session_key`,
    /// with `upload_concurrency` packs uploading at once for each packer.
    pub(super) fn new(
        repo: &Repository,
        resumed: Resumed,
        session_key: String,
        upload_concurrency: usize,
    ) -> Self {
        ChunkWriter {
            repo: repo.clone(),
            data_packer: Packer::new(
                repo.clone(),
                BlobKind::Data,
                repo.config().pack_size as usize,
                upload_concurrency,
            ),
            tree_packer: Packer::new(
                repo.clone(),
                BlobKind::Tree,
                repo.config().tree_pack_size as usize,
                upload_concurrency,
            ),
            known: resumed.known,
            session: resumed.session,
            session_key,
            pending_index: Vec::new(),
            tree_locations: HashMap::new(),
            chunks_new: 0,
            data_bytes_new: 0,
        }
    }

    /// Whether this run (or the one it resumes) stored `id` already.
    pub(super) fn is_stored(&self, id: &ChunkId) -> bool {
        self.known.contains(id)
    }

    /// Stores a data chunk not stored yet; `outlook` tells the data packer how much input may
    /// still come, for the size of its last packs.
    pub(super) async fn add_data(
        &mut self,
        id: ChunkId,
        bytes: Vec<u8>,
        outlook: Outlook,
    ) -> Result<()> {
        self.chunks_new += 1;
        self.data_bytes_new += bytes.len() as u64;
        self.known.insert(id);
        self.data_packer.expect(outlook);
        self.data_packer.add(id, bytes).await?;
        self.checkpoint().await
    }

    /// Stores a tree page not stored yet.
    pub(super) async fn add_page(&mut self, id: ChunkId, bytes: Vec<u8>) -> Result<()> {
        self.known.insert(id);
        self.tree_packer.add(id, bytes).await
    }

    /// Every few packs' worth of bytes: an index object for them and a session checkpoint.
    async fn checkpoint(&mut self) -> Result<()> {
        let completed = self.data_packer.completed_bytes() + self.tree_packer.completed_bytes();
        if completed < PACKS_PER_INDEX * self.repo.config().pack_size as u64 {
            return Ok(());
        }
        self.write_index().await?;
        self.write_session().await
    }

    /// Takes the packers' finished uploads for the next index object, noting where tree pages
    /// went (for the tree table).
    fn collect_completed(&mut self) {
        let completed: Vec<UploadedPack> = self
            .data_packer
            .take_completed()
            .into_iter()
            .chain(self.tree_packer.take_completed())
            .collect();
        for pack in &completed {
            for entry in pack.entries.iter().filter(|e| e.kind == BlobKind::Tree) {
                self.tree_locations
                    .insert(entry.id, (pack.name, entry.offset, entry.length));
            }
        }
        self.pending_index.extend(completed);
    }

    /// Writes an index object naming the uploaded packs no index object names yet.
    pub(super) async fn write_index(&mut self) -> Result<()> {
        self.collect_completed();
        if self.pending_index.is_empty() {
            return Ok(());
        }
        let packs: Vec<_> = self
            .pending_index
            .drain(..)
            .map(|p| (p.name, p.entries))
            .collect();
        let (key, _) = index::write_index_object(&self.repo, &packs).await?;
        self.session.index_objects.push(key);
        Ok(())
    }

    async fn write_session(&mut self) -> Result<()> {
        self.session.updated_at = crate::time_util::now_rfc3339();
        self.repo
            .write_record(&self.session_key, &self.session)
            .await?;
        Ok(())
    }

    /// Seals and uploads what is left in both packers and waits for every upload; the last
    /// index object is written by [`ChunkWriter::write_index`].
    pub(super) async fn finish_packers(&mut self) -> Result<()> {
        self.data_packer.finish().await?;
        self.tree_packer.finish().await?;
        self.collect_completed();
        Ok(())
    }

    /// Where this backup uploaded tree page `id`: pack, offset, length.
    pub(super) fn tree_location(&self, id: &ChunkId) -> Option<(ChunkId, u64, u32)> {
        self.tree_locations.get(id).copied()
    }

    /// Adds the chunks stored to `stats`.
    pub(super) fn count_into(&self, stats: &mut BackupStats) {
        stats.chunks_new = self.chunks_new;
        stats.data_bytes_new = self.data_bytes_new;
    }

    /// Bytes of data packs uploaded.
    pub(super) fn data_pack_bytes(&self) -> u64 {
        self.data_packer.bytes_uploaded
    }
}
