//! Verifying backups: every referenced chunk and tree page is indexed and its pack is present
//! and long enough; with data reading, every blob is fetched, opened and hash-checked. Each
//! problem names the chunk and every backup and volume offset that uses it.
//!
//! Verification heals: a bad chunk is quarantined (`quarantine.rs`) so the next backup of a
//! volume that holds it uploads it again, the bad copy's index entry is dropped so readers never
//! pick it, and every backup using it is recorded as failed so it is never an incremental's base.
//! `--read-data-subset` reads a rotating share of the packs (a percentage, or a byte budget) so
//! that a daily job covers the repository over time.
//!
//! A prune may repack and delete packs while verify runs. A pack found missing makes verify
//! reload the index (`SharedIndex`) and check the blobs where the reloaded index puts them:
//! only a pack still missing after the reload is reported.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures::stream::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index::{PackIndex, SharedIndex};
use crate::manifest::Manifest;
use crate::pack;
use crate::repo::Repository;
use crate::tree::{self, Leaf, PageReader};

/// How much data to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// Metadata only: presence and sizes.
    None,
    /// Every referenced blob.
    All,
    /// A fraction (0..=1) of the packs, rotating by day so that daily runs cover everything.
    Subset(f64),
    /// About this many bytes of blobs, taken from the same daily rotation.
    Bytes(u64),
}

/// One backup and volume offset that uses a bad chunk.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkUse {
    /// The backup.
    pub backup: String,
    /// Its volume.
    pub volume: String,
    /// The byte offset in the volume.
    pub offset: u64,
}

/// A chunk or tree page that is missing or damaged.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The chunk or tree page id, hex (empty for a damaged index object).
    pub chunk: String,
    /// `missing` or `corrupt`.
    pub kind: String,
    /// What is wrong.
    pub detail: String,
    /// Backups (and offsets) that use it.
    pub uses: Vec<ChunkUse>,
}

/// A problem for each damaged index object of `index`.
fn damaged_index_problems(index: &PackIndex) -> Vec<Problem> {
    index
        .damaged
        .iter()
        .map(|(_, reason)| Problem {
            chunk: String::new(),
            kind: "corrupt".into(),
            detail: format!(
                "damaged index object: {reason}; {}",
                crate::index::DAMAGED_INDEX_ADVICE
            ),
            uses: Vec::new(),
        })
        .collect()
}

/// The result of a verify run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Backups checked.
    pub backups_checked: usize,
    /// Distinct chunks and pages the backups reference.
    pub chunks_checked: u64,
    /// Chunks read and checked against their ids.
    pub chunks_read: u64,
    /// Bytes read from the store.
    pub bytes_read: u64,
    /// Packs read.
    pub packs_read: u64,
    /// The chunks and pages that are missing or damaged.
    pub problems: Vec<Problem>,
    /// Chunks newly quarantined by this run.
    pub quarantined_chunks: usize,
    /// Backups recorded as failed (never used as a base again).
    pub failed_backups: Vec<String>,
    /// Index objects rewritten to drop bad copies.
    pub index_objects_rewritten: usize,
    /// Quarantine records removed because the chunk or backup now verifies.
    pub healed: usize,
}

/// Verifies the given backups.
pub async fn verify(
    repo: &Repository,
    backups: &[Manifest],
    read_data: ReadData,
) -> Result<VerifyReport> {
    let shared = SharedIndex::load(repo).await?;
    verify_from(repo, backups, read_data, shared).await
}

/// [`verify`] starting from an index loaded earlier (which a prune may have made stale since),
/// so that tests can run a prune between loading the index and checking packs.
#[doc(hidden)]
pub async fn verify_with_index(
    repo: &Repository,
    backups: &[Manifest],
    read_data: ReadData,
    index: std::sync::Arc<PackIndex>,
) -> Result<VerifyReport> {
    let shared = SharedIndex::new(repo.clone(), index);
    verify_from(repo, backups, read_data, shared).await
}

