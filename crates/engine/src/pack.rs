//! Blobs and packs: how a chunk or tree page is stored, and how blobs are bundled into objects.
//!
//! A blob is `seal(flag || payload)` bound to its id; a pack is blobs followed by a sealed
//! header that lists them. See `docs/format.md` for the byte layout.

use bytes::Bytes;

use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::{ChunkId, IdHasher};
use crate::layout::aad::ObjectKind;

const PACK_MAGIC: &[u8; 8] = b"S3MPACK1";
/// Pack headers keep one fixed label in every format version: a pack is named by the hash of
/// its bytes, and each blob in it is bound to its own id.
const HEADER_AAD: &[u8] = match ObjectKind::PackHeader.legacy_label() {
    Some(label) => label,
    None => b"",
};
const ENTRY_LEN: usize = 32 + 1 + 8 + 4;
const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of volume data.
    Data = 0,
    /// A page of the backup tree.
    Tree = 1,
}

impl BlobKind {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// One blob's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackEntry {
    /// The chunk or tree page id.
    pub id: ChunkId,
    /// Data chunk or tree page.
    pub kind: BlobKind,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
}

/// Compresses (when that helps) and seals a chunk or page.
///
/// Incompressible data (random or already compressed or encrypted) is common on volumes, so a
/// small sample is tried first and the full compression is skipped when the sample does not
/// shrink. Each worker thread keeps one zstd context instead of building one per chunk.
pub(crate) fn encode_blob(sealer: &Sealer, id: &ChunkId, plaintext: &[u8]) -> Vec<u8> {
    match compress_if_smaller(plaintext) {
        Some(compressed) => sealer.seal_parts(&[&[FLAG_ZSTD], &compressed], &id.0),
        None => sealer.seal_parts(&[&[FLAG_RAW], plaintext], &id.0),
    }
}

/// Samples this many slices of this size across a chunk to judge its compressibility.
const SAMPLE_SLICES: usize = 4;
const SAMPLE_SLICE_BYTES: usize = 1024;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress_if_smaller(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() >= 4 * SAMPLE_SLICES * SAMPLE_SLICE_BYTES && !sample_compresses(data) {
        return None;
    }
    zstd_compress(data).filter(|c| c.len() < data.len())
}

fn sample_compresses(data: &[u8]) -> bool {
    let step = data.len() / SAMPLE_SLICES;
    let mut sample = Vec::with_capacity(SAMPLE_SLICES * SAMPLE_SLICE_BYTES);
    for i in 0..SAMPLE_SLICES {
        let start = i * step;
        sample.extend_from_slice(&data[start..start + SAMPLE_SLICE_BYTES]);
    }
    zstd_compress(&sample).is_some_and(|c| c.len() * 100 < sample.len() * 97)
}

fn zstd_compress(data: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::new(1).ok();
        }
        slot.as_mut().and_then(|c| c.compress(data).ok())
    })
}

/// Decompresses with this thread's zstd context (a new context per blob cost more than the
/// decompression of a small tree page).
fn zstd_decompress(data: &[u8], max_len: usize) -> std::io::Result<Vec<u8>> {
    with_decompressor(|decompressor| decompressor.decompress(data, max_len))
}

/// Decompresses into `out`, returning the length; output that does not fit is an error.
fn zstd_decompress_into(data: &[u8], out: &mut [u8]) -> std::io::Result<usize> {
    with_decompressor(|decompressor| decompressor.decompress_to_buffer(data, out))
}

fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(decompressor) => f(decompressor),
            None => f(&mut zstd::bulk::Decompressor::new()?),
        }
    })
}

