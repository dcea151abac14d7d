//! Typed sealed records: a JSON record type names its [`ObjectKind`] once, and every write
//! seals, and every read opens and decodes, the same way, with the object key in each error.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::aad::ObjectKind;
use crate::{Error, Repository, Result};

/// A record stored as sealed JSON under a key of its own.
pub(crate) trait SealedRecord: Serialize + DeserializeOwned {
    /// The kind its AAD names.
    const KIND: ObjectKind;
    /// What it is called in messages.
    const NAME: &'static str;
}

impl Repository {
    /// Seals `record` for `key` and stores it there; returns the bytes stored.
    pub(crate) async fn write_record<T: SealedRecord>(&self, key: &str, record: &T) -> Result<u64> {
        let json = serde_json::to_vec(record)
            .map_err(|e| Error::Internal(format!("cannot encode {}: {e}", T::NAME)))?;
        let sealed = self.seal_object(T::KIND, key, &json);
        let size = sealed.len() as u64;
        self.store().put(key, Bytes::from(sealed)).await?;
        Ok(size)
    }

    /// Opens and decodes a record read from `key`; one that does not open or decode is corrupt
    /// data naming `key`.
    pub(crate) fn open_record<T: SealedRecord>(&self, key: &str, sealed: &[u8]) -> Result<T> {
        let json = self.open_object(T::KIND, key, sealed)?;
        serde_json::from_slice(&json).map_err(|e| Error::corrupt_object(key, format!("{key}: {e}")))
    }

    /// Reads the record at `key`; `None` when there is none.
    pub(crate) async fn read_record<T: SealedRecord>(&self, key: &str) -> Result<Option<T>> {
        let Some(sealed) = self.store().get_optional(key).await? else {
            return Ok(None);
        };
        self.open_record(key, &sealed).map(Some)
    }
}
