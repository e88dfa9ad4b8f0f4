//! [`Broadcast<T>`]: a value stored once, content-addressed, and read by tasks.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::worker::{broadcast_cache, worker_io};

/// A handle to a value stored once under `bcast/<sha256>`; pass it as a task argument and call
/// [`Broadcast::get`] inside the task. Each worker process fetches and decodes it once.
#[derive(Deserialize)]
pub struct Broadcast<T> {
    #[serde(default)]
    store: String,
    key: String,
    sha256: String,
    len: u64,
    #[serde(skip)]
    _marker: PhantomData<fn() -> T>,
}

impl<T> Serialize for Broadcast<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // A task argument that reads this value: noted, so its region gets a copy.
        crate::types::data_refs::note(&self.store, &self.key);
        let mut st = s.serialize_struct("Broadcast", 4)?;
        st.serialize_field("store", &self.store)?;
        st.serialize_field("key", &self.key)?;
        st.serialize_field("sha256", &self.sha256)?;
        st.serialize_field("len", &self.len)?;
        st.end()
    }
}

impl<T> Broadcast<T> {
    pub(crate) fn new(store: String, key: String, sha256: String, len: u64) -> Self {
        Broadcast {
            store,
            key,
            sha256,
            len,
            _marker: PhantomData,
        }
    }

    /// The store the value is in ([`crate::Storage::identity`]: the folder of a `file://` store, the
    /// account endpoint and container of an `az://` one; never a secret).
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The storage key of the value.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The sha256 of the encoded value.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The encoded size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the encoded value is empty (never, for a stored value).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T> Broadcast<T> {
    /// The stored bytes, read through the worker's I/O, once their sha256 is checked.
    fn fetch_checked(&self) -> Result<Bytes> {
        let bytes = worker_io()?.fetch(&self.key, None)?;
        let found = crate::raw::binary::sha256_hex(&bytes);
        if found != self.sha256 {
            return Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "the stored broadcast value {} is corrupt: its sha256 is {found}, not {} \
                     ({} bytes, expected {}); `Session::broadcast` of the value rewrites it",
                    self.key,
                    self.sha256,
                    bytes.len(),
                    self.len
                ),
            ));
        }
        Ok(bytes)
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Broadcast<T> {
    /// The value, inside a remote function. The first call in a worker process reads and decodes
    /// it; later calls return the cached value.
    pub fn get(&self) -> Result<Arc<T>> {
        let cache = broadcast_cache();
        if let Some(hit) = cache.lock().map_err(poisoned)?.get(&self.key).cloned() {
            return downcast(hit, &self.key);
        }
        let bytes = self.fetch_checked()?;
        let value: Arc<T> = Arc::new(codec::decode_versioned(&bytes)?);
        let stored: Arc<dyn Any + Send + Sync> = value.clone();
        cache
            .lock()
            .map_err(poisoned)?
            .insert(self.key.clone(), stored);
        Ok(value)
    }
}

/// Byte vectors, whose stored form is their bytes after a length prefix, so a worker can read
/// them without decoding or copying ([`Broadcast::get_bytes`]).
pub trait ByteVector: sealed::Sealed {}
impl ByteVector for Vec<u8> {}
impl ByteVector for serde_bytes::ByteBuf {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for Vec<u8> {}
    impl Sealed for serde_bytes::ByteBuf {}
}

impl<T: ByteVector> Broadcast<T> {
    /// The bytes, inside a remote function, without decoding or copying them: for a large
    /// value on the local backend they are the pages of one shared-memory copy that every
    /// worker process maps. Cached per worker process like [`Broadcast::get`].
    pub fn get_bytes(&self) -> Result<Bytes> {
        let cache = broadcast_cache();
        let cache_key = format!("{}#bytes", self.key);
        if let Some(hit) = cache.lock().map_err(poisoned)?.get(&cache_key).cloned() {
            return downcast::<Bytes>(hit, &self.key).map(|b| (*b).clone());
        }
        let stored = self.fetch_checked()?;
        let bytes = byte_vector_payload(&stored)?;
        let cached: Arc<dyn Any + Send + Sync> = Arc::new(bytes.clone());
        cache.lock().map_err(poisoned)?.insert(cache_key, cached);
        Ok(bytes)
    }
}

/// The payload of a stored byte vector: after the version byte and bincode's varint length.
fn byte_vector_payload(stored: &Bytes) -> Result<Bytes> {
    let rest = codec::check_version(stored)?;
    let at = stored.len() - rest.len();
    let (len, prefix) = match rest.first() {
        Some(&b) if b < 251 => (b as u64, 1),
        Some(251) if rest.len() >= 3 => (u16::from_le_bytes([rest[1], rest[2]]) as u64, 3),
        Some(252) if rest.len() >= 5 => (
            u32::from_le_bytes(rest[1..5].try_into().unwrap_or_default()) as u64,
            5,
        ),
        Some(253) if rest.len() >= 9 => (
            u64::from_le_bytes(rest[1..9].try_into().unwrap_or_default()),
            9,
        ),
        _ => return Err(Error::new(ErrorKind::Codec, "not a stored byte vector")),
    };
    if (rest.len() - prefix) as u64 != len {
        return Err(Error::new(
            ErrorKind::Codec,
            format!(
                "stored byte vector says {len} bytes but holds {}",
                rest.len() - prefix
            ),
        ));
    }
    Ok(stored.slice(at + prefix..))
}

fn poisoned<E>(_: E) -> Error {
    Error::new(ErrorKind::Unexpected, "broadcast cache lock poisoned")
}

fn downcast<T: Send + Sync + 'static>(
    hit: Arc<dyn Any + Send + Sync>,
    key: &str,
) -> Result<Arc<T>> {
    hit.downcast::<T>().map_err(|_| {
        Error::new(
            ErrorKind::Codec,
            format!(
                "broadcast {key} was read before as another type than {}",
                std::any::type_name::<T>()
            ),
        )
    })
}

impl<T> Clone for Broadcast<T> {
    fn clone(&self) -> Self {
        Broadcast::new(
            self.store.clone(),
            self.key.clone(),
            self.sha256.clone(),
            self.len,
        )
    }
}

impl<T> fmt::Debug for Broadcast<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("key", &self.key)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_vector_payload_is_the_bytes() {
        for n in [0usize, 5, 250, 251, 70_000, 5_000_000] {
            let v: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let stored = Bytes::from(codec::encode_versioned(&v).unwrap());
            assert_eq!(
                byte_vector_payload(&stored).unwrap(),
                Bytes::from(v.clone()),
                "{n}"
            );
            let b = serde_bytes::ByteBuf::from(v.clone());
            let stored = Bytes::from(codec::encode_versioned(&b).unwrap());
            assert_eq!(byte_vector_payload(&stored).unwrap(), Bytes::from(v), "{n}");
        }
        let not_bytes = Bytes::from(codec::encode_versioned(&vec![1u64 << 40]).unwrap());
        assert!(byte_vector_payload(&not_bytes).is_err());
    }
}
