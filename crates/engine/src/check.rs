//! `check`: fast validation of all metadata without reading chunk data. Every manifest opens,
//! every index object decodes, every tree page is indexed and decodes, every chunk id a tree
//! names is indexed, every indexed pack exists and is long enough for its blobs, and every
//! backup's tree table (if it has one) opens and lists only pages of its tree, and every tree
//! pack's own header opens. Costs one listing of `packs/`, the index objects, the manifests,
//! the tree tables and the tree packs (and their headers).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index::PackIndex;
use crate::pack;
use crate::repo::Repository;
use crate::tree::{self, Leaf, PageReader};

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// Backups read.
    pub backups: usize,
    /// Index objects read.
    pub index_objects: usize,
    /// Packs in the store.
    pub packs: usize,
    /// Blobs the pack index holds.
    pub blobs_indexed: usize,
    /// Chunk references found walking the backups' trees.
    pub chunks_referenced: u64,
    /// Backups with a tree table.
    pub tree_tables: usize,
    /// One line per problem.
    pub problems: Vec<String>,
}

/// Checks the repository's metadata.
pub async fn check(repo: &Repository) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let index = match PackIndex::load(repo).await {
        Ok(index) => Arc::new(index),
        Err(e) => {
            report
                .problems
                .push(format!("the index cannot be loaded: {e}"));
            return Ok(report);
        }
    };
    for (_, reason) in &index.damaged {
        report.problems.push(format!(
            "damaged index object: {reason}; {}",
            crate::index::DAMAGED_INDEX_ADVICE
        ));
    }
    report.index_objects = index.objects.len();
    report.blobs_indexed = index.len();

    // Indexed packs exist and are long enough.
    let listed: HashMap<ChunkId, u64> = crate::index::list_packs(repo).await?.into_iter().collect();
    report.packs = listed.len();
    let mut needed: HashMap<u32, u64> = HashMap::new();
    for (_, loc) in index.iter() {
        let end = loc.offset + u64::from(loc.length);
        let slot = needed.entry(loc.pack).or_default();
        *slot = (*slot).max(end);
    }
    let mut pack_problems: Vec<String> = Vec::new();
    for (pack_no, end) in &needed {
        let name = index.pack_name(*pack_no);
        match listed.get(&name) {
            None => pack_problems.push(format!(
                "pack {} is indexed but does not exist",
                pack::pack_key(&name)
            )),
            Some(size) if size < end => pack_problems.push(format!(
                "pack {} is {size} bytes but the index places blobs up to byte {end}",
                pack::pack_key(&name)
            )),
            Some(_) => {}
        }
    }
    // Tree packs are read to walk the trees anyway; their headers, which prune reads when it
    // repacks them, must open too.
    let tree_packs: std::collections::BTreeSet<ChunkId> = index
        .iter()
        .filter(|(_, loc)| loc.kind == pack::BlobKind::Tree)
        .map(|(_, loc)| index.pack_name(loc.pack))
        .filter(|name| listed.contains_key(name))
        .collect();
    for name in tree_packs {
        let key = pack::pack_key(&name);
        let size = listed.get(&name).copied();
        if let crate::verify::HeaderCheck::Damaged(detail) =
            crate::verify::check_pack_header(repo, &key, size, &[]).await?
        {
            pack_problems.push(detail);
        }
    }
    pack_problems.sort();
    report.problems.extend(pack_problems);

    check_gc_objects(repo, &mut report).await?;

    // Manifests and their trees.
    let ids = repo.list_backup_ids().await?;
    report.backups = ids.len();
    let reader = PageReader::new(repo.clone(), Arc::clone(&index));
    for id in ids {
        let manifest = match repo.read_manifest(&id).await {
            Ok(m) => m,
            Err(Error::NoSuchBackup(_)) => continue,
            Err(e) => {
                report.problems.push(format!(
                    "backup {id}: {e}; `s3mover forget {id}` removes the backup"
                ));
                continue;
            }
        };
        let Some(root) = ChunkId::from_hex(&manifest.root) else {
            report
                .problems
                .push(format!("backup {id}: the root is not a valid id"));
            continue;
        };
        check_tree_table(repo, &reader, &manifest, &mut report).await?;
        let (tx, mut rx) = mpsc::channel::<Leaf>(8);
        let walk = tree::walk_leaves(&reader, root, manifest.depth, manifest.slots, tx);
        let mut unindexed = 0u64;
        let mut first_unindexed = None;
        let mut referenced = 0u64;
        let consume = async {
            while let Some(leaf) = rx.recv().await {
                for chunk in leaf.ids.iter().filter(|c| !c.is_zero()) {
                    referenced += 1;
                    if !index.contains(chunk) {
                        unindexed += 1;
                        first_unindexed.get_or_insert(*chunk);
                    }
                }
            }
        };
        let (walked, ()) = tokio::join!(walk, consume);
        report.chunks_referenced += referenced;
        if let Err(e) = walked {
            report.problems.push(format!("backup {id}: tree: {e}"));
        }
        if let Some(first) = first_unindexed {
            report.problems.push(format!(
                "backup {id}: {unindexed} chunks are in no indexed pack (for example {first})"
            ));
        }
    }
    Ok(report)
}

