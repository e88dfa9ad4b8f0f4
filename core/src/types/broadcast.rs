//! [`Broadcast<T>`]: a value stored once, content-addressed, and read by tasks.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::worker::{broadcast_cache, worker_io};

/// A handle to a value stored once under `bcast/<sha256>`; pass it as a task argument and call
/// [`Broadcast::get`] inside the task. Each worker process fetches and decodes it once.
#[derive(Serialize, Deserialize)]
pub struct Broadcast<T> {
    key: String,
    sha256: String,
    len: u64,
    #[serde(skip)]
    _marker: PhantomData<fn() -> T>,
}

impl<T> Broadcast<T> {
    pub(crate) fn new(key: String, sha256: String, len: u64) -> Self {
        Broadcast {
            key,
            sha256,
            len,
            _marker: PhantomData,
        }
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

impl<T: DeserializeOwned + Send + Sync + 'static> Broadcast<T> {
    /// The value, inside a remote function. The first call in a worker process reads and decodes
    /// it; later calls return the cached value.
    pub fn get(&self) -> Result<Arc<T>> {
        let cache = broadcast_cache();
        if let Some(hit) = cache.lock().map_err(poisoned)?.get(&self.key).cloned() {
            return downcast(hit, &self.key);
        }
        let bytes = worker_io()?.fetch(&self.key, None)?;
        let value: Arc<T> = Arc::new(codec::decode_versioned(&bytes)?);
        let stored: Arc<dyn Any + Send + Sync> = value.clone();
        cache
            .lock()
            .map_err(poisoned)?
            .insert(self.key.clone(), stored);
        Ok(value)
    }
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
        Broadcast::new(self.key.clone(), self.sha256.clone(), self.len)
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