async fn verify_from(
    repo: &Repository,
    backups: &[Manifest],
    read_data: ReadData,
    shared: SharedIndex,
) -> Result<VerifyReport> {
    let reader = PageReader::shared(repo.clone(), shared.clone());
    let mut bad: BTreeMap<ChunkId, (String, String)> = BTreeMap::new();
    let mut referenced: HashSet<ChunkId> = HashSet::new();
    let mut tree_problems = Vec::new();

    for manifest in backups {
        let root = ChunkId::from_hex(&manifest.root).unwrap_or_default();
        let result = collect_leaf_ids(&reader, manifest, root, |_, id| {
            referenced.insert(id);
        })
        .await;
        if let Err(e) = result {
            tree_problems.push(Problem {
                chunk: String::new(),
                kind: if matches!(e, Error::Missing { .. }) {
                    "missing"
                } else {
                    "corrupt"
                }
                .into(),
                detail: format!("tree of backup {}: {e}", manifest.id),
                uses: vec![ChunkUse {
                    backup: manifest.id.clone(),
                    volume: manifest.volume.clone(),
                    offset: 0,
                }],
            });
        }
    }

    // Presence: indexed, pack exists and is long enough. Packs go by name: a reload renumbers
    // them.
    let (index, generation) = shared.current();
    let mut by_pack: HashMap<ChunkId, Vec<(ChunkId, u64, u32)>> = HashMap::new();
    locate(&index, referenced.iter().copied(), &mut by_pack, &mut bad);
    let mut sizes = pack_sizes(repo, by_pack.keys().copied().collect()).await?;
    let gone: Vec<ChunkId> = sizes
        .iter()
        .filter(|(_, size)| size.is_none())
        .map(|(name, _)| *name)
        .collect();
    let generation = if gone.is_empty() {
        generation
    } else {
        // A concurrent prune may have moved their blobs: look them up again.
        let (fresh, fresh_generation) = shared.reload_after(generation).await?;
        let moved = regroup(&fresh, &gone, &mut by_pack, &mut sizes, &mut bad);
        let unsized_packs = moved
            .into_iter()
            .filter(|name| !sizes.contains_key(name))
            .collect();
        sizes.extend(pack_sizes(repo, unsized_packs).await?);
        fresh_generation
    };
    for (name, size) in &sizes {
        let Some(blobs) = by_pack.get(name) else {
            continue;
        };
        for (id, offset, length) in blobs {
            match size {
                None => {
                    bad.insert(
                        *id,
                        ("missing".into(), format!("pack {name} does not exist")),
                    );
                }
                Some(size) if *size < offset + u64::from(*length) => {
                    bad.insert(
                        *id,
                        (
                            "corrupt".into(),
                            format!("pack {name} is truncated to {size} bytes"),
                        ),
                    );
                }
                Some(_) => {}
            }
        }
    }

    let mut chunks_read = 0;
    let mut bytes_read = 0;
    let mut packs_read = 0;
    let mut read_ids: HashSet<ChunkId> = HashSet::new();
    // Packs whose own header does not open: prune reads headers to repack.
    let mut damaged_headers: Vec<(ChunkId, String)> = Vec::new();
    if read_data != ReadData::None {
        let chosen: Vec<ChunkId> = match read_data {
            ReadData::Bytes(budget) => {
                let mut order: Vec<(f64, ChunkId)> =
                    by_pack.keys().map(|n| (rotation_position(n), *n)).collect();
                order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let mut taken = 0u64;
                let mut chosen = Vec::new();
                for (_, n) in order {
                    if taken >= budget {
                        break;
                    }
                    taken += by_pack[&n].iter().map(|b| u64::from(b.2)).sum::<u64>();
                    chosen.push(n);
                }
                chosen
            }
            _ => by_pack
                .keys()
                .copied()
                .filter(|n| pack_selected(n, read_data))
                .collect(),
        };
        let max_chunk = backups.iter().map(|m| m.chunk_size).max().unwrap_or(0) as usize;
        let mut outcomes = read_packs(repo, &by_pack, &sizes, chosen, &bad, max_chunk).await?;
        let gone: Vec<ChunkId> = outcomes
            .iter()
            .filter(|(_, outcome)| outcome.is_none())
            .map(|(name, _)| *name)
            .collect();
        if !gone.is_empty() {
            // Deleted since the presence check: read the blobs where the reloaded index says.
            let (fresh, _) = shared.reload_after(generation).await?;
            let mut no_sizes = HashMap::new();
            let moved = regroup(&fresh, &gone, &mut by_pack, &mut no_sizes, &mut bad);
            outcomes.extend(read_packs(repo, &by_pack, &no_sizes, moved, &bad, max_chunk).await?);
        }
        // Tree packs: their pages were read and checked walking the trees; their headers,
        // which prune reads when it repacks them, are checked here.
        let tree_packs: BTreeSet<ChunkId> = {
            let (index, _) = shared.current();
            index
                .iter()
                .filter(|(_, loc)| loc.kind == pack::BlobKind::Tree)
                .map(|(_, loc)| index.pack_name(loc.pack))
                .filter(|n| !by_pack.contains_key(n) && pack_selected(n, read_data))
                .collect()
        };
        let tree_outcomes: Vec<Option<(ChunkId, String)>> = futures::stream::iter(tree_packs)
            .map(|name| async move {
                let key = pack::pack_key(&name);
                Ok::<_, Error>(match check_pack_header(repo, &key, None, &[]).await? {
                    HeaderCheck::Damaged(detail) => Some((name, detail)),
                    HeaderCheck::Sound | HeaderCheck::Gone => None,
                })
            })
            .buffer_unordered(4)
            .try_collect()
            .await?;
        damaged_headers.extend(tree_outcomes.into_iter().flatten());
        for (name, outcome) in outcomes {
            let Some(PackReadOutcome {
                blobs: n,
                bytes: b,
                failures,
                header,
            }) = outcome
            else {
                if let Some(blobs) = by_pack.get(&name) {
                    for (id, _, _) in blobs {
                        bad.entry(*id).or_insert_with(|| {
                            ("missing".into(), format!("pack {name} does not exist"))
                        });
                    }
                }
                continue;
            };
            chunks_read += n;
            bytes_read += b;
            packs_read += 1;
            if let Some(blobs) = by_pack.get(&name) {
                read_ids.extend(blobs.iter().map(|b| b.0));
            }
            for (id, detail) in failures {
                bad.insert(id, ("corrupt".into(), detail));
            }
            if let Some(detail) = header {
                damaged_headers.push((name, detail));
            }
        }
    }

    // Chunks whose data was read and found good (for healing quarantine records).
    let read_ok: HashSet<ChunkId> = read_ids
        .into_iter()
        .filter(|id| !bad.contains_key(id))
        .collect();
    // The copy checked: in the pack where the index that verify used placed it.
    let bad_copies: HashSet<(ChunkId, ChunkId)> = by_pack
        .iter()
        .flat_map(|(name, blobs)| blobs.iter().map(move |b| (*name, b.0)))
        .filter(|(_, id)| bad.contains_key(id))
        .collect();
    let mut problems = tree_problems;
    damaged_headers.sort();
    for (name, detail) in damaged_headers {
        crate::quarantine::record_damaged_pack(repo, &name).await?;
        problems.push(Problem {
            chunk: String::new(),
            kind: "corrupt".into(),
            detail,
            uses: Vec::new(),
        });
    }
    if !bad.is_empty() {
        let mut uses: HashMap<ChunkId, Vec<ChunkUse>> = HashMap::new();
        for manifest in backups {
            let root = ChunkId::from_hex(&manifest.root).unwrap_or_default();
            let _ = collect_leaf_ids(&reader, manifest, root, |slot, id| {
                if bad.contains_key(&id) {
                    uses.entry(id).or_default().push(ChunkUse {
                        backup: manifest.id.clone(),
                        volume: manifest.volume.clone(),
                        offset: slot * manifest.chunk_size,
                    });
                }
            })
            .await;
        }
        for (id, (kind, detail)) in bad {
            problems.push(Problem {
                chunk: id.to_hex(),
                kind,
                detail,
                uses: uses.remove(&id).unwrap_or_default(),
            });
        }
    }
    let heal = heal(repo, backups, read_data, &problems, &bad_copies, &read_ok).await?;
    problems.extend(damaged_index_problems(&shared.current().0));
    Ok(VerifyReport {
        backups_checked: backups.len(),
        chunks_checked: referenced.len() as u64,
        chunks_read,
        bytes_read,
        packs_read,
        problems,
        quarantined_chunks: heal.0,
        failed_backups: heal.1,
        index_objects_rewritten: heal.2,
        healed: heal.3,
    })
}

