//! Packed objects: many small values (task inputs, task results) in one stored object with an
//! index, so a reader can fetch one entry by byte range.
//!
//! Layout (all integers little-endian):
//! `[version u8]["RWPK"][count u32][count × (key u64, offset u64, len u64)][data]`,
//! offsets counted from the start of `data`.

use bytes::Bytes;

use crate::codec::{FORMAT_VERSION, check_version};
use crate::error::{Error, ErrorKind, Result};

const MAGIC: &[u8; 4] = b"RWPK";
const HEADER_LEN: usize = 1 + 4 + 4;
const INDEX_ENTRY_LEN: usize = 24;

/// Builds a packed object.
#[derive(Debug, Default)]
pub struct PackWriter {
    index: Vec<(u64, u64, u64)>,
    data: Vec<u8>,
}

impl PackWriter {
    /// An empty pack.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry under `key`.
    pub fn push(&mut self, key: u64, value: &[u8]) {
        self.index
            .push((key, self.data.len() as u64, value.len() as u64));
        self.data.extend_from_slice(value);
    }

    /// Number of entries so far.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The byte ranges the entries will have in the finished object, in push order.
    pub fn ranges(&self) -> Vec<std::ops::Range<u64>> {
        self.index
            .iter()
            .map(|&(_, offset, len)| entry_range(self.index.len(), offset, len))
            .collect()
    }

    /// The bytes of the packed object.
    pub fn finish(self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HEADER_LEN + self.index.len() * INDEX_ENTRY_LEN + self.data.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        for (key, offset, len) in &self.index {
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }
}

/// One entry of a packed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntry {
    /// The entry's key (a task index).
    pub key: u64,
    /// Where the entry's bytes are inside the packed object.
    pub range: std::ops::Range<u64>,
    /// The entry's bytes.
    pub bytes: Bytes,
}

/// The absolute byte range of entry `offset..offset+len` in a pack of `count` entries.
pub fn entry_range(count: usize, offset: u64, len: u64) -> std::ops::Range<u64> {
    let start = (HEADER_LEN + count * INDEX_ENTRY_LEN) as u64 + offset;
    start..start + len
}

/// Reads all entries of a packed object, in the order they were written.
pub fn read_pack(bytes: &Bytes) -> Result<Vec<PackEntry>> {
    let bad = |what: &str| Error::new(ErrorKind::Codec, format!("corrupt packed object: {what}"));
    let rest = check_version(bytes)?;
    if rest.len() < HEADER_LEN - 1 || &rest[..4] != MAGIC {
        return Err(bad("missing header"));
    }
    let count = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
    let index_end = HEADER_LEN
        .checked_add(
            count
                .checked_mul(INDEX_ENTRY_LEN)
                .ok_or_else(|| bad("count"))?,
        )
        .ok_or_else(|| bad("count"))?;
    if bytes.len() < index_end {
        return Err(bad("index is truncated"));
    }
    let data_len = (bytes.len() - index_end) as u64;
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let at = HEADER_LEN + i * INDEX_ENTRY_LEN;
        let word = |k: usize| {
            u64::from_le_bytes(
                bytes[at + 8 * k..at + 8 * k + 8]
                    .try_into()
                    .expect("8 bytes"),
            )
        };
        let (key, offset, len) = (word(0), word(1), word(2));
        if offset.checked_add(len).is_none_or(|end| end > data_len) {
            return Err(bad("entry out of range"));
        }
        let start = index_end + offset as usize;
        entries.push(PackEntry {
            key,
            range: start as u64..(start as u64 + len),
            bytes: bytes.slice(start..start + len as usize),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = PackWriter::new();
        w.push(7, b"seven");
        w.push(0, b"");
        w.push(3, b"three");
        let planned = w.ranges();
        let bytes = Bytes::from(w.finish());
        let read: Vec<_> = read_pack(&bytes)
            .unwrap()
            .into_iter()
            .map(|e| e.range)
            .collect();
        assert_eq!(planned, read);
        let entries = read_pack(&bytes).unwrap();
        let got: Vec<_> = entries.iter().map(|e| (e.key, e.bytes.clone())).collect();
        assert_eq!(
            got,
            vec![
                (7, Bytes::from_static(b"seven")),
                (0, Bytes::new()),
                (3, Bytes::from_static(b"three"))
            ]
        );
        for e in &entries {
            let r = e.range.start as usize..e.range.end as usize;
            assert_eq!(bytes.slice(r), e.bytes);
        }
    }

    #[test]
    fn truncated_pack_is_an_error() {
        let mut w = PackWriter::new();
        w.push(1, b"abcdef");
        let bytes = w.finish();
        let cut = Bytes::from(bytes[..bytes.len() - 2].to_vec());
        assert!(
            read_pack(&cut)
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        assert!(read_pack(&Bytes::from_static(b"\x01RW")).is_err());
    }
}
