//! Marking: every chunk and tree page reachable from a backup's tree or listed by a fresh
//! session goes into a [`PrefixSet`]. Tree pages are found through a [`TreeLocator`] built from
//! the index objects (tree pages only: data chunks are never looked up), read through a small
//! cache of tree packs.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::idset::{PrefixSet, PrefixSetBuilder};
use super::listing::{list_keys, Listing};
use crate::error::{Error, Result};
use crate::gc;
use crate::id::ChunkId;
use crate::index;
use crate::layout;
use crate::layout::session::SessionRecord;
use crate::manifest::Manifest;
use crate::pack::{self, BlobKind, PackEntry};
use crate::repo::Repository;
use crate::tree;

/// Tree packs kept in memory while marking (4 MiB each): a tree's pages sit in few packs,
/// and the pages of one level are visited together.
const CACHED_TREE_PACKS: usize = 16;
/// Manifests read at once.
const PARALLEL_MANIFEST_READS: usize = 16;

/// Which index objects (by their position in the listing) name each pack (by number).
pub(super) type ObjectsOfPack = HashMap<u32, Vec<u32>>;

/// Tree-page locations, sorted by id (tree pages only: data chunks are never looked up), and
/// the number prune gives each pack.
#[derive(Default)]
pub(super) struct TreeLocator {
    pub(super) pack_names: Vec<ChunkId>,
    pub(super) pack_numbers: HashMap<ChunkId, u32>,
    pages: Vec<(ChunkId, u32, u64, u32)>,
    sorted: bool,
    loaded_objects: HashSet<String>,
}

impl TreeLocator {
    /// Reads every listed index object once: tree-page locations, and which index objects
    /// name which packs.
    pub(super) async fn read(
        repo: &Repository,
        listing: &Listing,
    ) -> Result<(TreeLocator, ObjectsOfPack)> {
        let mut locator = TreeLocator::default();
        let mut objects_of_pack = ObjectsOfPack::new();
        for (object_no, key) in listing.index.iter().enumerate() {
            index::read_index_entries(repo, key, |name, entry| {
                let n = locator.pack_number(name);
                locator.add(n, &entry);
                let objects = objects_of_pack.entry(n).or_default();
                if objects.last() != Some(&(object_no as u32)) {
                    objects.push(object_no as u32);
                }
            })
            .await?;
            locator.loaded_objects.insert(key.clone());
        }
        locator.finish();
        Ok((locator, objects_of_pack))
    }

    /// The number of pack `name`, given now if it has none yet.
    pub(super) fn pack_number(&mut self, name: &ChunkId) -> u32 {
        if let Some(n) = self.pack_numbers.get(name) {
            return *n;
        }
        let n = self.pack_names.len() as u32;
        self.pack_names.push(*name);
        self.pack_numbers.insert(*name, n);
        n
    }

    fn add(&mut self, pack: u32, entry: &PackEntry) {
        if entry.kind == BlobKind::Tree {
            self.pages
                .push((entry.id, pack, entry.offset, entry.length));
            self.sorted = false;
        }
    }

    fn finish(&mut self) {
        if !self.sorted {
            self.pages.sort_unstable_by_key(|a| a.0);
            self.pages.dedup_by(|a, b| a.0 == b.0);
            self.sorted = true;
        }
    }

    fn find(&self, id: &ChunkId) -> Option<(u32, u64, u32)> {
        self.pages
            .binary_search_by(|p| p.0.cmp(id))
            .ok()
            .map(|i| (self.pages[i].1, self.pages[i].2, self.pages[i].3))
    }
}

/// Walks trees and collects the prefixes of every id reachable from them.
pub(super) struct Marker<'a> {
    repo: &'a Repository,
    pub(super) locator: TreeLocator,
    cache: Vec<(u32, Bytes)>,
    visited: HashSet<ChunkId>,
    marks: PrefixSetBuilder,
}

/// What the first marking found: the marks, and the backups they come from.
pub(super) struct Marked {
    pub(super) marks: PrefixSet,
    pub(super) backups: Vec<String>,
}

