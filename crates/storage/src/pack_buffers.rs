//! Pack-sized byte buffers that are reused instead of freed.
//!
//! A pack is built in (and a prune reads a whole pack into) a buffer of up to 18 MiB. The
//! allocator hands buffers that large out as fresh `mmap`s and unmaps them when they are freed,
//! so every pack cost 4,600 page faults and as many zero-filled pages — about a third of a full
//! backup's CPU time on a 2-core machine. Buffers taken from [`take`] and frozen with
//! [`freeze`] come back here when the last [`Bytes`] referring to them is dropped (after the
//! upload or after the pack was copied), and the next pack reuses their already-mapped pages.
//!
//! The pool keeps at most [`KEEP_BUFFERS`] idle buffers. It only ever holds buffers that were
//! in use at the same time before, so it does not raise a process's peak memory; it keeps that
//! memory mapped between packs instead of returning it to the system.

use std::sync::Mutex;

use bytes::Bytes;

/// Most idle buffers kept: a few more than the packs a backup or prune has in flight at once.
pub const KEEP_BUFFERS: usize = 8;

struct Pool {
    idle: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

static POOL: Pool = Pool::new(KEEP_BUFFERS);

impl Pool {
    const fn new(keep: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest idle buffer that fits, so a tree pack does not take a data pack's buffer
        // while a data pack's would then need a fresh one.
        let best = idle
            .iter()
            .enumerate()
            .filter(|(_, buf)| buf.capacity() >= capacity)
            .min_by_key(|(_, buf)| buf.capacity())
            .map(|(at, _)| at);
        match best {
            Some(at) => idle.swap_remove(at),
            None => {
                drop(idle);
                Vec::with_capacity(size_class(capacity))
            }
        }
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        buf.clear();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.keep {
            idle.push(buf);
        }
    }

    fn freeze(&'static self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Recycled { buf, pool: self })
    }

    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The capacity a new buffer gets for a request of `capacity` bytes: the next power of two.
///
/// Requests of slightly different sizes (a prune's reads of live blobs, a few MiB each) then
/// share buffers instead of each size leaving its own behind in the pool. Only the bytes a
/// buffer was filled to are ever touched, so the rounding costs address space, not memory.
fn size_class(capacity: usize) -> usize {
    capacity
        .checked_next_power_of_two()
        .unwrap_or(capacity)
        .max(MIN_CLASS_BYTES)
}

/// The smallest buffer the pool makes.
const MIN_CLASS_BYTES: usize = 64 << 10;

/// An empty buffer with room for at least `capacity` bytes, reused when one is idle.
pub fn take(capacity: usize) -> Vec<u8> {
    POOL.take(capacity)
}

/// Turns a buffer into [`Bytes`] that return it to the pool when the last clone is dropped.
pub fn freeze(buf: Vec<u8>) -> Bytes {
    POOL.freeze(buf)
}

/// Returns a buffer that will not be frozen (for example, a pack builder that was abandoned).
pub fn give_back(buf: Vec<u8>) {
    POOL.give_back(buf);
}

/// Idle buffers in the pool (for tests and diagnostics).
pub fn idle_count() -> usize {
    POOL.idle_count()
}

/// The owner behind frozen [`Bytes`]: gives its buffer back when dropped.
struct Recycled {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_buffer_is_handed_out_again_empty() {
        let pool = Pool::new(4);
        let mut buf = pool.take(1 << 20);
        buf.extend_from_slice(b"pack bytes");
        let address = buf.as_ptr();
        pool.give_back(buf);
        let again = pool.take(1 << 20);
        assert_eq!(
            again.as_ptr(),
            address,
            "the same allocation is handed out again"
        );
        assert!(again.is_empty(), "a reused buffer starts empty");
        assert!(again.capacity() >= 1 << 20);
    }

    #[test]
    fn the_smallest_fitting_buffer_is_chosen_and_none_too_small() {
        let pool = Pool::new(4);
        let small = pool.take(1000);
        let big = pool.take(100_000);
        let (small_at, big_at) = (small.as_ptr(), big.as_ptr());
        pool.give_back(big);
        pool.give_back(small);
        let reused = pool.take(500);
        assert_eq!(reused.as_ptr(), small_at);
        let fits = pool.take(50_000);
        assert_eq!(fits.as_ptr(), big_at);
        let fresh = pool.take(200_000);
        assert!(fresh.capacity() >= 200_000);
    }

    #[test]
    fn requests_of_nearby_sizes_share_one_buffer() {
        let pool = Pool::new(4);
        let first = pool.take((3 << 20) + 12_345);
        assert_eq!(first.capacity(), 4 << 20);
        let address = first.as_ptr();
        pool.give_back(first);
        let second = pool.take((4 << 20) - 1);
        assert_eq!(
            second.as_ptr(),
            address,
            "a slightly larger request reuses it"
        );
        assert_eq!(size_class(1), MIN_CLASS_BYTES);
        assert_eq!(size_class(18 << 20), 32 << 20);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_idle_buffers() {
        let pool = Pool::new(3);
        let buffers: Vec<Vec<u8>> = (0..7).map(|_| pool.take(4096)).collect();
        for buf in buffers {
            pool.give_back(buf);
        }
        assert_eq!(pool.idle_count(), 3);
    }

    #[test]
    fn frozen_bytes_return_their_buffer_when_the_last_clone_is_dropped() {
        static POOL_OF_THIS_TEST: Pool = Pool::new(4);
        let mut buf = POOL_OF_THIS_TEST.take(1 << 16);
        buf.extend_from_slice(b"pack bytes");
        let address = buf.as_ptr();
        let bytes = POOL_OF_THIS_TEST.freeze(buf);
        let clone = bytes.slice(5..);
        drop(bytes);
        assert_eq!(
            POOL_OF_THIS_TEST.idle_count(),
            0,
            "a clone keeps the buffer in use"
        );
        assert_eq!(&clone[..], b"bytes");
        drop(clone);
        assert_eq!(POOL_OF_THIS_TEST.idle_count(), 1);
        let reused = POOL_OF_THIS_TEST.take(1 << 16);
        assert_eq!(reused.as_ptr(), address);
    }
}
