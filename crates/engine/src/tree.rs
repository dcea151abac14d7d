//! The backup tree: pages of up to 128 ids, leaves holding slot ids, the root in the manifest.
//!
//! This module knows the tree's shape (how many levels, which slots a page covers), reads
//! pages through the pack index with a small cache of whole tree packs (reloading the index when
//! a concurrent prune moved a page), and walks a tree leaf by leaf. Building a tree is part of the backup (`backup/build.rs`), which shares its parent's
//! untouched subtrees.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index::{is_not_found, PackIndex, SharedIndex, RELOADS_PER_READ};
use crate::pack::{self, BlobKind};
use crate::repo::Repository;

/// Ids per page.
pub const FANOUT: u64 = 128;
/// Bytes of a full page.
pub const PAGE_BYTES: usize = FANOUT as usize * 32;
const CACHED_TREE_PACKS: usize = 8;

/// The number of levels of the tree of a volume with `slots` slots.
pub fn depth_for(slots: u64) -> u32 {
    let mut pages = slots.div_ceil(FANOUT).max(1);
    let mut depth = 1;
    while pages > 1 {
        pages = pages.div_ceil(FANOUT);
        depth += 1;
    }
    depth
}

/// Slots covered by one entry of a page at `level` (0 = leaf page: one slot per entry).
pub fn slots_per_entry(level: u32) -> u64 {
    FANOUT.saturating_pow(level)
}

/// The slots `start..end` covered by page `index` at `level`.
pub fn page_span(level: u32, index: u64, slots: u64) -> (u64, u64) {
    let per_page = slots_per_entry(level + 1);
    let start = index.saturating_mul(per_page);
    (start.min(slots), start.saturating_add(per_page).min(slots))
}

/// Number of entries in page `index` at `level`.
pub fn page_entries(level: u32, index: u64, slots: u64) -> usize {
    let (start, end) = page_span(level, index, slots);
    (end - start).div_ceil(slots_per_entry(level)) as usize
}

/// Encodes a page's ids.
pub fn encode_page(ids: &[ChunkId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

fn decode_page(bytes: &[u8], expected: usize, id: &ChunkId) -> Result<Vec<ChunkId>> {
    if bytes.len() != expected * 32 {
        return Err(Error::corrupt(format!(
            "tree page {id} holds {} bytes, expected {} ids",
            bytes.len(),
            expected
        )));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|raw| ChunkId::from_slice(raw).unwrap_or_default())
        .collect())
}

/// Reads tree pages, caching whole tree packs.
///
/// When a page's pack is gone (a concurrent prune repacked it) or the page is in no pack of
/// the index, the reader reloads the shared index and looks the page up again (at most
/// [`RELOADS_PER_READ`] times per page). A pack or page still missing after a reload is
/// remembered, so that a damaged repository costs one reload, not one per page.
pub struct PageReader {
    repo: Repository,
    index: SharedIndex,
    /// Whole tree packs by name (pack numbers differ between index generations).
    cache: Mutex<Vec<(ChunkId, Bytes)>>,
    /// Packs and pages found missing even after a reload.
    missing: Mutex<HashSet<ChunkId>>,
}

impl PageReader {
    /// A reader over the repository's packs, starting from `index`.
    pub fn new(repo: Repository, index: Arc<PackIndex>) -> Self {
        let shared = SharedIndex::new(repo.clone(), index);
        Self::shared(repo, shared)
    }

    /// A reader that shares `index` (and its reloads) with other readers.
    pub fn shared(repo: Repository, index: SharedIndex) -> Self {
        PageReader {
            repo,
            index,
            cache: Mutex::new(Vec::new()),
            missing: Mutex::new(HashSet::new()),
        }
    }

    /// The newest pack index this reader knows.
    pub fn index(&self) -> Arc<PackIndex> {
        self.index.current().0
    }

    /// Reads the page `id`, which must hold `entries` ids; a `ZERO` id is a page of zeros.
    pub async fn page(&self, id: &ChunkId, entries: usize) -> Result<Vec<ChunkId>> {
        if id.is_zero() {
            return Ok(vec![ChunkId::ZERO; entries]);
        }
        let (mut index, mut generation) = self.index.current();
        let mut reloads = 0;
        loop {
            let gone = match self.page_from(&index, id, entries).await {
                Ok(result) => return result,
                Err(gone) => gone,
            };
            if reloads == RELOADS_PER_READ || self.known_missing(&gone.what) {
                self.remember_missing(gone.what);
                return Err(gone.error);
            }
            (index, generation) = self.index.reload_after(generation).await?;
            reloads += 1;
            // Unless the reloaded index sends the read elsewhere, the page is missing, not moved.
            let error = match index.get(id) {
                None => Some(not_indexed(id)),
                Some(location) if index.pack_name(location.pack) == gone.what => Some(gone.error),
                Some(_) => None,
            };
            if let Some(error) = error {
                self.remember_missing(gone.what);
                return Err(error);
            }
        }
    }

    /// Reads `id` through `index`; `Err` when its pack or its index entry is missing.
    async fn page_from(
        &self,
        index: &PackIndex,
        id: &ChunkId,
        entries: usize,
    ) -> std::result::Result<Result<Vec<ChunkId>>, Gone> {
        let Some(location) = index.get(id) else {
            return Err(Gone {
                what: *id,
                error: not_indexed(id),
            });
        };
        if location.kind != BlobKind::Tree {
            return Ok(Err(Error::corrupt(format!(
                "{id} is indexed as data, not a tree page"
            ))));
        }
        let name = index.pack_name(location.pack);
        let pack_bytes = match self.tree_pack(&name).await {
            Ok(bytes) => bytes,
            Err(error) if is_not_found(&error) => return Err(Gone { what: name, error }),
            Err(error) => return Ok(Err(error)),
        };
        let start = location.offset as usize;
        let end = start + location.length as usize;
        let Some(sealed) = pack_bytes.get(start..end) else {
            return Ok(Err(Error::corrupt_object(
                &pack::pack_key(&name),
                format!("tree pack {name} is shorter than its index says; run `s3mover verify`"),
            )));
        };
        Ok(pack::decode_blob(
            self.repo.sealer(),
            self.repo.hasher(),
            id,
            sealed,
            PAGE_BYTES,
        )
        .and_then(|plain| decode_page(&plain, entries, id))
        .map_err(|e| e.with_key(&pack::pack_key(&name))))
    }

    /// True when `what` (a pack or a page) was already found missing after a reload.
    fn known_missing(&self, what: &ChunkId) -> bool {
        self.missing
            .lock()
            .map(|m| m.contains(what))
            .unwrap_or(false)
    }

    fn remember_missing(&self, what: ChunkId) {
        if let Ok(mut missing) = self.missing.lock() {
            missing.insert(what);
        }
    }

    async fn tree_pack(&self, name: &ChunkId) -> Result<Bytes> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((_, bytes)) = cache.iter().find(|(n, _)| n == name) {
                return Ok(bytes.clone());
            }
        }
        let key = pack::pack_key(name);
        let bytes = self.repo.store().get(&key).await?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHED_TREE_PACKS {
                cache.remove(0);
            }
            cache.push((*name, bytes.clone()));
        }
        Ok(bytes)
    }
}

