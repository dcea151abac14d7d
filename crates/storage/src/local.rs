//! The local-directory backend: `object_store`'s [`LocalFileSystem`] with whole-object puts
//! written around the page cache.
//!
//! Packs are written once and read back only by a later restore or verify, so caching them
//! evicts the workload's data and, on some machines, costs more CPU than the disk write.
//! [`LocalDirStore`] therefore writes large puts with `O_DIRECT` (see [`crate::direct_io`]) and
//! delegates everything else — reads, listings, deletes, copies, multipart uploads, small
//! objects, and puts on filesystems that refuse direct I/O — to the wrapped `LocalFileSystem`.
//!
//! A direct put keeps `LocalFileSystem`'s semantics: the bytes go to a staged file
//! `{path}#{n}` (a name its listings hide, so a crashed write stays invisible), which is then
//! renamed over the destination (`PutMode::Overwrite`) or hard-linked to it
//! (`PutMode::Create`, failing with `AlreadyExists` when the destination exists).

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path as FsPath, PathBuf};

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::abandoned::{self, Removed};
use crate::direct_io::{self, ALIGN};
use crate::BackendExtras;

/// Payloads smaller than this go through the page cache: for manifests, index objects and
/// config the extra open and the alignment handling cost more than caching saves.
const DIRECT_MIN_BYTES: usize = 64 * 1024;

/// Ranged reads of at least this many bytes (whole packs, read by prune) go into buffers from
/// [`crate::pack_buffers`]; smaller ones come from the allocator's heap, which reuses its memory
/// by itself.
const POOLED_READ_MIN_BYTES: u64 = 8 << 20;

/// The name errors carry as their store.
const STORE_NAME: &str = "LocalDirStore";

/// A local-directory object store whose large puts bypass the page cache.
#[derive(Debug)]
pub struct LocalDirStore {
    inner: LocalFileSystem,
}

impl LocalDirStore {
    /// Wraps a `LocalFileSystem` (rooted where the repository is).
    pub fn new(inner: LocalFileSystem) -> Self {
        LocalDirStore { inner }
    }
}

impl std::fmt::Display for LocalDirStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalDirStore({})", self.inner)
    }
}

impl LocalDirStore {
    /// Where a key lives on the filesystem.
    pub fn filesystem_path(&self, location: &Path) -> Result<PathBuf> {
        self.inner.path_to_filesystem(location)
    }
}

#[async_trait::async_trait]
impl BackendExtras for LocalDirStore {
    /// Reads `range` with `O_DIRECT` into a pooled buffer whatever its size (buffered where the
    /// filesystem refuses direct reads): for data read once, such as packs a prune copies.
    async fn get_range_uncached(&self, location: &Path, range: Range<u64>) -> Result<Bytes> {
        let path = self.inner.path_to_filesystem(location)?;
        tokio::task::spawn_blocking(move || read_range_pooled(&path, range))
            .await
            .map_err(|e| generic(io::Error::other(format!("the read task failed: {e}"))))?
    }