/// A backup's tree table opens, and each of its pages is a page of the backup's tree: its id
/// is where the table says in the tree. Locations are not checked: a prune running beside a
/// backup can leave a stale one, which only sends the next incremental to the pack index.
async fn check_tree_table(
    repo: &Repository,
    reader: &PageReader,
    manifest: &crate::manifest::Manifest,
    report: &mut CheckReport,
) -> Result<()> {
    let table = match crate::tree_table::TreeTable::read(repo, &manifest.id).await {
        Ok(Some(table)) => table,
        Ok(None) => return Ok(()),
        Err(Error::Corrupt { reason, .. }) => {
            report.problems.push(format!(
                "backup {}: its tree table is damaged ({reason}); the next incremental of the \
                 volume reads the pack index instead",
                manifest.id
            ));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    report.tree_tables += 1;
    let Some(root) = ChunkId::from_hex(&manifest.root) else {
        return Ok(());
    };
    // A tree that cannot be read is reported by the walk of its leaves.
    let Ok(positions) = page_ids_by_position(reader, root, manifest).await else {
        return Ok(());
    };
    let misplaced = table
        .pages
        .iter()
        .find(|p| positions.get(&(u32::from(p.level), p.index)) != Some(&p.id));
    if let Some(page) = misplaced {
        report.problems.push(format!(
            "backup {}: its tree table puts page {} at level {} index {}, where the tree has \
             another page",
            manifest.id, page.id, page.level, page.index
        ));
    }
    Ok(())
}

/// The id of every non-zero page of a backup's tree by (level, index), from reading the pages
/// above the leaves (about 1/128 of the tree).
async fn page_ids_by_position(
    reader: &PageReader,
    root: ChunkId,
    manifest: &crate::manifest::Manifest,
) -> Result<HashMap<(u32, u64), ChunkId>> {
    let top = manifest.depth.saturating_sub(1);
    let mut positions = HashMap::new();
    if root.is_zero() {
        return Ok(positions);
    }
    positions.insert((top, 0), root);
    let mut frontier = vec![(0u64, root)];
    for level in (1..=top).rev() {
        let mut next = Vec::new();
        for (index, id) in frontier {
            let entries = tree::page_entries(level, index, manifest.slots);
            for (j, child) in reader.page(&id, entries).await?.into_iter().enumerate() {
                if !child.is_zero() {
                    let child_index = index * tree::FANOUT + j as u64;
                    positions.insert((level - 1, child_index), child);
                    next.push((child_index, child));
                }
            }
        }
        frontier = next;
    }
    Ok(positions)
}

/// The objects a backup's post-commit check reads: the marker directory, the deletion markers
/// and the removed or pending sets they name. A damaged one makes backups list `gc/deleting/`
/// (the directory) or withdraw (the others) until `prune` rewrites it.
async fn check_gc_objects(repo: &Repository, report: &mut CheckReport) -> Result<()> {
    const WAY_OUT: &str = "`s3mover prune` rewrites it";
    if let Err(Error::Corrupt { reason, .. }) = crate::gc::read_marker_directory(repo).await {
        report.problems.push(format!(
            "{reason} (backups list gc/deleting/ instead; {WAY_OUT})"
        ));
    }
    for object in repo.store().list("gc/deleting/").await? {
        let marker = match crate::gc::DeletionMarker::read(repo, &object.key).await {
            Ok(Some(marker)) => marker,
            Ok(None) => continue,
            Err(Error::Corrupt { reason, .. }) => {
                report.problems.push(format!(
                    "deletion marker {reason} (backups that overlap it are withdrawn; {WAY_OUT})"
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        let sets = marker.removed.iter().chain(marker.pending.iter());
        for key in sets {
            match crate::gc::PendingSet::read(repo, key).await {
                Ok(_) => {}
                Err(Error::Store(e)) if e.is_not_found() => {}
                Err(Error::Corrupt { reason, .. }) => report.problems.push(format!(
                    "{reason}, named by deletion marker {} (backups that started before that \
                     sweep finished are withdrawn; later ones do not read it)",
                    object.key
                )),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
