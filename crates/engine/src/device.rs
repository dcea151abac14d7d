//! Block devices and image files: size, positional reads and writes, holes and zeroing.
//!
//! Sources are read through the page cache (its readahead is what makes reads fast). Restore
//! targets are written around it when they allow `O_DIRECT` (see [`crate::storage::direct_io`]):
//! [`Volume::write_batch`] gathers neighbouring pieces into aligned buffers and writes them
//! directly, except for a short tail at the end of a volume whose size is not a multiple of
//! 4096, which goes through the ordinary descriptor, as do all writes to targets that refuse
//! direct I/O.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::direct_io::{self, AlignedBuf, ALIGN};

/// A block device or a regular file holding a volume.
#[derive(Debug)]
pub(crate) struct Volume {
    file: File,
    /// A second descriptor on the same file, opened with `O_DIRECT`; targets only, and only
    /// when the filesystem or device accepts direct I/O.
    direct: Option<File>,
    path: PathBuf,
    size: u64,
    is_block_device: bool,
}

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKZEROOUT: libc::c_ulong = 0x127f;

impl Volume {
    /// Opens a source for reading.
    pub(crate) fn open_source(path: &Path) -> Result<Volume> {
        // Checked before opening: opening a FIFO for reading waits for a writer, forever.
        if let Ok(meta) = std::fs::metadata(path) {
            refuse_unusable_kind(&meta, "source", path)?;
        }
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
    ///
    /// Unless `force`, a block device is refused when a filesystem on it (or on one of its
    /// partitions) is mounted, and is opened with `O_EXCL`, which the kernel refuses (`EBUSY`)
    /// while anything else holds it exclusively: a mounted filesystem, device mapper, RAID,
    /// swap, or another exclusive open. The claim lasts until the volume is dropped.
    pub(crate) fn open_target(path: &Path, force: bool) -> Result<Volume> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io("cannot open target", path, e))?;
        refuse_unusable_kind(&meta, "target", path)?;
        let block = meta.file_type().is_block_device();
        if block && !force {
            if let Some(mount) = crate::device_use::mount_of(meta.rdev()) {
                return Err(Error::Invalid(format!(
                    "target {} is mounted ({mount}); unmount it first, or pass --force to overwrite it anyway",
                    path.display()
                )));
            }
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if block && !force {
            options.custom_flags(libc::O_EXCL);
        }
        let file = options.open(path).map_err(|e| {
            if block && e.raw_os_error() == Some(libc::EBUSY) {
                Error::Invalid(format!(
                    "target {} is in use{}; stop what uses it, or pass --force to overwrite it anyway",
                    path.display(),
                    crate::device_use::holders_note(meta.rdev())
                ))
            } else {
                Error::io("cannot open target", path, e)
            }
        })?;
        Ok(Self::from_file(file, path)?.with_direct_writes())
    }

    /// Creates a new sparse file target of `size` bytes (replacing an empty or missing file).
    /// A file it creates is readable and writable by its owner only, whatever the umask: it
    /// holds a whole volume's data. An existing file keeps its permissions.
    pub(crate) fn create_file_target(path: &Path, size: u64) -> Result<Volume> {
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let file = match created {
            Ok(file) => {
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io("cannot set the permissions of", path, e))?;
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => OpenOptions::new()
                .read(true)
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(|e| Error::io("cannot create target", path, e))?,
            Err(e) => return Err(Error::io("cannot create target", path, e)),
        };
        file.set_len(size)
            .map_err(|e| Error::io("cannot size target", path, e))?;
        Ok(Self::from_file(file, path)?.with_direct_writes())
    }

