//! The job's timing record, `jobs/<job>/events`: one JSON object per finished task.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::raw::backend::Finished;
use crate::storage::Storage;

/// One finished task in the events record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task index.
    pub task: u64,
    /// The final attempt (1 is the first; 0 when the task never started).
    pub attempt: u32,
    /// The worker that ran it, if known.
    pub worker: Option<u32>,
    /// Start of the final attempt, microseconds since the Unix epoch.
    pub started_us: Option<u64>,
    /// End of the final attempt, microseconds since the Unix epoch.
    pub finished_us: u64,
    /// Whether it succeeded.
    pub ok: bool,
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Writes the events record of a job.
pub async fn write_events(storage: &Storage, job: &str, finished: &[Finished]) -> Result<()> {
    let records: Vec<TaskRecord> = finished
        .iter()
        .map(|f| TaskRecord {
            task: f.task,
            attempt: f.attempt,
            worker: f.worker,
            started_us: f.started.map(micros),
            finished_us: micros(f.finished),
            ok: f.outcome.is_ok(),
        })
        .collect();
    let json = serde_json::to_vec(&records).map_err(|e| Error::codec("job events", e))?;
    storage.put(&storage.layout().events(job), json).await
}

/// Parses an events record (as [`write_events`] stores it).
pub fn parse_events(bytes: &[u8]) -> Result<Vec<TaskRecord>> {
    serde_json::from_slice(bytes).map_err(|e| Error::codec("job events", e))
}