/// [`decode_blob`] straight into `out`, with no buffer of its own: `out[0]` is scratch (the
/// blob opens there, framing byte first) and the chunk's plaintext must fill `out[1..]`
/// exactly. Only a blob whose id matches what `out[1..]` ends up holding is accepted.
pub(crate) fn decode_blob_into(
    sealer: &Sealer,
    hasher: &IdHasher,
    id: &ChunkId,
    sealed: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let corrupt = |what: String| Error::corrupt(format!("chunk {id}: {what}"));
    let opened = sealer
        .open_into(sealed, &id.0, out)
        .map_err(|e| corrupt(e.to_string()))?;
    let Some((&mut flag, data)) = out.split_first_mut() else {
        return Err(corrupt("no room to open it into".into()));
    };
    let Some(payload_len) = opened.checked_sub(1) else {
        return Err(corrupt("empty blob".into()));
    };
    let len = match flag {
        FLAG_RAW => payload_len,
        FLAG_ZSTD => {
            // The frame sits where its output goes: take it out first.
            let frame = data[..payload_len].to_vec();
            zstd_decompress_into(&frame, data)
                .map_err(|e| corrupt(format!("cannot decompress: {e}")))?
        }
        other => return Err(corrupt(format!("unknown blob flag {other}"))),
    };
    if len != data.len() {
        return Err(corrupt(format!(
            "it holds {len} bytes, expected {}",
            data.len()
        )));
    }
    let actual = hasher.hash(data);
    if actual != *id {
        return Err(corrupt(format!(
            "content hashes to {actual}; the stored data is damaged"
        )));
    }
    Ok(())
}

/// Opens, decompresses and checks a blob: the result is trusted only if its id matches. An
/// uncompressed blob's plaintext is handed out in the buffer it was opened into, not copied.
pub(crate) fn decode_blob(
    sealer: &Sealer,
    hasher: &IdHasher,
    id: &ChunkId,
    sealed: &[u8],
    max_len: usize,
) -> Result<Bytes> {
    let framed = sealer
        .open(sealed, &id.0)
        .map_err(|e| Error::corrupt(format!("chunk {id}: {e}")))?;
    let (flag, payload) = framed
        .split_first()
        .ok_or_else(|| Error::corrupt(format!("chunk {id}: empty blob")))?;
    let plaintext = match *flag {
        FLAG_RAW => Bytes::from(framed).slice(1..),
        FLAG_ZSTD => zstd_decompress(payload, max_len)
            .map(Bytes::from)
            .map_err(|e| Error::corrupt(format!("chunk {id}: cannot decompress: {e}")))?,
        other => {
            return Err(Error::corrupt(format!(
                "chunk {id}: unknown blob flag {other}"
            )))
        }
    };
    let actual = hasher.hash(&plaintext);
    if actual != *id {
        return Err(Error::corrupt(format!(
            "chunk {id}: content hashes to {actual}; the stored data is damaged"
        )));
    }
    Ok(plaintext)
}

/// Collects blobs of one kind into a pack.
#[derive(Debug)]
pub(crate) struct PackBuilder {
    kind: BlobKind,
    body: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl Drop for PackBuilder {
    /// A builder dropped unfinished (a failed backup) gives its buffer back for the next pack.
    fn drop(&mut self) {
        crate::storage::pack_buffers::give_back(std::mem::take(&mut self.body));
    }
}

/// A finished pack, ready to upload.
#[derive(Debug, Clone)]
pub(crate) struct FinishedPack {
    /// BLAKE3 of the pack's bytes.
    pub name: ChunkId,
    /// The pack's bytes: the sealed blobs, then the sealed header that lists them.
    pub bytes: Bytes,
    /// The blobs in the pack, in order.
    pub entries: Vec<PackEntry>,
}

impl FinishedPack {
    /// The pack's object key.
    pub(crate) fn key(&self) -> String {
        pack_key(&self.name)
    }
}

/// The object key of a pack.
pub fn pack_key(name: &ChunkId) -> String {
    crate::layout::pack_key(name)
}

impl PackBuilder {
    /// An empty pack for blobs of `kind`.
    pub(crate) fn new(kind: BlobKind, capacity: usize) -> Self {
        PackBuilder {
            kind,
            body: crate::storage::pack_buffers::take(capacity),
            entries: Vec::new(),
        }
    }

    /// Adds a sealed blob.
    pub(crate) fn add(&mut self, id: ChunkId, sealed: &[u8]) {
        self.entries.push(PackEntry {
            id,
            kind: self.kind,
            offset: self.body.len() as u64,
            length: sealed.len() as u32,
        });
        self.body.extend_from_slice(sealed);
    }

    /// Bytes of blobs so far.
    pub(crate) fn len(&self) -> usize {
        self.body.len()
    }

