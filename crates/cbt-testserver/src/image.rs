//! Answers computed from snapshot image files the way the hostpath driver does: a 4 KiB block
//! is allocated when it is not all zeros, and changed when its bytes differ between the base and
//! the target image. Holes are skipped with SEEK_DATA/SEEK_HOLE so sparse 1 GiB images are cheap.
//! A synthetic source (every `stride`-th block allocated) feeds benchmarks without any file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Where a snapshot's contents come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An image file; the capacity is its length.
    Image(PathBuf),
    /// No file: blocks `0, stride, 2*stride, …` are allocated on a volume of `capacity` bytes.
    Synthetic {
        /// Volume size in bytes.
        capacity: u64,
        /// Distance between allocated blocks, in blocks (1 = everything allocated).
        stride: u64,
    },
}

impl Source {
    /// The volume capacity in bytes.
    pub fn capacity(&self) -> io::Result<u64> {
        match self {
            Source::Image(p) => Ok(std::fs::metadata(p)?.len()),
            Source::Synthetic { capacity, .. } => Ok(*capacity),
        }
    }
}

/// Byte regions `[start, end)` of `f` that hold data (not holes), from `from` on.
fn data_regions(f: &File, from: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = from;
    while pos < len {
        let Ok(p) = libc::off_t::try_from(pos) else {
            break;
        };
        // SAFETY: lseek on a valid, open descriptor has no memory-safety preconditions.
        let start = unsafe { libc::lseek(fd, p, libc::SEEK_DATA) };
        if start < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            if e.raw_os_error() == Some(libc::EINVAL) {
                // No SEEK_DATA support: treat the rest as data.
                out.push((pos, len));
                break;
            }
            return Err(e);
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        let (s, e) = (start as u64, (end as u64).min(len));
        if s >= e {
            break;
        }
        out.push((s, e));
        pos = e;
    }
    Ok(out)
}

/// Aligns regions to whole blocks and merges the ones that touch.
fn block_regions(mut regions: Vec<(u64, u64)>, bs: u64) -> Vec<(u64, u64)> {
    regions.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in regions {
        let (s, e) = (s / bs, e.div_ceil(bs));
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

const CHUNK_BLOCKS: u64 = 256;

/// Calls `emit(block_index)` for each allocated (non-zero) block at or after `first_block`,
/// in order, until `emit` returns false.
pub fn walk_allocated(
    path: &Path,
    bs: u64,
    first_block: u64,
    emit: &mut dyn FnMut(u64) -> bool,
) -> io::Result<()> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let zero = vec![0u8; bs as usize];
    let mut buf = vec![0u8; (bs * CHUNK_BLOCKS) as usize];
    for (s, e) in block_regions(data_regions(&f, first_block * bs, len)?, bs) {
        let mut b = s.max(first_block);
        while b < e {
            let n = (e - b).min(CHUNK_BLOCKS);
            let bytes = read_full(&f, &mut buf[..(n * bs) as usize], b * bs)?;
            for i in 0..n {
                let lo = (i * bs) as usize;
                if lo >= bytes {
                    break;
                }
                let hi = (lo + bs as usize).min(bytes);
                if buf[lo..hi] != zero[..hi - lo] && !emit(b + i) {
                    return Ok(());
                }
            }
            b += n;
        }
    }
    Ok(())
}

/// Calls `emit(block_index)` for each block at or after `first_block` whose bytes differ
/// between `base` and `target` (blocks past the shorter file's end count as changed). Blocks
/// the two files share on a reflink filesystem are known equal without being read
/// ([`crate::extents`]); every other block is compared byte for byte.
pub fn walk_delta(
    base: &Path,
    target: &Path,
    bs: u64,
    first_block: u64,
    emit: &mut dyn FnMut(u64) -> bool,
) -> io::Result<()> {
    let (fa, fb) = (File::open(base)?, File::open(target)?);
    let (la, lb) = (fa.metadata()?.len(), fb.metadata()?.len());
    let from = first_block * bs;
    let mut regions = data_regions(&fa, from, la)?;
    regions.extend(data_regions(&fb, from, lb)?);
    if la != lb {
        regions.push((la.min(lb), la.max(lb)));
    }
    let short = la.min(lb);
    let mut a = vec![0u8; (bs * CHUNK_BLOCKS) as usize];
    let mut b = vec![0u8; (bs * CHUNK_BLOCKS) as usize];
    let shared = crate::extents::shared_ranges(&fa, &fb)?;
    for (s, e) in crate::extents::subtract_shared(block_regions(regions, bs), &shared, bs) {
        let mut blk = s.max(first_block);
        while blk < e {
            let n = (e - blk).min(CHUNK_BLOCKS);
            let size = (n * bs) as usize;
            let ra = read_full(&fa, &mut a[..size], blk * bs)?;
            let rb = read_full(&fb, &mut b[..size], blk * bs)?;
            a[ra..size].fill(0);
            b[rb..size].fill(0);
            for i in 0..n {
                let off = (blk + i) * bs;
                let lo = (i * bs) as usize;
                let hi = lo + bs as usize;
                let changed = off + bs > short || a[lo..hi] != b[lo..hi];
                if changed && !emit(blk + i) {
                    return Ok(());
                }
            }
            blk += n;
        }
    }
    Ok(())
}

/// Synthetic allocation: every `stride`-th block below `capacity`.
pub fn walk_synthetic(
    capacity: u64,
    stride: u64,
    bs: u64,
    first_block: u64,
    emit: &mut dyn FnMut(u64) -> bool,
) {
    let stride = stride.max(1);
    let blocks = capacity / bs;
    let mut b = first_block.div_ceil(stride) * stride;
    while b < blocks {
        if !emit(b) {
            return;
        }
        b += stride;
    }
}

fn read_full(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}