/// Volume records younger than this stay even when nothing is quarantined (see
/// [`crate::quarantine::clear_volume_records`]).
const VOLUME_RECORD_MIN_AGE_SECONDS: i64 = 24 * 3600;

/// Quarantines what failed, records the backups that use it, drops bad index entries, and
/// clears records of chunks and backups that now verify.
async fn heal(
    repo: &Repository,
    backups: &[Manifest],
    read_data: ReadData,
    problems: &[Problem],
    bad_copies: &HashSet<(ChunkId, ChunkId)>,
    read_ok: &HashSet<ChunkId>,
) -> Result<(usize, Vec<String>, usize, usize)> {
    let mut quarantined = 0;
    let mut failed: Vec<String> = Vec::new();
    let pack_of: HashMap<ChunkId, ChunkId> = bad_copies.iter().map(|(p, c)| (*c, *p)).collect();
    // The affected volumes are recorded first: a backup reads its volume's record to learn
    // whether to look for quarantined chunks at all.
    let volume_of: HashMap<&str, &str> = backups
        .iter()
        .map(|m| (m.id.as_str(), m.volume.as_str()))
        .collect();
    let affected: BTreeSet<&str> = problems
        .iter()
        .flat_map(|p| p.uses.iter())
        .filter_map(|u| volume_of.get(u.backup.as_str()).copied())
        .collect();
    for volume in affected {
        crate::quarantine::record_volume(repo, volume).await?;
    }
    for problem in problems {
        if let Some(id) = ChunkId::from_hex(&problem.chunk) {
            crate::quarantine::record_chunk(
                repo,
                &id,
                pack_of.get(&id),
                &format!("{}: {}", problem.kind, problem.detail),
            )
            .await?;
            quarantined += 1;
        }
        for u in &problem.uses {
            if !failed.contains(&u.backup) {
                failed.push(u.backup.clone());
            }
        }
    }
    for id in &failed {
        crate::quarantine::record_backup(repo, id, "its data failed verification").await?;
    }
    let rewritten = crate::quarantine::drop_index_entries(repo, bad_copies).await?;
    let mut healed = 0;
    let current = crate::quarantine::Quarantine::load(repo).await?;
    for id in read_ok {
        if current.contains(id) && !pack_of.contains_key(id) {
            crate::quarantine::clear_chunk(repo, id).await?;
            healed += 1;
        }
    }
    if problems.is_empty() && current.len() == healed {
        crate::quarantine::clear_volume_records(repo, VOLUME_RECORD_MIN_AGE_SECONDS).await?;
    }
    if read_data == ReadData::All {
        let recorded = crate::quarantine::failed_backups(repo).await?;
        for manifest in backups {
            if recorded.contains(&manifest.id) && !failed.contains(&manifest.id) {
                crate::quarantine::clear_backup(repo, &manifest.id).await?;
                healed += 1;
            }
        }
    }
    Ok((quarantined, failed, rewritten, healed))
}