fn not_indexed(id: &ChunkId) -> Error {
    Error::missing(format!(
        "tree page {id} is in no pack of the repository index; run `s3mover verify`"
    ))
}

/// A page could not be read because its pack or its index entry is missing: `what` is the
/// pack name or the page id.
struct Gone {
    what: ChunkId,
    error: Error,
}

/// One leaf page's ids and the slot of its first entry.
#[derive(Debug)]
pub struct Leaf {
    /// The slot of the page's first entry.
    pub first_slot: u64,
    /// The page's chunk ids, one per slot ([`ChunkId::ZERO`] for a zero slot).
    pub ids: Vec<ChunkId>,
}

/// Walks a tree in slot order, sending every non-zero leaf page to `out`; zero subtrees are
/// skipped without being read. Stops early (without error) when the receiver is dropped.
pub async fn walk_leaves(
    reader: &PageReader,
    root: ChunkId,
    depth: u32,
    slots: u64,
    out: mpsc::Sender<Leaf>,
) -> Result<()> {
    walk(reader, root, depth - 1, 0, slots, &out)
        .await
        .map(|_| ())
}

fn walk<'a>(
    reader: &'a PageReader,
    id: ChunkId,
    level: u32,
    index: u64,
    slots: u64,
    out: &'a mpsc::Sender<Leaf>,
) -> futures::future::BoxFuture<'a, Result<bool>> {
    Box::pin(async move {
        if id.is_zero() {
            return Ok(true);
        }
        let entries = page_entries(level, index, slots);
        let ids = reader.page(&id, entries).await?;
        if level == 0 {
            let (first_slot, _) = page_span(0, index, slots);
            return Ok(out.send(Leaf { first_slot, ids }).await.is_ok());
        }
        for (j, child) in ids.into_iter().enumerate() {
            if !walk(
                reader,
                child,
                level - 1,
                index * FANOUT + j as u64,
                slots,
                out,
            )
            .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_shape() {
        assert_eq!(depth_for(1), 1);
        assert_eq!(depth_for(128), 1);
        assert_eq!(depth_for(129), 2);
        assert_eq!(depth_for(128 * 128), 2);
        assert_eq!(depth_for(128 * 128 + 1), 3);
        // 1 TiB at 64 KiB: 16 Mi slots -> 4 levels.
        assert_eq!(depth_for(1 << 24), 4);
        assert_eq!(page_entries(0, 0, 300), 128);
        assert_eq!(page_entries(0, 2, 300), 44);
        assert_eq!(page_entries(1, 0, 300), 3);
        assert_eq!(page_span(1, 0, 300), (0, 300));
        assert_eq!(page_span(0, 2, 300), (256, 300));
    }
}
