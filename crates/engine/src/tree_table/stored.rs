//! A tree table as an object of the repository: compressed, sealed and bound to its key.

use bytes::Bytes;

use super::{key, TreeTable};
use crate::error::{Error, Result};
use crate::layout::aad::ObjectKind;
use crate::repo::Repository;

impl TreeTable {
    /// Reads the table of `backup_id`; `None` when it has none.
    pub async fn read(repo: &Repository, backup_id: &str) -> Result<Option<TreeTable>> {
        let key = key(backup_id);
        let Some(sealed) = repo.store().get_optional(&key).await? else {
            return Ok(None);
        };
        let compressed = repo.open_object(ObjectKind::TreeTable, &key, &sealed)?;
        let bytes = zstd::stream::decode_all(&compressed[..])
            .map_err(|e| Error::corrupt_object(&key, format!("{key}: cannot decompress: {e}")))?;
        Self::decode(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt_object(&key, format!("{key}: {e}")))
    }

    /// Writes the table of `backup_id`; returns its size in bytes.
    pub async fn write(&self, repo: &Repository, backup_id: &str) -> Result<u64> {
        let compressed = zstd::bulk::compress(&self.encode(), 1)
            .map_err(|e| Error::Internal(format!("cannot compress a tree table: {e}")))?;
        let key = key(backup_id);
        let sealed = repo.seal_object(ObjectKind::TreeTable, &key, &compressed);
        let size = sealed.len() as u64;
        repo.store().put(&key, Bytes::from(sealed)).await?;
        Ok(size)
    }
}