/// A pack's place in today's rotation, 0..1.
fn rotation_position(name: &ChunkId) -> f64 {
    let position =
        u64::from_le_bytes(name.0[..8].try_into().unwrap_or_default()) as f64 / u64::MAX as f64;
    let days = time::OffsetDateTime::now_utc().unix_timestamp() / 86_400;
    // Advance by a golden-ratio step a day, so consecutive days start at spread-out points.
    let start = (days as f64 * 0.618_033_988_749_895).fract();
    (position - start).rem_euclid(1.0)
}

/// Calls `each(slot, id)` for every non-zero slot of a backup.
async fn collect_leaf_ids(
    reader: &PageReader,
    manifest: &Manifest,
    root: ChunkId,
    mut each: impl FnMut(u64, ChunkId),
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<Leaf>(4);
    let walk = tree::walk_leaves(reader, root, manifest.depth, manifest.slots, tx);
    let consume = async {
        while let Some(leaf) = rx.recv().await {
            for (j, id) in leaf.ids.iter().enumerate() {
                if !id.is_zero() {
                    each(leaf.first_slot + j as u64, *id);
                }
            }
        }
    };
    let (walked, ()) = tokio::join!(walk, consume);
    walked
}

fn pack_selected(name: &ChunkId, read_data: ReadData) -> bool {
    match read_data {
        ReadData::None => false,
        ReadData::All | ReadData::Bytes(_) => true,
        ReadData::Subset(fraction) => {
            if fraction >= 1.0 {
                return true;
            }
            let position = u64::from_le_bytes(name.0[..8].try_into().unwrap_or_default()) as f64
                / u64::MAX as f64;
            let days = time::OffsetDateTime::now_utc().unix_timestamp() / 86_400;
            let start = (days as f64 * fraction).fract();
            let shifted = (position - start).rem_euclid(1.0);
            shifted < fraction
        }
    }
}

