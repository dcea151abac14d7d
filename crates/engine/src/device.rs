//! Block devices and image files: size, positional reads and writes, holes and zeroing.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A block device or a regular file holding a volume.
#[derive(Debug)]
pub struct Volume {
    file: File,
    path: PathBuf,
    size: u64,
    is_block_device: bool,
}

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKZEROOUT: libc::c_ulong = 0x127f;

impl Volume {
    /// Opens a source for reading.
    pub fn open_source(path: &Path) -> Result<Volume> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Io(format!(
                "source {} does not exist; give a block device or an image file",
                path.display()
            )),
            _ => Error::io("cannot open source", path, e),
        })?;
        Self::from_file(file, path)
    }

    /// Opens an existing target for writing (a block device, or a file to overwrite).
    pub fn open_target(path: &Path) -> Result<Volume> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("cannot open target", path, e))?;
        Self::from_file(file, path)
    }

    /// Creates a new sparse file target of `size` bytes (replacing an empty or missing file).
    pub fn create_file_target(path: &Path, size: u64) -> Result<Volume> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io("cannot create target", path, e))?;
        file.set_len(size)
            .map_err(|e| Error::io("cannot size target", path, e))?;
        Self::from_file(file, path)
    }

    fn from_file(file: File, path: &Path) -> Result<Volume> {
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", path, e))?;
        let is_block_device = meta.file_type().is_block_device();
        let size = if is_block_device {
            block_device_size(&file).map_err(|e| Error::io("cannot read the size of", path, e))?
        } else if meta.is_file() {
            meta.len()
        } else {
            return Err(Error::Io(format!(
                "{} is neither a block device nor a regular file",
                path.display()
            )));
        };
        Ok(Volume {
            file,
            path: path.to_path_buf(),
            size,
            is_block_device,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a block device.
    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            Error::Io(format!(
                "read of {} bytes at offset {offset} of {} failed: {e}",
                buf.len(),
                self.path.display()
            ))
        })
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(buf, offset).map_err(|e| {
            Error::Io(format!(
                "write of {} bytes at offset {offset} of {} failed: {e}",
                buf.len(),
                self.path.display()
            ))
        })
    }

    /// Makes `len` bytes at `offset` read as zero: BLKZEROOUT on devices, a punched hole in
    /// files; falls back to writing zeros.
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        let fd = self.file.as_raw_fd();
        let done = if self.is_block_device {
            let range: [u64; 2] = [offset, len];
            // SAFETY: BLKZEROOUT reads a [u64; 2] from the pointer; `range` outlives the call.
            unsafe { libc::ioctl(fd, BLKZEROOUT, range.as_ptr()) == 0 }
        } else {
            // SAFETY: plain fallocate on an owned, open descriptor.
            unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset as libc::off_t,
                    len as libc::off_t,
                ) == 0
            }
        };
        if done {
            return Ok(());
        }
        let zeros = vec![0u8; (1 << 20).min(len as usize)];
        let mut at = offset;
        while at < offset + len {
            let n = zeros.len().min((offset + len - at) as usize);
            self.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Tells the kernel these bytes will be read soon, so scattered reads are issued to the
    /// disk together instead of one at a time. Advice only: errors are ignored.
    pub fn advise_will_need(&self, offset: u64, len: u64) {
        // SAFETY: posix_fadvise only reads its arguments; the descriptor is owned and open.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// Flushes written data to the device.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("cannot flush", &self.path, e))
    }

    /// The data extents of a sparse regular file, via SEEK_DATA/SEEK_HOLE; `None` when the
    /// filesystem cannot tell (then the whole file counts as data).
    pub fn data_extents(&self) -> Option<Vec<(u64, u64)>> {
        if self.is_block_device {
            return None;
        }
        let fd = self.file.as_raw_fd();
        let mut extents = Vec::new();
        let mut pos: i64 = 0;
        let size = self.size as i64;
        while pos < size {
            // SAFETY: lseek on an owned descriptor; positional reads elsewhere use pread.
            let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
            if data < 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::ENXIO) {
                    break; // no data after pos
                }
                return None;
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            if hole < 0 {
                return None;
            }
            let end = hole.min(size);
            if end > data {
                extents.push((data as u64, (end - data) as u64));
            }
            pos = end;
        }
        Some(extents)
    }
}

fn block_device_size(file: &File) -> std::io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_extents_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let v = Volume::create_file_target(&path, 64 << 20).unwrap();
        v.write_all_at(&[1u8; 8192], 8 << 20).unwrap();
        v.sync().unwrap();
        let v = Volume::open_source(&path).unwrap();
        let extents = v.data_extents().expect("tmp filesystems support SEEK_DATA");
        let covered: u64 = extents.iter().map(|e| e.1).sum();
        assert!((8192..64 << 20).contains(&covered), "{extents:?}");
        assert!(extents
            .iter()
            .any(|&(o, l)| o <= 8 << 20 && o + l >= (8 << 20) + 8192));
    }

    #[test]
    fn missing_source_is_a_clear_error() {
        let err = Volume::open_source(Path::new("/nonexistent/disk.img")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
