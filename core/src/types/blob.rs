//! [`Blob`]: a stored object (input data) that tasks read by key.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::raw::worker::worker_io;

/// A handle to an object in the session's storage. Pass it to a task and call [`Blob::get`]
/// there: the bytes go from storage to the worker. Make one with `Session::upload` or list
/// them with `Session::blobs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Blob {
    #[serde(default)]
    store: String,
    key: String,
    len: u64,
}

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // A task argument that reads this object: noted, so its region gets a copy.
        crate::types::data_refs::note(&self.store, &self.key);
        let mut st = s.serialize_struct("Blob", 3)?;
        st.serialize_field("store", &self.store)?;
        st.serialize_field("key", &self.key)?;
        st.serialize_field("len", &self.len)?;
        st.end()
    }
}

impl Blob {
    pub(crate) fn new(store: String, key: String, len: u64) -> Self {
        Blob { store, key, len }
    }

    /// The store the object is in ([`crate::Storage::identity`]: the folder of a `file://` store, the
    /// account endpoint and container of an `az://` one; never a secret).
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The object key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The name under the session's `data/` prefix.
    pub fn name(&self) -> &str {
        self.key
            .split_once("data/")
            .map_or(self.key.as_str(), |(_, name)| name)
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, inside a remote function.
    pub fn get(&self) -> Result<Bytes> {
        worker_io()?.fetch(&self.key, None)
    }
}
