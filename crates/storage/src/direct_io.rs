//! Direct I/O (`O_DIRECT`) for the data s3mover writes once and does not read back soon: pack
//! files in a local repository and restore targets.
//!
//! Writing new data through the page cache can cost more CPU than the disk write itself, and it
//! evicts the workload's cached data with bytes nobody will read. Direct writes avoid both, but
//! the kernel requires the buffer address, the file offset and the length to be multiples of the
//! device's logical block size; [`ALIGN`] (4096) satisfies every common device. This module
//! provides reusable aligned buffers and opening a file with `O_DIRECT`, reporting a filesystem
//! that refuses it (ramfs, tmpfs before Linux 6.6, some FUSE filesystems) so the caller can fall
//! back to buffered writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

/// Alignment of buffers, offsets and lengths of direct writes.
pub const ALIGN: usize = 4096;

/// Size of the buffers [`with_buffer`] lends: large enough that one write keeps the disk busy,
/// small enough that one per concurrent writer costs little memory.
pub const BUFFER_BYTES: usize = 1 << 20;

/// Most idle buffers the process keeps for reuse (more than the engine's writers in flight).
const KEEP_BUFFERS: usize = 16;

/// A heap buffer whose usable window starts at an [`ALIGN`]-aligned address and whose capacity
/// is a multiple of [`ALIGN`].
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl AlignedBuf {
    /// A zeroed buffer of at least `capacity` bytes (rounded up to a multiple of [`ALIGN`]).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).div_ceil(ALIGN) * ALIGN;
        // Over-allocate by one alignment unit and start the window at the first aligned byte.
        let storage = vec![0u8; capacity + ALIGN];
        let start = storage.as_ptr().addr().wrapping_neg() % ALIGN;
        AlignedBuf {
            storage,
            start,
            capacity,
        }
    }

    /// Bytes the window holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The aligned window.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.capacity]
    }

    /// The aligned window, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.capacity]
    }
}

/// Aligned buffers handed out and taken back, so repeated writes reuse memory that is already
/// faulted in instead of allocating (and zero-filling) fresh pages each time. The number of
/// buffers alive follows the number of concurrent users, not the number of threads that ever
/// wrote.
struct BufferPool {
    idle: Mutex<Vec<AlignedBuf>>,
    keep: usize,
    size: usize,
}

impl BufferPool {
    const fn new(keep: usize, size: usize) -> Self {
        BufferPool {
            idle: Mutex::new(Vec::new()),
            keep,
            size,
        }
    }

    fn with_buffer<T>(&self, f: impl FnOnce(&mut AlignedBuf) -> T) -> T {
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut buf = taken.unwrap_or_else(|| AlignedBuf::new(self.size));
        let out = f(&mut buf);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.keep {
            idle.push(buf);
        }
        out
    }
}

static POOL: BufferPool = BufferPool::new(KEEP_BUFFERS, BUFFER_BYTES);

/// Runs `f` with a [`BUFFER_BYTES`] aligned buffer lent from a process-wide pool (its content
/// is whatever its last user left). Every concurrent or nested call gets a buffer of its own.
pub fn with_buffer<T>(f: impl FnOnce(&mut AlignedBuf) -> T) -> T {
    POOL.with_buffer(f)
}

/// True when `offset` and the address and length of `data` allow a direct write.
pub fn is_aligned(data: &[u8], offset: u64) -> bool {
    offset.is_multiple_of(ALIGN as u64)
        && data.len().is_multiple_of(ALIGN)
        && data.as_ptr().addr().is_multiple_of(ALIGN)
}

/// True for the error a filesystem gives when it does not support direct I/O (at open, or at
/// a write whose alignment its device does not accept).
pub fn is_refusal(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EINVAL)
}

/// Opens `path` with `options` plus `O_DIRECT`; `Ok(None)` when the filesystem refuses direct
/// I/O. With `create`/`create_new`, Linux creates the file before it refuses, so the caller
/// removes a file it meant to create.
pub fn open(options: &mut OpenOptions, path: &Path) -> io::Result<Option<File>> {
    match options.custom_flags(libc::O_DIRECT).open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if is_refusal(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod tests_support {
    //! A filesystem that refuses `O_DIRECT`, for testing the fallbacks.

    use std::path::Path;
    use std::process::Command;

    /// A ramfs mounted on a temporary directory, unmounted on drop.
    pub struct RamfsMount {
        dir: tempfile::TempDir,
    }

    impl RamfsMount {
        /// Mounts one; `None` (after printing why the test is skipped) when mounting is not
        /// allowed here. In CI (`CI=true`) that is a failure instead.
        pub fn new(test: &str) -> Option<RamfsMount> {
            let dir = tempfile::tempdir().expect("tempdir");
            let mounted = Command::new("mount")
                .args(["-t", "ramfs", "ramfs"])
                .arg(dir.path())
                .output();
            match mounted {
                Ok(out) if out.status.success() => Some(RamfsMount { dir }),
                other => {
                    let why = match other {
                        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                        Err(e) => e.to_string(),
                    };
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!("{test}: mounting a ramfs is required in CI (root): {why}");
                    }
                    eprintln!("SKIPPED {test}: cannot mount a ramfs (needs root): {why}");
                    None
                }
            }
        }

        pub fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    impl Drop for RamfsMount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_rounded_up() {
        for capacity in [0, 1, 4095, 4096, 4097, 3 << 20] {
            let mut buf = AlignedBuf::new(capacity);
            assert_eq!(buf.as_slice().as_ptr().addr() % ALIGN, 0, "{capacity}");
            assert!(buf.capacity() >= capacity && buf.capacity().is_multiple_of(ALIGN));
            assert_eq!(buf.as_mut_slice().len(), buf.capacity());
            assert!(buf.as_slice().iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn pooled_buffers_are_reused_and_never_shared() {
        let pool = BufferPool::new(2, 8192);
        let addr = |buf: &AlignedBuf| buf.as_slice().as_ptr().addr();
        let (outer, inner, innermost) = pool.with_buffer(|a| {
            assert_eq!(a.capacity(), 8192);
            pool.with_buffer(|b| {
                b.as_mut_slice()[0] = 7;
                let c = pool.with_buffer(|c| addr(c));
                (addr(a), addr(b), c)
            })
        });
        assert!(outer != inner && inner != innermost && outer != innermost);
        // Returned innermost first: the pool kept the innermost and the middle one.
        assert_eq!(pool.idle.lock().unwrap().len(), 2, "keeps at most 2");
        let again = pool.with_buffer(|buf| {
            assert_eq!(buf.as_slice()[0], 7);
            addr(buf)
        });
        assert_eq!(again, inner, "the last one kept is lent first");
    }

    #[test]
    fn the_shared_pool_lends_aligned_buffers() {
        with_buffer(|buf| {
            assert_eq!(buf.capacity(), BUFFER_BYTES);
            assert_eq!(buf.as_slice().as_ptr().addr() % ALIGN, 0);
        });
    }

    #[test]
    fn alignment_check() {
        let buf = AlignedBuf::new(2 * ALIGN);
        let data = buf.as_slice();
        assert!(is_aligned(data, 0));
        assert!(is_aligned(&data[..ALIGN], 8192));
        assert!(!is_aligned(&data[..ALIGN], 512));
        assert!(!is_aligned(&data[..100], 0));
        assert!(!is_aligned(&data[1..ALIGN + 1], 0));
    }
}