/// Adds each id's location in `index` to `by_pack`; an id in no pack is bad.
fn locate(
    index: &PackIndex,
    ids: impl Iterator<Item = ChunkId>,
    by_pack: &mut HashMap<ChunkId, Vec<(ChunkId, u64, u32)>>,
    bad: &mut BTreeMap<ChunkId, (String, String)>,
) {
    for id in ids {
        match index.get(&id) {
            Some(loc) => by_pack
                .entry(index.pack_name(loc.pack))
                .or_default()
                .push((id, loc.offset, loc.length)),
            None => {
                bad.insert(id, ("missing".into(), "in no pack of the index".into()));
            }
        }
    }
}

/// Moves the blobs of the `gone` packs to where the reloaded `index` puts them; returns the
/// packs they are in now. A pack the reloaded index still names keeps its blobs (and its
/// missing size), so that they are reported missing.
fn regroup(
    index: &PackIndex,
    gone: &[ChunkId],
    by_pack: &mut HashMap<ChunkId, Vec<(ChunkId, u64, u32)>>,
    sizes: &mut HashMap<ChunkId, Option<u64>>,
    bad: &mut BTreeMap<ChunkId, (String, String)>,
) -> Vec<ChunkId> {
    let still_named: HashSet<&ChunkId> = index.packs().iter().collect();
    let mut moved = Vec::new();
    for name in gone.iter().filter(|n| !still_named.contains(n)) {
        sizes.remove(name);
        moved.extend(
            by_pack
                .remove(name)
                .unwrap_or_default()
                .into_iter()
                .map(|b| b.0),
        );
    }
    let mut now_in: Vec<ChunkId> = moved
        .iter()
        .filter_map(|id| index.get(id).map(|l| index.pack_name(l.pack)))
        .collect();
    now_in.sort_unstable();
    now_in.dedup();
    locate(index, moved.into_iter(), by_pack, bad);
    now_in
}

/// The size of each pack, `None` for a pack that does not exist.
async fn pack_sizes(
    repo: &Repository,
    packs: Vec<ChunkId>,
) -> Result<HashMap<ChunkId, Option<u64>>> {
    futures::stream::iter(packs)
        .map(|name| async move {
            let key = pack::pack_key(&name);
            repo.store().size_of(&key).await.map(|s| (name, s))
        })
        .buffer_unordered(16)
        .try_collect()
        .await
        .map_err(Error::from)
}

/// Reads the blobs of the `chosen` packs that are not already bad; `None` for a pack that does
/// not exist.
async fn read_packs(
    repo: &Repository,
    by_pack: &HashMap<ChunkId, Vec<(ChunkId, u64, u32)>>,
    sizes: &HashMap<ChunkId, Option<u64>>,
    chosen: Vec<ChunkId>,
    bad: &BTreeMap<ChunkId, (String, String)>,
    max_chunk: usize,
) -> Result<Vec<(ChunkId, Option<PackReadOutcome>)>> {
    futures::stream::iter(chosen)
        .map(|name| {
            let mut blobs: Vec<_> = by_pack
                .get(&name)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|(id, _, _)| !bad.contains_key(id))
                .copied()
                .collect();
            blobs.sort_by_key(|b| b.1);
            let size = sizes.get(&name).copied().flatten();
            async move {
                read_pack_blobs(repo, name, size, blobs, max_chunk)
                    .await
                    .map(|outcome| (name, outcome))
            }
        })
        .buffer_unordered(4)
        .try_collect()
        .await
}