impl<'a> Marker<'a> {
    pub(super) fn new(repo: &'a Repository, locator: TreeLocator) -> Self {
        Marker {
            repo,
            locator,
            cache: Vec::new(),
            visited: HashSet::new(),
            marks: PrefixSetBuilder::new(),
        }
    }

    /// Marks from every listed backup and from the sessions updated within `protect_seconds`.
    /// A backup whose tree cannot be read stops the run: its references are unknown.
    pub(super) async fn mark_listed(
        &mut self,
        listing: &Listing,
        protect_seconds: i64,
    ) -> Result<Marked> {
        let manifests = read_manifests(self.repo, &listing.backups).await?;
        let backups: Vec<String> = manifests.iter().map(|m| m.id.clone()).collect();
        for manifest in &manifests {
            self.mark_backup(manifest)
                .await
                .map_err(|e| Error::Corrupt {
                    key: e.object_key().map(str::to_string),
                    reason: format!(
                        "cannot read the tree of backup {} ({e}); prune deletes nothing while a \
                     backup's references are unknown — run `s3mover verify {}` and forget it if \
                     it is damaged",
                        manifest.id, manifest.id
                    ),
                })?;
        }
        drop(manifests);
        self.mark_sessions(&listing.sessions, protect_seconds)
            .await?;
        Ok(Marked {
            marks: self.take_marks(),
            backups,
        })
    }

    /// Marks anew, from nothing, from the backups `ids` (a manifest gone meanwhile is
    /// skipped) and from the `sessions` updated within `protect_seconds`.
    pub(super) async fn mark_again(
        &mut self,
        ids: &[String],
        sessions: &[String],
        protect_seconds: i64,
    ) -> Result<PrefixSet> {
        self.visited.clear();
        let result = async {
            for manifest in read_manifests(self.repo, ids).await? {
                self.mark_backup(&manifest).await?;
            }
            self.mark_sessions(sessions, protect_seconds).await
        }
        .await;
        let fresh = self.take_marks();
        result.map(|()| fresh)
    }

    fn push(&mut self, id: &ChunkId) {
        self.marks.insert(gc::prefix(id));
    }

    /// The set of everything marked so far; marking starts again from nothing, with no tree
    /// page visited and no tree pack cached (up to 16 packs of 4 MiB, not needed until the
    /// sweep marks again).
    fn take_marks(&mut self) -> PrefixSet {
        self.visited = HashSet::new();
        self.cache = Vec::new();
        std::mem::take(&mut self.marks).build()
    }