    /// True when no blob was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the header and names the pack.
    pub(crate) fn finish(mut self, sealer: &Sealer) -> FinishedPack {
        let mut body = std::mem::take(&mut self.body);
        let mut header = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for entry in &self.entries {
            header.extend_from_slice(&entry.id.0);
            header.push(entry.kind as u8);
            header.extend_from_slice(&entry.offset.to_le_bytes());
            header.extend_from_slice(&entry.length.to_le_bytes());
        }
        let sealed = sealer.seal(&header, HEADER_AAD);
        body.extend_from_slice(&sealed);
        body.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        body.extend_from_slice(PACK_MAGIC);
        let name = ChunkId(*blake3::hash(&body).as_bytes());
        FinishedPack {
            name,
            bytes: crate::storage::pack_buffers::freeze(body),
            entries: std::mem::take(&mut self.entries),
        }
    }
}

/// Bytes after a pack's sealed header: the header's length (u32, little-endian) and the magic.
pub(crate) const TRAILER_LEN: usize = 4 + PACK_MAGIC.len();

/// The length of a pack's sealed header, from the pack's last bytes (at least
/// [`TRAILER_LEN`] of them).
pub(crate) fn sealed_header_len(tail: &[u8]) -> Result<usize> {
    if tail.len() < TRAILER_LEN || &tail[tail.len() - PACK_MAGIC.len()..] != PACK_MAGIC {
        return Err(Error::corrupt("pack has no s3mover trailer"));
    }
    let len_at = tail.len() - TRAILER_LEN;
    let mut header_len = [0u8; 4];
    header_len.copy_from_slice(&tail[len_at..len_at + 4]);
    Ok(u32::from_le_bytes(header_len) as usize)
}

/// Reads the header of a pack from the pack, or from any end of it that holds the header.
pub(crate) fn read_pack_header(sealer: &Sealer, pack: &[u8]) -> Result<Vec<PackEntry>> {
    let header_len = sealed_header_len(pack)?;
    let len_at = pack.len() - TRAILER_LEN;
    let start = len_at
        .checked_sub(header_len)
        .ok_or_else(|| Error::corrupt("pack header length exceeds the pack"))?;
    let header = sealer
        .open(&pack[start..len_at], HEADER_AAD)
        .map_err(|e| Error::corrupt(format!("pack header: {e}")))?;
    if header.len() % ENTRY_LEN != 0 {
        return Err(Error::corrupt("pack header has a partial entry"));
    }
    header
        .chunks_exact(ENTRY_LEN)
        .map(|raw| {
            let id = ChunkId::from_slice(raw).unwrap_or_default();
            let kind = BlobKind::from_u8(raw[32]).ok_or_else(|| {
                Error::corrupt(format!("pack header: unknown blob kind {}", raw[32]))
            })?;
            let offset = u64::from_le_bytes(raw[33..41].try_into().unwrap_or_default());
            let length = u32::from_le_bytes(raw[41..45].try_into().unwrap_or_default());
            Ok(PackEntry {
                id,
                kind,
                offset,
                length,
            })
        })
        .collect()
}

/// Encodes entries of packs for an index object: `pack (32) || count (u32) || entry*`.
pub(crate) fn encode_index_records(packs: &[(ChunkId, Vec<PackEntry>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, entries) in packs {
        out.extend_from_slice(&name.0);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for entry in entries {
            out.extend_from_slice(&entry.id.0);
            out.push(entry.kind as u8);
            out.extend_from_slice(&entry.offset.to_le_bytes());
            out.extend_from_slice(&entry.length.to_le_bytes());
        }
    }
    out
}

/// Decodes index records, calling `each` for every (pack, entry).
pub(crate) fn decode_index_records(
    mut data: &[u8],
    mut each: impl FnMut(&ChunkId, PackEntry),
) -> Result<()> {
    let bad = || Error::corrupt("index object is truncated");
    while !data.is_empty() {
        let name = ChunkId::from_slice(data).ok_or_else(bad)?;
        let count_bytes: [u8; 4] = data
            .get(32..36)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        let count = u32::from_le_bytes(count_bytes) as usize;
        data = &data[36..];
        let need = count.checked_mul(ENTRY_LEN).ok_or_else(bad)?;
        let records = data.get(..need).ok_or_else(bad)?;
        for raw in records.chunks_exact(ENTRY_LEN) {
            let kind = BlobKind::from_u8(raw[32])
                .ok_or_else(|| Error::corrupt(format!("index: unknown blob kind {}", raw[32])))?;
            each(
                &name,
                PackEntry {
                    id: ChunkId::from_slice(raw).ok_or_else(bad)?,
                    kind,
                    offset: u64::from_le_bytes(raw[33..41].try_into().map_err(|_| bad())?),
                    length: u32::from_le_bytes(raw[41..45].try_into().map_err(|_| bad())?),
                },
            );
        }
        data = &data[need..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keys;

    #[test]
    fn blobs_round_trip_and_detect_damage() {
        let keys = Keys::from_master(&[9u8; 32]);
        let sealer = keys.sealer();
        let hasher = IdHasher::new(keys.id_key);
        let data = vec![5u8; 65536];
        let id = hasher.id_of(&data);
        let blob = encode_blob(&sealer, &id, &data);
        assert!(blob.len() < 1000, "compressible data is compressed");
        assert_eq!(
            decode_blob(&sealer, &hasher, &id, &blob, 65536).unwrap(),
            data
        );
        let mut damaged = blob.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        assert!(decode_blob(&sealer, &hasher, &id, &damaged, 65536).is_err());
        let other = hasher.id_of(b"other");
        assert!(decode_blob(&sealer, &hasher, &other, &blob, 65536).is_err());
    }

    /// Decoding in place gives what [`decode_blob`] gives, raw or compressed, encrypted or
    /// not, and refuses damage, the wrong id and a chunk of another length.
    #[test]
    fn blobs_decode_in_place() {
        let random: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let repetitive = vec![5u8; 65536];
        for keys in [Keys::from_master(&[4u8; 32]), Keys::plain([6u8; 32])] {
            let sealer = keys.sealer();
            let hasher = IdHasher::new(keys.id_key);
            for data in [&random, &repetitive] {
                let id = hasher.id_of(data);
                let blob = encode_blob(&sealer, &id, data);
                let mut out = vec![0xEEu8; data.len() + 1];
                decode_blob_into(&sealer, &hasher, &id, &blob, &mut out).unwrap();
                assert!(&out[1..] == data.as_slice());

                let mut short = vec![0u8; data.len()];
                assert!(decode_blob_into(&sealer, &hasher, &id, &blob, &mut short).is_err());
                let mut long = vec![0u8; data.len() + 2];
                assert!(decode_blob_into(&sealer, &hasher, &id, &blob, &mut long).is_err());
                let other = hasher.id_of(b"other");
                assert!(decode_blob_into(&sealer, &hasher, &other, &blob, &mut out).is_err());
                let mut damaged = blob.clone();
                let middle = damaged.len() / 2;
                damaged[middle] ^= 0x08;
                let err = decode_blob_into(&sealer, &hasher, &id, &damaged, &mut out);
                assert!(matches!(err, Err(Error::Corrupt { .. })), "{err:?}");
            }
        }
    }

    #[test]
    fn plain_blobs_are_still_hash_checked() {
        let keys = Keys::plain([1u8; 32]);
        let sealer = keys.sealer();
        let hasher = IdHasher::new(keys.id_key);
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        let id = hasher.id_of(&data);
        let mut blob = encode_blob(&sealer, &id, &data);
        let n = blob.len();
        blob[n / 2] ^= 1;
        let err = decode_blob(&sealer, &hasher, &id, &blob, 4096).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }));
    }

    #[test]
    fn pack_header_and_index_records_round_trip() {
        let sealer = Keys::from_master(&[2u8; 32]).sealer();
        let mut builder = PackBuilder::new(BlobKind::Data, 1024);
        builder.add(ChunkId([1; 32]), b"first");
        builder.add(ChunkId([2; 32]), b"second blob");
        let pack = builder.finish(&sealer);
        let entries = read_pack_header(&sealer, &pack.bytes).unwrap();
        assert_eq!(entries, pack.entries);
        assert_eq!(entries[1].offset, 5);
        let records = encode_index_records(&[(pack.name, entries.clone())]);
        let mut seen = Vec::new();
        decode_index_records(&records, |name, e| seen.push((*name, e))).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], (pack.name, entries[1]));
        assert!(decode_index_records(&records[..records.len() - 3], |_, _| {}).is_err());
    }
}
