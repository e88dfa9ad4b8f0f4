//! The job manifest, `jobs/<job>/job.json`: what a reader needs to make sense of a job.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::codec::FORMAT_VERSION;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::backend::JobSpec;
use crate::types::data_refs::TaskData;

/// The manifest of a job, stored as JSON so people and tools can read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobManifest {
    /// The storage format version.
    pub format: u8,
    /// The job.
    #[serde(flatten)]
    pub spec: JobSpec,
    /// The backend that ran it.
    pub backend: String,
    /// The storage URL (secrets removed).
    pub storage: String,
    /// When it was submitted, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The Rust type of the tasks' results (`std::any::type_name`), so `attach` as another type
    /// is refused before anything runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_type: Option<String>,
    /// The stored objects (broadcast values, uploads, earlier results) each task reads, so a
    /// job attached later still copies them to the region that runs the task.
    #[serde(default, skip_serializing_if = "TaskData::is_empty")]
    pub data: TaskData,
}

impl JobManifest {
    /// The manifest of a job submitted now.
    pub fn new(spec: &JobSpec, backend: &str, storage: &str) -> Self {
        let created_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        JobManifest {
            format: FORMAT_VERSION,
            spec: spec.clone(),
            backend: backend.to_string(),
            storage: storage.to_string(),
            created_unix_ms,
            result_type: None,
            data: TaskData::default(),
        }
    }

    /// Records the Rust type of the tasks' results.
    pub fn with_result_type(mut self, name: &str) -> Self {
        self.result_type = Some(name.to_string());
        self
    }

    /// Refuses to read the job's results as `T` when the job records another result type.
    pub fn check_result_type<T>(&self) -> Result<()> {
        let wanted = std::any::type_name::<T>();
        match &self.result_type {
            Some(stored) if stored != wanted => Err(Error::new(
                ErrorKind::Mismatch,
                format!(
                    "job `{}` ({}) returns `{stored}`, not `{wanted}`: attach with \
                     `Job::<{stored}>::attach`",
                    self.spec.id, self.spec.function
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::codec("job manifest", e))
    }

    /// Parses the JSON text and checks the format version.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let m: JobManifest =
            serde_json::from_slice(bytes).map_err(|e| Error::codec("job manifest", e))?;
        if m.format != FORMAT_VERSION {
            return Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "job {} has format version {}, this build reads version {FORMAT_VERSION}",
                    m.spec.id, m.format
                ),
            ));
        }
        Ok(m)
    }
}