/// What reading one pack found.
struct PackReadOutcome {
    /// Blobs read.
    blobs: u64,
    /// Bytes read.
    bytes: u64,
    /// The blobs that failed, with why.
    failures: Vec<(ChunkId, String)>,
    /// Why the pack's own header is not sound, if it is not.
    header: Option<String>,
}

/// Reads one pack's blobs and its header and checks them; `None` when the pack does not
/// exist. `size` is the pack's size if known.
async fn read_pack_blobs(
    repo: &Repository,
    name: ChunkId,
    size: Option<u64>,
    blobs: Vec<(ChunkId, u64, u32)>,
    max_chunk: usize,
) -> Result<Option<PackReadOutcome>> {
    let key = pack::pack_key(&name);
    let header = match check_pack_header(repo, &key, size, &blobs).await? {
        HeaderCheck::Gone => return Ok(None),
        HeaderCheck::Sound => None,
        HeaderCheck::Damaged(detail) => Some(detail),
    };
    let Some(first) = blobs.first() else {
        return Ok(Some(PackReadOutcome {
            blobs: 0,
            bytes: 0,
            failures: Vec::new(),
            header,
        }));
    };
    let start = first.1;
    let end = blobs
        .iter()
        .map(|b| b.1 + u64::from(b.2))
        .max()
        .unwrap_or(start);
    let bytes = match repo.store().get_range(&key, start..end).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => {
            let detail = e.to_string();
            return Ok(Some(PackReadOutcome {
                blobs: 0,
                bytes: 0,
                failures: blobs.iter().map(|b| (b.0, detail.clone())).collect(),
                header,
            }));
        }
    };
    let repo = repo.clone();
    tokio::task::spawn_blocking(move || {
        let mut failures = Vec::new();
        for (id, offset, length) in &blobs {
            let at = (offset - start) as usize;
            let sealed = &bytes[at..at + *length as usize];
            let max = max_chunk.max(tree::PAGE_BYTES);
            if let Err(e) = pack::decode_blob(repo.sealer(), repo.hasher(), id, sealed, max) {
                failures.push((*id, format!("{e} (pack {key})")));
            }
        }
        Ok(Some(PackReadOutcome {
            blobs: blobs.len() as u64,
            bytes: bytes.len() as u64,
            failures,
            header,
        }))
    })
    .await
    .map_err(|e| Error::Internal(format!("verify task failed: {e}")))?
}

/// What a pack's own header says.
pub(crate) enum HeaderCheck {
    Sound,
    Damaged(String),
    Gone,
}

/// Reads a pack's header as prune does before repacking it, authenticates it, and checks that
/// it places each of `blobs` where the index does.
pub(crate) async fn check_pack_header(
    repo: &Repository,
    key: &str,
    size: Option<u64>,
    blobs: &[(ChunkId, u64, u32)],
) -> Result<HeaderCheck> {
    let size = match size {
        Some(size) => size,
        None => match repo.store().size_of(key).await? {
            Some(size) => size,
            None => return Ok(HeaderCheck::Gone),
        },
    };
    let advice = "its blobs still restore through the index; the next `s3mover prune` copies \
                  them into a new pack";
    let entries = match crate::prune::pack_reads::read_header_from_end(repo, key, size).await {
        Ok(Some((entries, _))) => entries,
        Ok(None) => return Ok(HeaderCheck::Gone),
        Err(Error::Corrupt { reason, .. }) => {
            return Ok(HeaderCheck::Damaged(format!(
                "{reason} (the pack's header is damaged; {advice})"
            )))
        }
        Err(e) => return Err(e),
    };
    let placed: HashSet<(ChunkId, u64, u32)> =
        entries.iter().map(|e| (e.id, e.offset, e.length)).collect();
    Ok(match blobs.iter().find(|b| !placed.contains(b)) {
        Some((id, _, _)) => HeaderCheck::Damaged(format!(
            "{key}: its header does not list chunk {id} where the index places it ({advice})"
        )),
        None => HeaderCheck::Sound,
    })
}
