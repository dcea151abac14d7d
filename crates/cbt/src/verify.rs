//! `s3mover cbt verify`: copy the listed ranges from a source device to a target device, then
//! compare the two devices whole (the upstream snapshot-metadata-verifier).
//!
//! Source = a volume restored from the (target) snapshot; target = a volume restored from the
//! base snapshot (delta) or an empty volume (allocated). If CBT listed every change, the target
//! equals the source afterwards; the first differing offset is reported otherwise.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::{CbtError, Client, Selection, StreamOptions, StreamStats};

const CHUNK: usize = 1 << 20;

/// What a successful verification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Ranges copied.
    pub ranges: u64,
    /// Bytes copied from source to target.
    pub bytes_copied: u64,
    /// Bytes compared (the device size).
    pub bytes_compared: u64,
    /// Stream counters.
    pub stats: StreamStats,
}

fn device_len(f: &mut File, path: &Path) -> Result<u64, CbtError> {
    f.seek(SeekFrom::End(0))
        .map_err(|e| CbtError::io(format!("cannot get the size of {}", path.display()), e))
}

/// Copies the ranges of `sel` from `source` to `target`, then compares both devices.
/// Returns [`CbtError::VerifyMismatch`] with the first differing offset when they differ.
pub async fn verify(
    sel: &Selection,
    opts: StreamOptions,
    source: &Path,
    target: &Path,
) -> Result<VerifyReport, CbtError> {
    let mut src = File::open(source)
        .map_err(|e| CbtError::io(format!("cannot open the source {}", source.display()), e))?;
    let mut dst = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .map_err(|e| CbtError::io(format!("cannot open the target {}", target.display()), e))?;
    let src_len = device_len(&mut src, source)?;

    let client = Client::connect(&sel.endpoint).await?;
    let mut stream = client.ranges(sel.query.clone(), opts);
    let mut buf = vec![0u8; CHUNK];
    let (mut ranges, mut copied) = (0u64, 0u64);
    while let Some(batch) = stream.next_batch().await? {
        for r in batch {
            if r.end() > src_len {
                return Err(CbtError::io(
                    format!(
                        "range {r} ends past the end of the source {} ({src_len} bytes)",
                        source.display()
                    ),
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                ));
            }
            let mut pos = r.offset;
            while pos < r.end() {
                let n = usize::try_from((r.end() - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
                src.read_exact_at(&mut buf[..n], pos).map_err(|e| {
                    CbtError::io(format!("cannot read {} at {pos}", source.display()), e)
                })?;
                dst.write_all_at(&buf[..n], pos).map_err(|e| {
                    CbtError::io(format!("cannot write {} at {pos}", target.display()), e)
                })?;
                pos += n as u64;
            }
            ranges += 1;
            copied += r.size;
        }
    }
    dst.sync_all()
        .map_err(|e| CbtError::io(format!("cannot flush {}", target.display()), e))?;
    let dst_len = device_len(&mut dst, target)?;
    compare(&src, &dst, src_len, dst_len, source, target)?;
    Ok(VerifyReport {
        ranges,
        bytes_copied: copied,
        bytes_compared: src_len,
        stats: stream.stats().clone(),
    })
}

/// Compares two devices whole; the error names the first differing byte offset.
pub fn compare(
    src: &File,
    dst: &File,
    src_len: u64,
    dst_len: u64,
    source: &Path,
    target: &Path,
) -> Result<(), CbtError> {
    let common = src_len.min(dst_len);
    let mut a = vec![0u8; CHUNK];
    let mut b = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < common {
        let n = usize::try_from((common - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
        src.read_exact_at(&mut a[..n], pos)
            .map_err(|e| CbtError::io(format!("cannot read {} at {pos}", source.display()), e))?;
        dst.read_exact_at(&mut b[..n], pos)
            .map_err(|e| CbtError::io(format!("cannot read {} at {pos}", target.display()), e))?;
        if a[..n] != b[..n] {
            let i = a[..n]
                .iter()
                .zip(&b[..n])
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            return Err(CbtError::VerifyMismatch {
                offset: pos + i as u64,
                source_len: src_len,
                target_len: dst_len,
            });
        }
        pos += n as u64;
    }
    if src_len != dst_len {
        return Err(CbtError::VerifyMismatch {
            offset: common,
            source_len: src_len,
            target_len: dst_len,
        });
    }
    Ok(())
}