    /// Deletes the staged files of direct puts that were killed midway.
    async fn remove_abandoned_writes(
        &self,
        location: &Path,
        older_than: std::time::SystemTime,
    ) -> Result<Removed> {
        let dir = self.filesystem_path(location)?;
        tokio::task::spawn_blocking(move || abandoned::remove_staged_files(&dir, older_than))
            .await
            .map_err(|e| generic(io::Error::other(e)))?
            .map_err(generic)
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalDirStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let plain_mode = matches!(opts.mode, PutMode::Overwrite | PutMode::Create);
        if !plain_mode || !opts.attributes.is_empty() || payload.content_length() < DIRECT_MIN_BYTES
        {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let path = self.inner.path_to_filesystem(location)?;
        let create = matches!(opts.mode, PutMode::Create);
        let staged_payload = payload.clone();
        let written =
            tokio::task::spawn_blocking(move || put_direct(&path, &staged_payload, create))
                .await
                .map_err(|e| generic(io::Error::other(format!("the write task failed: {e}"))))??;
        match written {
            Some(result) => Ok(result),
            None => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> Result<Bytes> {
        if range.end.saturating_sub(range.start) < POOLED_READ_MIN_BYTES {
            return self.inner.get_range(location, range).await;
        }
        self.get_range_uncached(location, range).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    async fn head(&self, location: &Path) -> Result<ObjectMeta> {
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.inner.delete(location).await
    }

    fn delete_stream<'a>(
        &'a self,
        locations: BoxStream<'a, Result<Path>>,
    ) -> BoxStream<'a, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.copy(from, to).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.rename(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }

    async fn rename_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.rename_if_not_exists(from, to).await
    }
}

/// Reads `range` of the file at `path` into a pooled buffer, with direct I/O when the
/// filesystem allows it (a cold buffered read costs several times the system time here, and a
/// pack read whole is read once). A file that ends inside the range gives the bytes up to its
/// end; the caller decides whether a short read is an error.
fn read_range_pooled(path: &FsPath, range: Range<u64>) -> Result<Bytes> {
    let open_error = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: path.display().to_string(),
            source: Box::new(e),
        },
        _ => generic(io::Error::new(
            e.kind(),
            format!("cannot open {}: {e}", path.display()),
        )),
    };
    let read_error = |e: io::Error| {
        generic(io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", path.display()),
        ))
    };
    let wanted = usize::try_from(range.end - range.start)
        .map_err(|_| generic(io::Error::other("the range does not fit in memory")))?;
    if let Some(file) = direct_io::open(OpenOptions::new().read(true), path).map_err(open_error)? {
        match read_direct_range(&file, &range, wanted) {
            Ok(Some(bytes)) => return Ok(bytes),
            Ok(None) => {}
            Err(e) => return Err(read_error(e)),
        }
    }
    let file = File::open(path).map_err(open_error)?;
    let mut buf = crate::pack_buffers::take(wanted);
    buf.resize(wanted, 0);
    let filled = fill_at(&file, &mut buf, range.start, 1).map_err(read_error);
    match filled {
        Ok(filled) => {
            buf.truncate(filled);
            Ok(crate::pack_buffers::freeze(buf))
        }
        Err(e) => {
            crate::pack_buffers::give_back(buf);
            Err(e)
        }
    }
}

/// Reads `range` through a direct descriptor: whole aligned blocks around the range into an
/// aligned window of a pooled buffer, of which the range is handed out without a copy.
/// `Ok(None)` when the kernel refuses the direct read.
fn read_direct_range(file: &File, range: &Range<u64>, wanted: usize) -> io::Result<Option<Bytes>> {
    let first = range.start / ALIGN as u64 * ALIGN as u64;
    let lead = (range.start - first) as usize;
    let window = (lead + wanted).div_ceil(ALIGN) * ALIGN;
    let mut buf = crate::pack_buffers::take(window + ALIGN);
    buf.resize(window + ALIGN, 0);
    let pad = buf.as_ptr().addr().wrapping_neg() % ALIGN;
    let filled = match fill_at(file, &mut buf[pad..pad + window], first, ALIGN) {
        Ok(filled) => filled,
        Err(e) => {
            crate::pack_buffers::give_back(buf);
            return if direct_io::is_refusal(&e) {
                Ok(None)
            } else {
                Err(e)
            };
        }
    };
    let end = pad + filled.min(lead + wanted);
    let start = (pad + lead).min(end);
    Ok(Some(crate::pack_buffers::freeze(buf).slice(start..end)))
}

/// Fills `buf` from `file` at `offset` until it is full or the file ends; with `block` > 1
/// (direct I/O), a read that returns a partial block is the end of the file. Returns the bytes
/// read.
fn fill_at(file: &File, buf: &mut [u8], offset: u64, block: usize) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if !n.is_multiple_of(block) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn generic(source: io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE_NAME,
        source: Box::new(source),
    }
}

/// Writes `payload` to `path` with direct I/O and commits it like `LocalFileSystem` does.
/// `Ok(None)` when the filesystem refuses direct I/O; nothing is left behind then.
fn put_direct(path: &FsPath, payload: &PutPayload, create: bool) -> Result<Option<PutResult>> {
    let Some((file, staged)) = create_staged(path)? else {
        return Ok(None);
    };
    let written = write_payload(&file, &staged, payload);
    drop(file);
    let e_tag = match written {
        Ok(Some(e_tag)) => e_tag,
        Ok(None) => {
            let _ = std::fs::remove_file(&staged);
            return Ok(None);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(generic(io::Error::new(
                e.kind(),
                format!("cannot write {}: {e}", staged.display()),
            )));
        }
    };
    let committed = if create {
        match std::fs::hard_link(&staged, path) {
            Ok(()) => {
                let _ = std::fs::remove_file(&staged);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&staged);
                return Err(object_store::Error::AlreadyExists {
                    path: path.display().to_string(),
                    source: Box::new(e),
                });
            }
            Err(e) => Err(e),
        }
    } else {
        std::fs::rename(&staged, path)
    };
    if let Err(e) = committed {
        let _ = std::fs::remove_file(&staged);
        return Err(generic(io::Error::new(
            e.kind(),
            format!(
                "cannot move {} to {}: {e}",
                staged.display(),
                path.display()
            ),
        )));
    }
    Ok(Some(PutResult {
        e_tag: Some(e_tag),
        version: None,
    }))
}

