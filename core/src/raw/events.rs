//! The job's attempt records, `jobs/<job>/events/<segment>`: one JSON array per batch of ended
//! attempts, appended while the job runs, so a client that dies mid-job leaves the record of
//! everything that ended before.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::raw::executor::AttemptEnd;
use crate::storage::Storage;

/// One ended attempt in the events record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task index.
    pub task: u64,
    /// The attempt (1 is the first; 0 when the task never started).
    pub attempt: u32,
    /// The executor that ran it (`local`, `azure-batch`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// The worker that ran it, if known.
    pub worker: Option<u32>,
    /// The node that ran it, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Start of the attempt, microseconds since the Unix epoch.
    pub started_us: Option<u64>,
    /// End of the attempt, microseconds since the Unix epoch.
    pub finished_us: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// Whether another attempt followed it (a retry).
    #[serde(default)]
    pub retried: bool,
    /// How often the platform requeued it after losing its node.
    #[serde(default)]
    pub requeues: u32,
    /// The region that ran it, when the session has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl TaskRecord {
    /// The record of an ended attempt run by `executor`; `retried` when another follows it.
    pub fn of(end: &AttemptEnd, executor: &str, retried: bool) -> Self {
        TaskRecord {
            task: end.task,
            attempt: end.attempt,
            executor: Some(executor.to_string()),
            worker: end.worker,
            node: end.node.clone(),
            started_us: end.started.map(micros),
            finished_us: micros(end.finished),
            ok: end.outcome().is_ok(),
            retried,
            requeues: end.requeues,
            region: end.region.clone(),
        }
    }
}

/// Stores one batch of attempt records as the segment `name` of the job's events.
pub async fn write_event_segment(
    storage: &Storage,
    job: &str,
    name: &str,
    records: &[TaskRecord],
) -> Result<()> {
    let json = serde_json::to_vec(records).map_err(|e| Error::codec("job events", e))?;
    storage
        .put(&storage.layout().event_segment(job, name), json)
        .await
}

/// Every attempt record of a job stored so far, in the order the segments sort.
pub async fn read_events(storage: &Storage, job: &str) -> Result<Vec<TaskRecord>> {
    let mut keys = storage.list(&storage.layout().events(job)).await?;
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        out.extend(parse_events(&storage.get(&key).await?)?);
    }
    Ok(out)
}

/// Parses one segment of an events record (as [`write_event_segment`] stores it).
pub fn parse_events(bytes: &[u8]) -> Result<Vec<TaskRecord>> {
    serde_json::from_slice(bytes).map_err(|e| Error::codec("job events", e))
}
