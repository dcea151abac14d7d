//! Building: the tree builder walks the tree in slot order, keeps the parent's untouched
//! subtrees by id, deduplicates new chunks against this run's (and a resumed run's) uploads
//! and hands new chunks and pages to the packers, with index objects and session checkpoints
//! as it goes.

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

/// Builds the new tree in slot order, pulling slot data as leaves need it.
pub(super) struct TreeBuilder<'a> {
    pub(super) repo: &'a Repository,
    pub(super) bitmap: &'a SlotBitmap,
    pub(super) slots: u64,
    /// Slots marked to be read, and their size.
    pub(super) planned_slots: u64,
    pub(super) chunk_size: u64,
    pub(super) inherit: bool,
    pub(super) parent_reader: Option<PageReader>,
    /// The parent's root (zero for none) and tree table, which the new tree's table extends.
    pub(super) parent_root: ChunkId,
    pub(super) parent_table: Option<TreeTable>,
    pub(super) data: DataFeed,
    pub(super) data_packer: Packer,
    pub(super) tree_packer: Packer,
    pub(super) known: KnownSet,
    pub(super) session: SessionRecord,
    pub(super) session_key: String,
    pub(super) stats: BackupStats,
    pub(super) progress: Option<Arc<dyn Progress>>,
    pub(super) pending_index: Vec<UploadedPack>,
    pub(super) quarantine: crate::quarantine::Quarantine,
    /// Position and id of every non-zero page this backup built, for its tree table.
    pub(super) new_pages: Vec<(u8, u64, ChunkId)>,
    /// Where this backup's uploaded tree pages went: pack, offset, length.
    pub(super) tree_locations: HashMap<ChunkId, (ChunkId, u64, u32)>,
}

/// What the build stage hands the commit.
pub(super) struct Built {
    /// The new tree's root.
    pub(super) root: ChunkId,
    /// The new tree's depth.
    pub(super) depth: u32,
    /// Slots the tree covers.
    pub(super) slots: u64,
    /// What was read and stored (the commit adds the uploads and the time).
    pub(super) stats: BackupStats,
    /// Bytes of data packs uploaded.
    pub(super) data_pack_bytes: u64,
}

impl<'a> TreeBuilder<'a> {
    /// A builder for the slots `plan` marks, reading them from `data`, comparing with the
    /// parent's tree and storing what is new with what `loaded` says is stored already.
    pub(super) fn new(
        repo: &'a Repository,
        plan: &'a Plan,
        data: DataFeed,
        loaded: Loaded,
        session_key: String,
        upload_concurrency: usize,
        progress: Option<Arc<dyn Progress>>,
    ) -> Self {
        TreeBuilder {
            repo,
            bitmap: &plan.bitmap,
            slots: plan.bitmap.slots(),
            planned_slots: plan.bitmap.count(),
            chunk_size: repo.chunk_size(),
            inherit: plan.change_source.inherits_from_parent(),
            parent_reader: loaded.parent_reader,
            parent_root: loaded.parent_root,
            parent_table: loaded.parent_table,
            data,
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
            known: loaded.known,
            session: loaded.session,
            session_key,
            stats: BackupStats::default(),
            progress,
            pending_index: Vec::new(),
            quarantine: loaded.quarantine,
            new_pages: Vec::new(),
            tree_locations: HashMap::new(),
        }
    }

    /// The build stage: builds the tree on the parent's, waits for every upload, and writes
    /// the last index object and the tree table of backup `manifest_id`.
    pub(super) async fn run(mut self, manifest_id: &str, clock: &Clock) -> Result<Built> {
        let slots = self.slots;
        let depth = tree::depth_for(slots);
        let root = self.build(depth - 1, 0, self.parent_root).await?;
        clock.log("tree built");
        self.finish_packers().await?;
        let table = self.tree_table();
        // The last index object and the tree table are independent: write them together.
        let repo = self.repo;
        tokio::try_join!(self.write_index(), table.write(repo, manifest_id))?;
        clock.log("uploads finished");
        Ok(Built {
            root,
            depth,
            slots,
            stats: self.stats,
            data_pack_bytes: self.data_packer.bytes_uploaded,
        })
    }

