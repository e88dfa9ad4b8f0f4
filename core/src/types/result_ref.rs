//! [`ResultRef<T>`]: a task's result left in storage and passed to later tasks.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::raw::envelope::Outcome;
use crate::raw::worker::worker_io;

/// Where a stored task result is: the store, an object key and, for packed results, a byte
/// range in it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResultLocation {
    /// The store the result is in ([`crate::Storage::identity`]), so that a reader working in
    /// another store knows where to copy it from. Empty when unknown.
    #[serde(default)]
    pub store: String,
    /// The object key (the full key in the store).
    pub key: String,
    /// The byte range of the result inside the object, when results are packed.
    pub range: Option<Range<u64>>,
}

impl Serialize for ResultLocation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // A task argument that reads this result: noted, so its region gets a copy.
        crate::types::data_refs::note(&self.store, &self.key);
        let mut st = s.serialize_struct("ResultLocation", 3)?;
        st.serialize_field("store", &self.store)?;
        st.serialize_field("key", &self.key)?;
        st.serialize_field("range", &self.range)?;
        st.end()
    }
}

impl ResultLocation {
    /// A result stored in `storage` at `key` (a byte `range` of it, when packed).
    pub fn new(
        storage: &crate::storage::Storage,
        key: impl Into<String>,
        range: Option<Range<u64>>,
    ) -> Self {
        ResultLocation {
            store: storage.identity().to_string(),
            key: key.into(),
            range,
        }
    }

    /// A result that is not stored (a call's value, reported before its record is stored).
    pub fn nowhere() -> Self {
        ResultLocation {
            store: String::new(),
            key: String::new(),
            range: None,
        }
    }

    /// Whether the result is stored somewhere.
    pub fn is_stored(&self) -> bool {
        !self.key.is_empty()
    }
}

/// A reference to the result of one finished task. Pass it as an argument to a later task and
/// call [`ResultRef::get`] there: the data goes from storage to the worker, not through you.
#[derive(Serialize, Deserialize)]
pub struct ResultRef<T> {
    job: String,
    task: u64,
    location: ResultLocation,
    #[serde(skip)]
    _marker: PhantomData<fn() -> T>,
}

impl<T> ResultRef<T> {
    pub(crate) fn new(job: String, task: u64, location: ResultLocation) -> Self {
        ResultRef {
            job,
            task,
            location,
            _marker: PhantomData,
        }
    }

    /// The job the result belongs to.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The task's index in its job.
    pub fn task(&self) -> u64 {
        self.task
    }

    /// Where the result is stored.
    pub fn location(&self) -> &ResultLocation {
        &self.location
    }
}

impl<T: DeserializeOwned> ResultRef<T> {
    /// The value, inside a remote function. If the referenced task failed, this is its error.
    pub fn get(&self) -> Result<T> {
        let bytes = worker_io()?.fetch(&self.location.key, self.location.range.clone())?;
        decode_stored_result(&bytes)
    }
}

/// Reads the stored outcome at `location` (a byte range of an object, or a whole object).
pub(crate) async fn read_location(
    storage: &crate::storage::Storage,
    location: &ResultLocation,
) -> Result<bytes::Bytes> {
    let key = object_store::path::Path::from(location.key.as_str());
    match &location.range {
        Some(range) => storage.get_range(&key, range.clone()).await,
        None => storage.get(&key).await,
    }
}

/// Decodes a stored outcome into the value, or the task's error.
pub(crate) fn decode_stored_result<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match Outcome::from_stored(bytes)? {
        Outcome::Ok(value) => codec::decode(&value),
        Outcome::Err(task_error) => Err(Error::from_task(task_error)),
    }
}

impl<T> Clone for ResultRef<T> {
    fn clone(&self) -> Self {
        ResultRef::new(self.job.clone(), self.task, self.location.clone())
    }
}

impl<T> fmt::Debug for ResultRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultRef")
            .field("job", &self.job)
            .field("task", &self.task)
            .field("location", &self.location)
            .finish()
    }
}