/// Creates a new staged file `{path}#{n}` opened for direct writes, creating missing parent
/// directories; `None` when the filesystem refuses direct I/O.
fn create_staged(path: &FsPath) -> Result<Option<(File, PathBuf)>> {
    let mut suffix = 1u64;
    let mut made_parents = false;
    loop {
        let mut staged = path.as_os_str().to_owned();
        staged.push(format!("#{suffix}"));
        let staged = PathBuf::from(staged);
        let opened = direct_io::open(OpenOptions::new().write(true).create_new(true), &staged);
        match opened {
            Ok(Some(file)) => return Ok(Some((file, staged))),
            Ok(None) => {
                // Linux creates the file before it refuses O_DIRECT.
                let _ = std::fs::remove_file(&staged);
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => suffix += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !made_parents => {
                made_parents = true;
                if let Some(parent) = staged.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        generic(io::Error::new(
                            e.kind(),
                            format!("cannot create directory {}: {e}", parent.display()),
                        ))
                    })?;
                }
            }
            Err(e) => {
                return Err(generic(io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", staged.display()),
                )))
            }
        }
    }
}

/// Writes the payload to the staged file: its [`ALIGN`]-multiple head with direct writes from
/// an aligned pooled buffer, the short tail (if any) through a second, buffered descriptor.
/// Returns the e-tag `LocalFileSystem` would give the object, or `None` when a direct write
/// was refused (then the caller falls back to a buffered put).
fn write_payload(file: &File, staged: &FsPath, payload: &PutPayload) -> io::Result<Option<String>> {
    let len = payload.content_length();
    let head = len / ALIGN * ALIGN;
    let mut source = PayloadReader::new(payload);
    let refused = direct_io::with_buffer(|buf| -> io::Result<bool> {
        let mut offset = 0usize;
        while offset < head {
            let n = (head - offset).min(buf.capacity());
            let piece = &mut buf.as_mut_slice()[..n];
            source.fill(piece)?;
            match file.write_all_at(piece, offset as u64) {
                Ok(()) => {}
                Err(e) if direct_io::is_refusal(&e) => return Ok(true),
                Err(e) => return Err(e),
            }
            offset += n;
        }
        Ok(false)
    })?;
    if refused {
        return Ok(None);
    }
    if head < len {
        let mut tail = vec![0u8; len - head];
        source.fill(&mut tail)?;
        let buffered = OpenOptions::new().write(true).open(staged)?;
        buffered.write_all_at(&tail, head as u64)?;
    }
    Ok(Some(e_tag(&file.metadata()?)))
}

/// The e-tag `LocalFileSystem` gives an object: inode, modification time and size.
fn e_tag(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("{:x}-{mtime:x}-{:x}", meta.ino(), meta.len())
}

/// Reads a payload's parts in order, across part boundaries.
struct PayloadReader<'p> {
    parts: std::slice::Iter<'p, Bytes>,
    current: &'p [u8],
}

impl<'p> PayloadReader<'p> {
    fn new(payload: &'p PutPayload) -> Self {
        PayloadReader {
            parts: payload.as_ref().iter(),
            current: &[],
        }
    }

