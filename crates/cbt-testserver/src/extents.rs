//! Byte ranges two image files provably share, read from the filesystem's extent maps
//! (FIEMAP). On a reflink filesystem (XFS, btrfs) a snapshot cut with `cp --reflink` shares
//! every block with its volume until the volume is written there, so two snapshots of one
//! volume share all the blocks written between neither — what a copy-on-write storage system
//! knows for free when asked for changed blocks. The delta walk skips those ranges and still
//! compares every other byte, so the answer is the same as a full comparison on any filesystem;
//! on one without reflinks (ext4) nothing is shared and nothing is skipped.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use fiemap::{FiemapExtent, FiemapExtentFlags, FiemapFlags};

/// Extent flags under which the physical address does not name the bytes one to one: the
/// location is unknown or pending, the data is packed with other data, or encoded.
fn unreliable() -> FiemapExtentFlags {
    FiemapExtentFlags::UNKNOWN
        | FiemapExtentFlags::DELALLOC
        | FiemapExtentFlags::ENCODED
        | FiemapExtentFlags::DATA_ENCRYPTED
        | FiemapExtentFlags::NOT_ALIGNED
        | FiemapExtentFlags::DATA_INLINE
        | FiemapExtentFlags::DATA_TAIL
}

/// One mapped extent: logical start, physical start, length, and whether it is unwritten.
#[derive(Debug, Clone, Copy)]
struct Extent {
    logical: u64,
    physical: u64,
    length: u64,
    unwritten: bool,
}

/// The file's extents, flushed first (`FIEMAP_FLAG_SYNC`) so delayed allocations have an
/// address; `None` when the filesystem cannot map extents.
fn extents(f: &File) -> io::Result<Option<Vec<Extent>>> {
    let mut out = Vec::new();
    for e in fiemap::Fiemap::with_flags(f, FiemapFlags::SYNC) {
        let e: FiemapExtent = match e {
            Ok(e) => e,
            Err(err)
                if err.raw_os_error() == Some(libc::EOPNOTSUPP)
                    || err.raw_os_error() == Some(libc::ENOTTY) =>
            {
                return Ok(None)
            }
            Err(err) => return Err(err),
        };
        if e.fe_flags.intersects(unreliable()) {
            continue;
        }
        out.push(Extent {
            logical: e.fe_logical,
            physical: e.fe_physical,
            length: e.fe_length,
            unwritten: e.fe_flags.contains(FiemapExtentFlags::UNWRITTEN),
        });
    }
    Ok(Some(out))
}

/// Byte ranges `[start, end)`, sorted and disjoint, where `a` and `b` map the same logical
/// bytes to the same physical bytes of one filesystem — and so hold the same data. Empty when
/// the files live on different filesystems or the filesystem has no extent maps.
pub fn shared_ranges(a: &File, b: &File) -> io::Result<Vec<(u64, u64)>> {
    if a.metadata()?.dev() != b.metadata()?.dev() {
        return Ok(Vec::new());
    }
    let (Some(ea), Some(eb)) = (extents(a)?, extents(b)?) else {
        return Ok(Vec::new());
    };
    Ok(overlap(&ea, &eb))
}

/// The logical ranges where an extent of `a` and one of `b` overlap at the same physical
/// offset, both written or both unwritten. Both lists are sorted by logical offset.
fn overlap(a: &[Extent], b: &[Extent]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (&a[i], &b[j]);
        let lo = x.logical.max(y.logical);
        let hi = (x.logical + x.length).min(y.logical + y.length);
        let same_place = x.physical.wrapping_sub(x.logical) == y.physical.wrapping_sub(y.logical);
        if lo < hi && same_place && x.unwritten == y.unwritten {
            match out.last_mut() {
                Some(last) if last.1 == lo => last.1 = hi,
                _ => out.push((lo, hi)),
            }
        }
        if x.logical + x.length <= y.logical + y.length {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Removes from sorted, disjoint block ranges `[s, e)` every block lying wholly inside one of
/// the sorted, disjoint byte ranges `shared`.
pub fn subtract_shared(blocks: Vec<(u64, u64)>, shared: &[(u64, u64)], bs: u64) -> Vec<(u64, u64)> {
    let whole: Vec<(u64, u64)> = shared
        .iter()
        .map(|&(s, e)| (s.div_ceil(bs), e / bs))
        .filter(|(s, e)| s < e)
        .collect();
    let mut out = Vec::new();
    let mut k = 0;
    for (mut s, e) in blocks {
        while k < whole.len() && whole[k].1 <= s {
            k += 1;
        }
        let mut m = k;
        while s < e {
            match whole.get(m) {
                Some(&(ws, we)) if ws < e => {
                    if ws > s {
                        out.push((s, ws));
                    }
                    s = s.max(we);
                    m += 1;
                }
                _ => {
                    out.push((s, e));
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(logical: u64, physical: u64, length: u64) -> Extent {
        Extent {
            logical,
            physical,
            length,
            unwritten: false,
        }
    }

    #[test]
    fn overlap_needs_the_same_physical_place() {
        // a: [0,100) at 1000; [100,200) at 5000.  b: [0,50) at 1000; [50,60) elsewhere;
        // [60,200) at 1060 (so [60,100) is shared, [100,200) is not).
        let a = [ext(0, 1000, 100), ext(100, 5000, 100)];
        let b = [ext(0, 1000, 50), ext(50, 9000, 10), ext(60, 1060, 140)];
        assert_eq!(overlap(&a, &b), vec![(0, 50), (60, 100)]);
        let mut u = ext(0, 1000, 100);
        u.unwritten = true;
        assert_eq!(overlap(&[u], &a[..1]), vec![]);
    }

    #[test]
    fn only_whole_shared_blocks_are_removed() {
        let blocks = vec![(0, 10), (20, 30)];
        // Bytes [4096*2+1, 4096*5) share blocks 3 and 4 wholly; [4096*22, 4096*40) blocks 22..30.
        let shared = [(4096 * 2 + 1, 4096 * 5), (4096 * 22, 4096 * 40)];
        assert_eq!(
            subtract_shared(blocks, &shared, 4096),
            vec![(0, 3), (5, 10), (20, 22)]
        );
        assert_eq!(subtract_shared(vec![(0, 4)], &[], 4096), vec![(0, 4)]);
        assert_eq!(
            subtract_shared(vec![(0, 4)], &[(0, 4096 * 4)], 4096),
            vec![]
        );
    }
}