    /// Loads tree locations from index objects not loaded yet (after a page was not found).
    async fn load_new_index_objects(&mut self) -> Result<bool> {
        let keys: Vec<String> = list_keys(self.repo, layout::INDEX)
            .await?
            .into_iter()
            .filter(|k| !self.locator.loaded_objects.contains(k))
            .collect();
        if keys.is_empty() {
            return Ok(false);
        }
        for key in keys {
            let locator = &mut self.locator;
            let read = index::read_index_entries(self.repo, &key, |name, entry| {
                let n = locator.pack_number(name);
                locator.add(n, &entry);
            })
            .await;
            match read {
                Ok(()) => {}
                Err(Error::Store(e)) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            self.locator.loaded_objects.insert(key);
        }
        self.locator.finish();
        Ok(true)
    }

    /// The sealed bytes of tree pack `pack_no`, from the cache or the store.
    async fn tree_pack(&mut self, pack_no: u32) -> Result<Bytes> {
        if let Some((_, bytes)) = self.cache.iter().find(|(n, _)| *n == pack_no) {
            return Ok(bytes.clone());
        }
        let key = pack::pack_key(&self.locator.pack_names[pack_no as usize]);
        let bytes = self.repo.store().get(&key).await?;
        if self.cache.len() >= CACHED_TREE_PACKS {
            self.cache.remove(0);
        }
        self.cache.push((pack_no, bytes.clone()));
        Ok(bytes)
    }

    async fn page(&mut self, id: &ChunkId, entries: usize) -> Result<Vec<ChunkId>> {
        let mut location = self.locator.find(id);
        if location.is_none() && self.load_new_index_objects().await? {
            location = self.locator.find(id);
        }
        let (pack_no, offset, length) = location.ok_or_else(|| {
            Error::missing(format!(
                "tree page {id} is in no pack of the repository index"
            ))
        })?;
        let bytes = self.tree_pack(pack_no).await?;
        let start = offset as usize;
        let sealed = bytes
            .get(start..start + length as usize)
            .ok_or_else(|| Error::corrupt(format!("tree pack holding page {id} is truncated")))?;
        let plain = pack::decode_blob(
            self.repo.sealer(),
            self.repo.hasher(),
            id,
            sealed,
            tree::PAGE_BYTES,
        )?;
        if plain.len() != entries * 32 {
            return Err(Error::corrupt(format!(
                "tree page {id} holds {} bytes, expected {entries} ids",
                plain.len()
            )));
        }
        Ok(plain
            .chunks_exact(32)
            .map(|raw| ChunkId::from_slice(raw).unwrap_or_default())
            .collect())
    }

    /// Marks every page and chunk of a backup's tree; shared subtrees are walked once.
    async fn mark_backup(&mut self, manifest: &Manifest) -> Result<()> {
        let root = ChunkId::from_hex(&manifest.root)
            .ok_or_else(|| Error::corrupt(format!("backup {} has an invalid root", manifest.id)))?;
        let mut stack = vec![(root, manifest.depth.saturating_sub(1), 0u64)];
        while let Some((id, level, index_no)) = stack.pop() {
            if id.is_zero() || !self.visited.insert(id) {
                continue;
            }
            self.push(&id);
            let entries = tree::page_entries(level, index_no, manifest.slots);
            let ids = self.page(&id, entries).await?;
            for (j, child) in ids.iter().enumerate() {
                if child.is_zero() {
                    continue;
                }
                if level == 0 {
                    self.push(child);
                } else {
                    stack.push((*child, level - 1, index_no * tree::FANOUT + j as u64));
                }
            }
        }
        Ok(())
    }

    /// Marks every blob listed by the index objects of sessions updated within
    /// `protect_seconds`.
    async fn mark_sessions(&mut self, sessions: &[String], protect_seconds: i64) -> Result<()> {
        let now = gc::now_unix();
        for key in sessions {
            let session = match self.repo.read_record::<SessionRecord>(key).await {
                Ok(Some(session)) => session,
                Ok(None) => continue,
                Err(Error::Store(e)) => return Err(e.into()),
                Err(_) => continue,
            };
            let fresh = session
                .age_seconds(now)
                .is_some_and(|age| age < protect_seconds);
            if !fresh {
                continue;
            }
            for object in &session.index_objects {
                let marks = &mut self.marks;
                let read = index::read_index_entries(self.repo, object, |_, e| {
                    marks.insert(gc::prefix(&e.id));
                })
                .await;
                match read {
                    Ok(()) => {}
                    Err(Error::Store(e)) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// Reads manifests; a manifest deleted since it was listed is skipped.
async fn read_manifests(repo: &Repository, ids: &[String]) -> Result<Vec<Manifest>> {
    let found: Vec<Option<Manifest>> = futures::stream::iter(ids.to_vec())
        .map(|id| async move {
            match repo.read_manifest(&id).await {
                Ok(m) => Ok(Some(m)),
                Err(Error::NoSuchBackup(_)) => Ok(None),
                // Its data cannot be marked: deleting anything could take what it uses.
                Err(Error::Corrupt { reason: problem, key }) => Err(Error::Corrupt {
                    key,
                    reason: format!(
                        "{problem}; prune cannot tell which data that backup uses and deletes nothing: remove it with `s3mover forget {id}` and prune again"
                    ),
                }),
                Err(e) => Err(e),
            }
        })
        .buffered(PARALLEL_MANIFEST_READS)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}
