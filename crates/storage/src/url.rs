//! Turning a repository URL into a [`Store`]: plain paths and `file://` URLs open a local
//! directory (through [`LocalDirStore`], whose large puts bypass the page cache); `s3://` goes
//! through `object_store`'s S3 client with its single retry policy (see [`super::s3`]).

use std::sync::Arc;

use object_store::local::LocalFileSystem;

use super::local::LocalDirStore;
use super::{Store, StoreError};

/// Where a repository lives, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A directory on a local filesystem.
    Local(std::path::PathBuf),
    /// An S3 bucket and a key prefix; the options carry the endpoint and credentials.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix within it (may be empty).
        prefix: String,
        /// The URL's query options (`endpoint`, `region`, …), as given.
        query: Vec<(String, String)>,
    },
}

impl RepoLocation {
    /// Parses a repository URL: a plain path, `file:///path`, or `s3://bucket/prefix?endpoint=…`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if url.is_empty() {
            return Err(StoreError::Location(
                "no repository given: pass --repo URL or set S3MOVER_REPO".into(),
            ));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let parsed = ::url::Url::parse(&format!("s3://{rest}")).map_err(|e| {
                StoreError::Location(format!(
                    "repository URL {url:?} is not a valid s3:// URL: {e}"
                ))
            })?;
            let bucket = parsed.host_str().unwrap_or_default().to_string();
            if bucket.is_empty() {
                return Err(StoreError::Location(format!(
                    "repository URL {url:?} names no bucket; use s3://BUCKET/PREFIX"
                )));
            }
            let prefix = parsed.path().trim_matches('/').to_string();
            let query = parsed
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            return Ok(RepoLocation::S3 {
                bucket,
                prefix,
                query,
            });
        }
        if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(StoreError::Location(format!(
                    "repository URL {url:?} must be file:///absolute/path"
                )));
            }
            return Ok(RepoLocation::Local(rest.into()));
        }
        if url.contains("://") {
            return Err(StoreError::Location(format!(
                "repository URL {url:?} has a scheme s3mover does not know; use a path, file:///path or s3://bucket/prefix"
            )));
        }
        Ok(RepoLocation::Local(url.into()))
    }
}

/// Settings for opening a store that do not belong in the URL.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Create the local directory if it is missing (only `init` does).
    pub create: bool,
    /// A PEM file of extra CA certificates to trust for an S3 endpoint (`--ca-cert FILE`).
    pub ca_cert: Option<std::path::PathBuf>,
    /// Accept any TLS certificate from the S3 endpoint (`--insecure-skip-tls-verify`).
    pub insecure_skip_tls_verify: bool,
    /// How many requests the engine runs at once; sizes the S3 connection pool.
    pub concurrency: Option<usize>,
    /// S3: objects of at least this many bytes are uploaded in parts (`None`: from
    /// `S3MOVER_S3_MULTIPART_THRESHOLD`, else 64 MiB). Local stores ignore it.
    pub multipart_threshold: Option<u64>,
    /// S3: bytes per part of a multipart upload, 5 MiB to 5 GiB (`None`: from
    /// `S3MOVER_S3_MULTIPART_PART_SIZE`, else 16 MiB). Local stores ignore it.
    pub multipart_part_size: Option<u64>,
}

/// Opens the store a repository URL names, with S3 settings from the process environment.
pub fn open_store(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
    open_store_with_env(url, options, &super::s3::process_env)
}

/// Opens the store a repository URL names, reading `AWS_*`/`S3MOVER_S3_*` settings through
/// `env` instead of the process environment (tests run side by side with different settings).
pub fn open_store_with_env(
    url: &str,
    options: &StoreOptions,
    env: super::s3::EnvLookup<'_>,
) -> Result<Store, StoreError> {
    match RepoLocation::parse(url)? {
        RepoLocation::Local(dir) => open_local(&dir, options),
        RepoLocation::S3 {
            bucket,
            prefix,
            query,
        } => super::s3::open(&bucket, &prefix, &query, options, env),
    }
}

/// Opens a local repository. Every file and directory created from then on is private to its
/// owner (files 0600, directories 0700, whatever the umask was): key slots, config and data
/// never become readable by other users of the machine, whichever code path creates them.
fn open_local(dir: &std::path::Path, options: &StoreOptions) -> Result<Store, StoreError> {
    owner_only_umask();
    if options.create {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Location(format!(
                "cannot create repository directory {}: {e}",
                dir.display()
            ))
        })?;
    } else if !dir.is_dir() {
        return Err(StoreError::Location(format!(
            "repository directory {} does not exist; create a repository there with `s3mover init`",
            dir.display()
        )));
    }
    let dir = dir.canonicalize().map_err(|e| {
        StoreError::Location(format!(
            "cannot open repository directory {}: {e}",
            dir.display()
        ))
    })?;
    let backend = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| StoreError::Location(format!("cannot open {}: {e}", dir.display())))?;
    let backend = Arc::new(LocalDirStore::new(backend));
    Ok(Store::new(backend.clone(), "", dir.display().to_string()).with_extras(backend))
}

/// Sets the process's umask to 077: files are created 0600 and directories 0700 by every
/// writer (the wrapped `LocalFileSystem` included), with no moment of wider permissions.
fn owner_only_umask() {
    // SAFETY: umask only changes the process's file-creation mask and cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repository_urls() {
        assert_eq!(
            RepoLocation::parse("/tmp/r").unwrap(),
            RepoLocation::Local("/tmp/r".into())
        );
        assert_eq!(
            RepoLocation::parse("file:///tmp/r").unwrap(),
            RepoLocation::Local("/tmp/r".into())
        );
        assert_eq!(
            RepoLocation::parse("s3://bkt/a/b?endpoint=http://127.0.0.1:3900").unwrap(),
            RepoLocation::S3 {
                bucket: "bkt".into(),
                prefix: "a/b".into(),
                query: vec![("endpoint".into(), "http://127.0.0.1:3900".into())]
            }
        );
        assert!(RepoLocation::parse("gs://x").is_err());
        assert!(RepoLocation::parse("file://relative").is_err());
        assert!(RepoLocation::parse("").is_err());
    }
}