    /// Fills `out` with the next bytes.
    fn fill(&mut self, out: &mut [u8]) -> io::Result<()> {
        let mut at = 0;
        while at < out.len() {
            if self.current.is_empty() {
                self.current = match self.parts.next() {
                    Some(part) => part,
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the payload ended before its stated length",
                        ))
                    }
                };
                continue;
            }
            let n = self.current.len().min(out.len() - at);
            out[at..at + n].copy_from_slice(&self.current[..n]);
            self.current = &self.current[n..];
            at += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::sync::Arc;

    fn pattern(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
            .collect::<Vec<_>>()
            .into()
    }

    fn store_in(dir: &FsPath) -> LocalDirStore {
        LocalDirStore::new(LocalFileSystem::new_with_prefix(dir).expect("local store"))
    }

    /// Every file under `dir`, relative, sorted.
    fn files_under(dir: &FsPath) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("read_dir") {
                let entry = entry.expect("entry");
                if entry.file_type().expect("type").is_dir() {
                    stack.push(entry.path());
                } else {
                    let rel = entry.path().strip_prefix(dir).expect("under").to_owned();
                    out.push(rel.display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    const SIZES: [usize; 9] = [
        0,
        1,
        4095,
        4096,
        4097,
        DIRECT_MIN_BYTES - 1,
        DIRECT_MIN_BYTES,
        (1 << 20) + 4096,
        (16 << 20) + 123,
    ];

    #[tokio::test]
    async fn put_get_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(dir.path());
        for (i, size) in SIZES.into_iter().enumerate() {
            let data = pattern(size, i as u8);
            let location = Path::from(format!("packs/{i:02}/object-{size}"));
            let put = store
                .put(&location, PutPayload::from_bytes(data.clone()))
                .await
                .expect("put");
            let got = store.get(&location).await.expect("get");
            let meta = got.meta.clone();
            assert_eq!(got.bytes().await.expect("bytes"), data, "size {size}");
            assert_eq!(meta.size, size as u64);
            assert_eq!(
                put.e_tag, meta.e_tag,
                "size {size}: e-tag as LocalFileSystem"
            );
        }
        assert_eq!(
            files_under(dir.path()).len(),
            SIZES.len(),
            "no staged files"
        );
    }

    /// Where the filesystem allows direct I/O, large puts use it.
    #[test]
    fn large_puts_are_written_directly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let probe = direct_io::open(
            OpenOptions::new().write(true).create_new(true),
            &dir.path().join("probe"),
        )
        .expect("probe");
        if probe.is_none() {
            eprintln!(
                "SKIPPED large_puts_are_written_directly: the temporary directory's \
                 filesystem refuses O_DIRECT"
            );
            return;
        }
        for size in [DIRECT_MIN_BYTES, (1 << 20) + 4095] {
            let data = pattern(size, 3);
            let path = dir.path().join(format!("packs/{size}"));
            let result = put_direct(&path, &PutPayload::from_bytes(data.clone()), false)
                .expect("direct put");
            assert!(result.is_some(), "size {size}: the direct put fell back");
            assert!(std::fs::read(&path).expect("read") == data, "size {size}");
        }
    }

    #[tokio::test]
    async fn a_payload_of_many_parts_is_written_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(dir.path());
        let whole = pattern((3 << 20) + 77, 5);
        let parts: Vec<Bytes> = [0, 1, 4095, 100_000, 1 << 20, 2 << 20, whole.len()]
            .windows(2)
            .map(|w| whole.slice(w[0]..w[1]))
            .collect();
        let location = Path::from("parts");
        store
            .put(&location, PutPayload::from_iter(parts))
            .await
            .expect("put");
        let got = store.get(&location).await.expect("get");
        assert_eq!(got.bytes().await.expect("bytes"), whole);
    }

    #[tokio::test]
    async fn overwrite_replaces_and_create_refuses_an_existing_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(dir.path());
        let location = Path::from("a/b");
        let first = pattern(200_000, 1);
        let second = pattern(300_001, 2);
        store
            .put_opts(&location, first.clone().into(), PutMode::Create.into())
            .await
            .expect("create");
        store
            .put(&location, second.clone().into())
            .await
            .expect("overwrite");
        let got = store.get(&location).await.expect("get");
        assert_eq!(got.bytes().await.expect("bytes"), second);
        let err = store
            .put_opts(&location, first.into(), PutMode::Create.into())
            .await
            .expect_err("create over an existing object");
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "{err:?}"
        );
        let got = store.get(&location).await.expect("get");
        assert_eq!(got.bytes().await.expect("bytes"), second, "unchanged");
        assert_eq!(files_under(dir.path()), vec!["a/b".to_string()]);
    }

    #[tokio::test]
    async fn staged_files_stay_out_of_listings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(dir.path());
        store
            .put(&Path::from("packs/x"), pattern(100_000, 3).into())
            .await
            .expect("put");
        // What a write that crashed before its rename leaves behind.
        std::fs::write(dir.path().join("packs/y#1"), b"partial").expect("staged");
        store
            .put(&Path::from("packs/y"), pattern(100_000, 4).into())
            .await
            .expect("put beside a stale staged file");
        let listed: Vec<String> = store
            .list(Some(&Path::from("packs")))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list");
        let mut listed = listed;
        listed.sort();
        assert_eq!(listed, vec!["packs/x".to_string(), "packs/y".to_string()]);
    }

    #[tokio::test]
    async fn works_through_the_store_interface() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::Store::new(Arc::new(store_in(dir.path())), "", "test".to_string());
        let data = pattern(5 << 20, 9);
        store.put("packs/ab/cd", data.clone()).await.expect("put");
        assert_eq!(store.get("packs/ab/cd").await.expect("get"), data);
        assert_eq!(
            store
                .get_range("packs/ab/cd", 4000..9000)
                .await
                .expect("range"),
            data.slice(4000..9000)
        );
        assert_eq!(
            store.size_of("packs/ab/cd").await.expect("head"),
            Some(5 << 20)
        );
        store.delete("packs/ab/cd").await.expect("delete");
        assert_eq!(store.size_of("packs/ab/cd").await.expect("head"), None);
    }

    /// A directory on tmpfs (which refuses O_DIRECT before Linux 6.6): puts work either way.
    #[tokio::test]
    async fn puts_on_tmpfs_work() {
        let shm = FsPath::new("/dev/shm");
        if !shm.is_dir() {
            eprintln!("SKIPPED puts_on_tmpfs_work: /dev/shm does not exist");
            return;
        }
        let dir = tempfile::tempdir_in(shm).expect("tempdir on /dev/shm");
        let direct = direct_io::open(
            OpenOptions::new().write(true).create_new(true),
            &dir.path().join("probe"),
        )
        .expect("probe")
        .is_some();
        eprintln!("tmpfs here accepts O_DIRECT: {direct}");
        let store = store_in(dir.path());
        for size in [4097, (1 << 20) + 1, (16 << 20) + 123] {
            let data = pattern(size, 7);
            let location = Path::from(format!("p/{size}"));
            store
                .put(&location, data.clone().into())
                .await
                .expect("put");
            let got = store.get(&location).await.expect("get");
            assert_eq!(got.bytes().await.expect("bytes"), data);
        }
    }

    /// A filesystem that refuses O_DIRECT (ramfs, mounted for the test; needs root): the put
    /// falls back to `LocalFileSystem` and leaves no staged file behind.
    #[tokio::test]
    async fn puts_on_a_filesystem_without_direct_io_fall_back() {
        let Some(mount) = crate::direct_io::tests_support::RamfsMount::new(
            "puts_on_a_filesystem_without_direct_io_fall_back",
        ) else {
            return;
        };
        let data = pattern((2 << 20) + 5, 11);
        let target = mount.path().join("packs/ab/pack");
        assert!(
            put_direct(&target, &PutPayload::from_bytes(data.clone()), false)
                .expect("direct put")
                .is_none(),
            "ramfs is expected to refuse O_DIRECT"
        );
        assert!(
            files_under(mount.path()).is_empty(),
            "staged file left behind"
        );
        let store = store_in(mount.path());
        let location = Path::from("packs/ab/pack");
        store
            .put(&location, data.clone().into())
            .await
            .expect("put");
        let got = store.get(&location).await.expect("get");
        assert_eq!(got.bytes().await.expect("bytes"), data);
        assert_eq!(files_under(mount.path()), vec!["packs/ab/pack".to_string()]);
        // Large ranged reads fall back to buffered reads too.
        let whole = 0..data.len() as u64;
        let read = store
            .get_range(&location, whole)
            .await
            .expect("ranged read");
        assert_eq!(read, data);
        let inner = 4097..(data.len() as u64 - 3);
        let read = store
            .get_range(&location, inner.clone())
            .await
            .expect("ranged read");
        assert_eq!(read, data.slice(inner.start as usize..inner.end as usize));
    }

    /// Ranges of pack size are read into pooled buffers (directly where the filesystem allows
    /// it): any alignment of start and end gives exactly the range, a range past the end gives
    /// the bytes up to the end, and a missing object is "not found".
    #[tokio::test]
    async fn large_ranged_reads_return_exactly_the_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(dir.path());
        let len = (POOLED_READ_MIN_BYTES as usize) * 2 + 4097;
        let data = pattern(len, 23);
        let location = Path::from("packs/cd/pack");
        store
            .put(&location, data.clone().into())
            .await
            .expect("put");
        let min = POOLED_READ_MIN_BYTES as usize;
        for (start, end) in [
            (0, len),
            (1, min + 1),
            (4096, 4096 + min),
            (4095, len - 1),
            (len - min - 7, len),
        ] {
            let got = store
                .get_range(&location, start as u64..end as u64)
                .await
                .expect("ranged read");
            assert_eq!(got.len(), end - start, "{start}..{end}");
            assert!(got == data.slice(start..end), "{start}..{end}: wrong bytes");
        }
        let past_end = store
            .get_range(&location, (len - min) as u64..(len + 5000) as u64)
            .await
            .expect("ranged read past the end");
        assert!(past_end == data.slice(len - min..), "bytes up to the end");
        let missing = store
            .get_range(&Path::from("packs/cd/missing"), 0..(min as u64))
            .await
            .expect_err("missing object");
        assert!(
            matches!(missing, object_store::Error::NotFound { .. }),
            "{missing:?}"
        );
    }
}