    /// Builds page `index` at `level`; `parent` is the parent tree's id for the same page.
    pub(super) fn build(
        &mut self,
        level: u32,
        index: u64,
        parent: ChunkId,
    ) -> futures::future::BoxFuture<'_, Result<ChunkId>> {
        Box::pin(async move {
            let (start, end) = tree::page_span(level, index, self.slots);
            if !self.bitmap.any_in(start, end) {
                return Ok(if self.inherit { parent } else { ChunkId::ZERO });
            }
            let entries = tree::page_entries(level, index, self.slots);
            let parent_ids = match &self.parent_reader {
                Some(reader) if !parent.is_zero() => reader.page(&parent, entries).await?,
                _ => vec![ChunkId::ZERO; entries],
            };
            let mut ids = Vec::with_capacity(entries);
            for (j, parent_id) in parent_ids.into_iter().enumerate() {
                let id = if level == 0 {
                    let slot = start + j as u64;
                    if self.bitmap.get(slot) {
                        self.take_slot(slot, parent_id).await?
                    } else if self.inherit {
                        parent_id
                    } else {
                        ChunkId::ZERO
                    }
                } else {
                    self.build(level - 1, index * FANOUT + j as u64, parent_id)
                        .await?
                };
                ids.push(id);
            }
            let id = self.store_page(&ids, parent).await?;
            if !id.is_zero() {
                self.new_pages.push((level as u8, index, id));
            }
            Ok(id)
        })
    }

    pub(super) async fn take_slot(&mut self, slot: u64, parent_id: ChunkId) -> Result<ChunkId> {
        let data = self
            .data
            .next()
            .await?
            .ok_or_else(|| Error::Internal(format!("slot {slot} was planned but not read")))?;
        if data.slot != slot {
            return Err(Error::Internal(format!(
                "expected slot {slot}, read slot {}",
                data.slot
            )));
        }
        self.stats.bytes_read += data.bytes.len() as u64;
        self.stats.slots_read += 1;
        if let Some(progress) = &self.progress {
            progress.advance(data.bytes.len() as u64);
        }
        let id = data.id;
        let parent_id = if self.quarantine.contains(&id) {
            ChunkId::ZERO
        } else {
            parent_id
        };
        if id.is_zero() || id == parent_id || self.known.contains(&id) {
            return Ok(id);
        }
        self.stats.chunks_new += 1;
        self.stats.data_bytes_new += data.bytes.len() as u64;
        self.known.insert(id);
        self.data_packer.expect(self.outlook());
        self.data_packer.add(id, data.bytes).await?;
        self.checkpoint().await?;
        Ok(id)
    }

    /// Input read so far and still to read, for the data packer's last packs.
    pub(super) fn outlook(&self) -> Outlook {
        let remaining_slots = self.planned_slots.saturating_sub(self.stats.slots_read);
        Outlook {
            input_seen: self.stats.bytes_read,
            input_remaining: remaining_slots.saturating_mul(self.chunk_size),
        }
    }

    pub(super) async fn store_page(&mut self, ids: &[ChunkId], parent: ChunkId) -> Result<ChunkId> {
        if ids.iter().all(ChunkId::is_zero) {
            return Ok(ChunkId::ZERO);
        }
        let bytes = tree::encode_page(ids);
        let id = self.repo.hasher().hash(&bytes);
        if id == parent || self.known.contains(&id) {
            return Ok(id);
        }
        self.known.insert(id);
        self.tree_packer.add(id, bytes).await?;
        Ok(id)
    }

    /// Every few packs' worth of bytes: an index object for them and a session checkpoint.
    pub(super) async fn checkpoint(&mut self) -> Result<()> {
        let completed = self.data_packer.completed_bytes() + self.tree_packer.completed_bytes();
        if completed < PACKS_PER_INDEX * self.repo.config().pack_size as u64 {
            return Ok(());
        }
        self.write_index().await?;
        self.write_session().await
    }

    /// Takes the packers' finished uploads for the next index object, noting where tree pages
    /// went (for the tree table).
    pub(super) fn collect_completed(&mut self) {
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
        let (key, _) = index::write_index_object(self.repo, &packs).await?;
        self.session.index_objects.push(key);
        Ok(())
    }

    pub(super) async fn write_session(&mut self) -> Result<()> {
        self.session.updated_at = crate::time_util::now_rfc3339();
        self.repo
            .write_record(&self.session_key, &self.session)
            .await?;
        Ok(())
    }

    /// Seals and uploads what is left in both packers and waits for every upload; the last
    /// index object is written by the caller.
    pub(super) async fn finish_packers(&mut self) -> Result<()> {
        self.data_packer.finish().await?;
        self.tree_packer.finish().await?;
        self.collect_completed();
        Ok(())
    }

    /// The new tree's table: the parent's pages in the subtrees this backup inherited, and the
    /// pages it built, each located where this backup uploaded it or, failing that, where the
    /// reader's newest index puts it (after a reload, fresher than the parent's table). A page
    /// located nowhere is left out: the next backup then falls back to the pack index for it.
    pub(super) fn tree_table(&self) -> TreeTable {
        let index = self.parent_reader.as_ref().map(PageReader::index);
        let locate = |id: &ChunkId| -> Option<(ChunkId, u64, u32)> {
            if let Some(found) = self.tree_locations.get(id) {
                return Some(*found);
            }
            let index = index.as_ref()?;
            let location = index.get(id)?;
            Some((
                index.pack_name(location.pack),
                location.offset,
                location.length,
            ))
        };
        let inherited = (self.parent_table.as_ref())
            .filter(|_| self.inherit)
            .into_iter()
            .flat_map(|table| table.pages.iter())
            .filter(|page| {
                let (start, end) = tree::page_span(u32::from(page.level), page.index, self.slots);
                start < end && !self.bitmap.any_in(start, end)
            })
            .map(|page| (page.level, page.index, page.id));
        let pages = inherited
            .chain(self.new_pages.iter().copied())
            .filter_map(|(level, index, id)| {
                let (pack, offset, length) = locate(&id)?;
                Some(TablePage {
                    level,
                    index,
                    id,
                    pack,
                    offset,
                    length,
                })
            })
            .collect();
        TreeTable { pages }
    }
}