    /// Opens a second, `O_DIRECT` descriptor on the target for [`Volume::write_batch`]; keeps
    /// buffered writes when the filesystem refuses direct I/O or the path no longer names the
    /// file already open.
    fn with_direct_writes(mut self) -> Volume {
        let opened = direct_io::open(OpenOptions::new().write(true), &self.path);
        let direct = match opened {
            Ok(Some(direct)) => direct,
            Ok(None) => {
                tracing::debug!(
                    target = %self.path.display(),
                    "direct I/O refused; writing through the page cache"
                );
                return self;
            }
            Err(e) => {
                tracing::debug!(
                    target = %self.path.display(),
                    error = %e,
                    "cannot open for direct I/O; writing through the page cache"
                );
                return self;
            }
        };
        let same_file = match (self.file.metadata(), direct.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same_file {
            self.direct = Some(direct);
        }
        self
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
            direct: None,
            path: path.to_path_buf(),
            size,
            is_block_device,
        })
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The path it was opened from.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// True for a block device.
    pub(crate) fn is_block_device(&self) -> bool {
        self.is_block_device
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::transfer("read", buf.len(), offset, &self.path, e))
    }

    /// Writes all of `buf` at `offset`.
    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::transfer("write", buf.len(), offset, &self.path, e))
    }

    /// True when [`Volume::write_batch`] writes around the page cache.
    #[cfg(test)]
    pub(crate) fn writes_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Runs `f` with a [`BatchWriter`] on this volume and writes out what it gathered. With
    /// direct I/O, the writer copies pieces into an aligned buffer borrowed for the batch (see
    /// [`direct_io::with_buffer`]) and writes each run of neighbouring pieces, up to the
    /// buffer's size, at once; otherwise it writes every piece as it comes.
    pub(crate) fn write_batch<T>(
        &self,
        f: impl FnOnce(&mut BatchWriter<'_>) -> Result<T>,
    ) -> Result<T> {
        if self.direct.is_none() {
            return f(&mut BatchWriter {
                volume: self,
                buf: None,
                start: 0,
                len: 0,
            });
        }
        direct_io::with_buffer(|buf| {
            let mut writer = BatchWriter {
                volume: self,
                buf: Some(buf),
                start: 0,
                len: 0,
            };
            let out = f(&mut writer)?;
            writer.flush()?;
            Ok(out)
        })
    }

    /// Writes `data` (from an aligned buffer) at `offset`: its [`ALIGN`]-multiple head through
    /// the direct descriptor, the rest buffered. Anything unaligned, and a direct write the
    /// device refuses, is written buffered instead.
    fn write_gathered(&self, data: &[u8], offset: u64) -> Result<()> {
        let head = data.len() / ALIGN * ALIGN;
        let Some(direct) = &self.direct else {
            return self.write_all_at(data, offset);
        };
        if head == 0 || !direct_io::is_aligned(&data[..head], offset) {
            return self.write_all_at(data, offset);
        }
        match direct.write_all_at(&data[..head], offset) {
            Ok(()) => {}
            Err(e) if direct_io::is_refusal(&e) => {
                tracing::debug!(
                    target = %self.path.display(),
                    offset,
                    "direct write refused; writing it through the page cache"
                );
                self.write_all_at(&data[..head], offset)?;
            }
            Err(e) => return Err(Error::transfer("write", head, offset, &self.path, e)),
        }
        if head < data.len() {
            self.write_all_at(&data[head..], offset + head as u64)?;
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` read as zero: BLKZEROOUT on devices, a punched hole in
    /// files; falls back to writing zeros.
    pub(crate) fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
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
    pub(crate) fn advise_will_need(&self, offset: u64, len: u64) {
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
    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("cannot flush", &self.path, e))
    }

    /// The data extents of a sparse regular file, via SEEK_DATA/SEEK_HOLE; `None` when the
    /// filesystem cannot tell (then the whole file counts as data).
    pub(crate) fn data_extents(&self) -> Option<Vec<(u64, u64)>> {
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

/// Gathers positioned writes into runs of neighbouring bytes; see [`Volume::write_batch`].
pub(crate) struct BatchWriter<'v> {
    volume: &'v Volume,
    /// The aligned buffer runs are gathered in; `None` when writes go straight through.
    buf: Option<&'v mut AlignedBuf>,
    /// Volume offset of the first gathered byte.
    start: u64,
    /// Bytes gathered.
    len: usize,
}

impl BatchWriter<'_> {
    /// Writes `data` at `offset` (now, or with the run it continues).
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if self.buf.is_none() {
            return self.volume.write_all_at(data, offset);
        }
        if self.len > 0 && offset != self.start + self.len as u64 {
            self.flush()?;
        }
        let mut offset = offset;
        let mut data = data;
        while !data.is_empty() {
            let Some(buf) = self.buf.as_deref_mut() else {
                break;
            };
            if self.len == 0 {
                self.start = offset;
            }
            let n = (buf.capacity() - self.len).min(data.len());
            buf.as_mut_slice()[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            offset += n as u64;
            data = &data[n..];
            if self.len == buf.capacity() {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes `len` bytes at `offset` that `fill` produces where they are gathered, saving the
    /// copy [`Self::write`] makes. `fill` gets `len + 1` bytes: the first is scratch it may use
    /// (a blob opens there with its framing byte first), the other `len` must hold the data.
    /// When `fill` fails nothing is written, and the gathered run is left as it was.
    pub(crate) fn write_in_place(
        &mut self,
        offset: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let fits = self.buf.as_deref().is_some_and(|b| len < b.capacity());
        if !fits {
            let mut staging = vec![0u8; len + 1];
            fill(&mut staging)?;
            return self.write(offset, &staging[1..]);
        }
        if self.len > 0 && offset != self.start + self.len as u64 {
            self.flush()?;
        }
        if self
            .buf
            .as_deref()
            .is_some_and(|b| self.len + len > b.capacity())
        {
            self.flush()?;
        }
        let Some(buf) = self.buf.as_deref_mut() else {
            return Ok(());
        };
        let window = buf.as_mut_slice();
        let at = self.len;
        if at == 0 {
            // No byte before the run to borrow: fill one further on and move the data down.
            fill(&mut window[..len + 1])?;
            window.copy_within(1..len + 1, 0);
            self.start = offset;
        } else {
            // Borrow the byte before this piece (the end of the previous one) as the scratch.
            let kept = window[at - 1];
            let filled = fill(&mut window[at - 1..at + len]);
            window[at - 1] = kept;
            filled?;
        }
        self.len += len;
        if self
            .buf
            .as_deref()
            .is_some_and(|b| self.len == b.capacity())
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes out the gathered run.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let len = std::mem::take(&mut self.len);
        match self.buf.as_deref() {
            Some(buf) => self
                .volume
                .write_gathered(&buf.as_slice()[..len], self.start),
            None => Ok(()),
        }
    }
}

/// Refuses what is neither a regular file nor a block device (a FIFO, socket, character device
/// or directory) before it is opened, as bad input.
fn refuse_unusable_kind(meta: &std::fs::Metadata, role: &str, path: &Path) -> Result<()> {
    let kind = meta.file_type();
    let what = if kind.is_file() || kind.is_block_device() {
        return Ok(());
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(Error::Invalid(format!(
        "{role} {} is {what}; give a block device or a regular file",
        path.display()
    )))
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

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 12) as u8 | 1)
            .collect()
    }

    /// Batch writes of every shape (runs, gaps, pieces larger than the buffer, the unaligned
    /// tail) on a volume whose size is not a multiple of 4096; returns the expected content.
    fn write_shapes(volume: &Volume) -> Vec<u8> {
        let size = volume.size() as usize;
        let mut expected = vec![0u8; size];
        let pieces: Vec<(usize, Vec<u8>)> = vec![
            (0, pattern(4096, 1)),
            (4096, pattern(65536, 2)),     // continues the run
            (131072, pattern(3 << 20, 3)), // after a gap, larger than the buffer
            ((4 << 20) - 8192, pattern(8192, 4)),
            (size - 1000 - 65536, pattern(65536 + 1000, 5)), // ends at the unaligned end
        ];
        volume
            .write_batch(|writer| {
                for (offset, data) in &pieces {
                    writer.write(*offset as u64, data)?;
                }
                Ok(())
            })
            .unwrap();
        for (offset, data) in &pieces {
            expected[*offset..*offset + data.len()].copy_from_slice(data);
        }
        volume.sync().unwrap();
        assert!(
            std::fs::read(volume.path()).unwrap() == expected,
            "content differs after the first batch"
        );
        // A second batch that only touches the tail.
        let tail = pattern(1000, 6);
        volume
            .write_batch(|writer| writer.write((size - 1000) as u64, &tail))
            .unwrap();
        expected[size - 1000..].copy_from_slice(&tail);
        volume.sync().unwrap();
        expected
    }

    const ODD_SIZE: u64 = (5 << 20) + 1000;

    #[test]
    fn batch_writes_land_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target.img");
        let probe = direct_io::open(
            OpenOptions::new().write(true).create(true),
            &dir.path().join("probe"),
        );
        let direct_possible = matches!(probe, Ok(Some(_)));
        let volume = Volume::create_file_target(&path, ODD_SIZE).unwrap();
        assert_eq!(volume.writes_direct(), direct_possible);
        let expected = write_shapes(&volume);
        assert!(std::fs::read(&path).unwrap() == expected, "content differs");
        // An existing target, reopened, writes the same way.
        let volume = Volume::open_target(&path, false).unwrap();
        assert_eq!(volume.writes_direct(), direct_possible);
        volume
            .write_batch(|writer| writer.write(8192, &[9u8; 4096]))
            .unwrap();
        volume.sync().unwrap();
        let mut expected = expected;
        expected[8192..12288].fill(9);
        assert!(std::fs::read(&path).unwrap() == expected, "content differs");
    }

    /// Pieces filled in place — at the start of a run, continuing one, after a gap, crossing
    /// the buffer's end, larger than the buffer — land where they belong, their scratch byte
    /// never reaches the target, and a fill that fails writes nothing and spoils no
    /// neighbour.
    #[test]
    fn pieces_filled_in_place_land_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target.img");
        let volume = Volume::create_file_target(&path, ODD_SIZE).unwrap();
        let buffer = direct_io::BUFFER_BYTES;
        let pieces: Vec<(usize, Vec<u8>)> = vec![
            (0, pattern(65536, 1)),
            (65536, pattern(65536, 2)),
            (4 * 65536, pattern(65536, 3)),
            (buffer - 4096, pattern(65536, 4)), // crosses where a full buffer would end
            (buffer + 61440, pattern(buffer + 4096, 5)), // larger than the buffer
        ];
        let failing_offset = 2 * 65536;
        let mut expected = vec![0u8; ODD_SIZE as usize];
        let outcome = volume.write_batch(|writer| {
            for (offset, data) in &pieces {
                writer.write_in_place(*offset as u64, data.len(), |out| {
                    assert_eq!(out.len(), data.len() + 1);
                    out[0] = 0xEE;
                    out[1..].copy_from_slice(data);
                    Ok(())
                })?;
                if *offset == 65536 {
                    let failed = writer.write_in_place(failing_offset, 65536, |out| {
                        out.fill(0xAB);
                        Err(Error::corrupt("a fill that fails"))
                    });
                    assert!(failed.is_err());
                }
            }
            Ok(())
        });
        outcome.unwrap();
        for (offset, data) in &pieces {
            expected[*offset..*offset + data.len()].copy_from_slice(data);
        }
        volume.sync().unwrap();
        assert!(std::fs::read(&path).unwrap() == expected, "content differs");
    }

    #[test]
    fn sources_are_never_opened_for_direct_io() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.img");
        std::fs::write(&path, [1u8; 8192]).unwrap();
        assert!(!Volume::open_source(&path).unwrap().writes_direct());
    }

    /// A target on a filesystem that refuses O_DIRECT (ramfs; needs root) is written buffered.
    #[test]
    fn batch_writes_fall_back_where_direct_io_is_refused() {
        let Some(mount) = direct_io::tests_support::RamfsMount::new(
            "batch_writes_fall_back_where_direct_io_is_refused",
        ) else {
            return;
        };
        let path = mount.path().join("target.img");
        let volume = Volume::create_file_target(&path, ODD_SIZE).unwrap();
        assert!(
            !volume.writes_direct(),
            "ramfs is expected to refuse O_DIRECT"
        );
        let expected = write_shapes(&volume);
        assert!(std::fs::read(&path).unwrap() == expected, "content differs");
    }

    #[test]
    fn missing_source_is_a_clear_error() {
        let err = Volume::open_source(Path::new("/nonexistent/disk.img")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
