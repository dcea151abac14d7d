//! Writes a killed process left half done in a local directory.
//!
//! A local put stages its bytes in `{path}#{n}` and renames the file over the destination
//! (see `local.rs`). A process killed in between leaves the staged file, which no listing
//! shows, so nothing that works from listings (prune) ever frees it: a prune killed while it
//! uploads new packs leaves up to a pack's worth of bytes per upload in flight, every time.
//! [`remove_staged_files`] deletes such files once they are old enough that no write can still
//! be filling them.

use std::io;
use std::path::Path;
use std::time::SystemTime;

/// What [`remove_staged_files`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Files removed.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// True for a staged file's name: `<name>#<digits>`.
fn is_staged(name: &str) -> bool {
    match name.rsplit_once('#') {
        Some((stem, n)) => {
            !stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Deletes the staged files under `dir` (recursively) last modified before `older_than`.
/// A directory that does not exist holds none.
pub fn remove_staged_files(dir: &Path, older_than: SystemTime) -> io::Result<Removed> {
    let mut removed = Removed::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let staged = entry.file_name().to_str().is_some_and(is_staged);
            if !kind.is_file() || !staged {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.modified()? >= older_than {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed.files += 1;
                    removed.bytes += meta.len();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_old_staged_files_go() {
        assert!(is_staged("ab12#1") && is_staged("x#42"));
        assert!(!is_staged("ab12") && !is_staged("#1") && !is_staged("a#") && !is_staged("a#1b"));

        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("ab");
        std::fs::create_dir(&sub).expect("mkdir");
        let old = sub.join("ab01#1");
        let young = sub.join("ab02#1");
        let object = sub.join("ab03");
        for path in [&old, &young, &object] {
            std::fs::write(path, b"12345").expect("write");
        }
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for path in [&old, &object] {
            let file = std::fs::File::options()
                .write(true)
                .open(path)
                .expect("open");
            file.set_modified(hour_ago).expect("mtime");
        }
        let cutoff = SystemTime::now() - Duration::from_secs(600);
        let removed = remove_staged_files(dir.path(), cutoff).expect("remove");
        assert_eq!(removed, Removed { files: 1, bytes: 5 });
        assert!(!old.exists() && young.exists() && object.exists());
        let none = remove_staged_files(&dir.path().join("missing"), cutoff).expect("missing");
        assert_eq!(none, Removed::default());
    }
}
