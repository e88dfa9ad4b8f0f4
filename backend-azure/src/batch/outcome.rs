//! The outcome of a completed Batch task: the one its worker stored (the source of truth), or,
//! when there is none, what Batch says happened (exit code, failure, the end of stderr).

use std::time::{Duration, SystemTime};

use redwood_core::raw::envelope::Outcome;
use redwood_core::raw::pack::read_pack;
use redwood_core::types::result_ref::ResultLocation;
use redwood_core::{ErrorKind, Storage, TaskError, TaskErrorKind};
use serde_json::Value;

use super::client::BatchClient;

/// A completed Batch task, as listed.
pub(crate) struct Completed {
    pub(crate) index: u64,
    pub(crate) attempt: u32,
    pub(crate) item: Value,
    /// An MPI task: its exit code is the launcher's.
    pub(crate) mpi: bool,
    /// The Batch task it ran in (its own, or its pack's).
    pub(crate) batch_id: String,
    /// When it started and finished inside its pack (a pack's report says; a task of its own
    /// has the Batch task's times).
    pub(crate) times: Option<(SystemTime, SystemTime)>,
}

/// Whether a completed task failed before its program started (no exit code, and not ended
/// by a timeout or a terminate).
pub(crate) fn never_started(item: &Value) -> bool {
    let info = &item["executionInfo"];
    let code = info["failureInfo"]["code"].as_str();
    info["exitCode"].is_null()
        && code.is_some()
        && !matches!(code, Some("MaxWallClockTimeExceeded" | "TaskEnded"))
}

/// A task error of attempt `attempt` of task `task`.
pub(crate) fn task_error(
    job: &str,
    function: &str,
    (task, attempt): (u64, u32),
    kind: TaskErrorKind,
    message: String,
) -> TaskError {
    let mut e = TaskError::new(kind, message);
    e.job = job.to_string();
    e.function = function.to_string();
    e.task = task;
    e.attempt = attempt;
    e
}

/// The outcome of a completed attempt and, when its worker stored it, where.
pub(crate) async fn read_outcome(
    storage: &Storage,
    client: &BatchClient,
    job: &str,
    function: &str,
    c: &Completed,
) -> (Outcome, Option<ResultLocation>) {
    let key = storage.layout().attempt_result(job, c.index, c.attempt);
    let at = (c.index, c.attempt);
    let mut last = None;
    // A blob written just before the task completed may take a moment to be listed as there.
    for wait in [0u64, 200, 1000, 3000] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        match storage.get(&key).await {
            Ok(bytes) => {
                let entry = read_pack(&bytes).and_then(|entries| {
                    let entry =
                        entries
                            .into_iter()
                            .find(|e| e.key == c.index)
                            .ok_or_else(|| {
                                redwood_core::Error::new(ErrorKind::Codec, "no entry for the task")
                            })?;
                    Ok((Outcome::from_stored(&entry.bytes)?, entry.range))
                });
                let location = ResultLocation::new(storage, key.to_string(), None);
                return match entry {
                    Ok((outcome, range)) => (
                        outcome,
                        Some(ResultLocation {
                            range: Some(range),
                            ..location
                        }),
                    ),
                    Err(e) => {
                        let message = format!("the stored outcome cannot be read: {e}");
                        let e = task_error(job, function, at, TaskErrorKind::Decode, message);
                        (Outcome::Err(e), Some(location))
                    }
                };
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        let message = format!("the outcome cannot be read: {e}");
        return (
            Outcome::Err(task_error(job, function, at, TaskErrorKind::Lost, message)),
            None,
        );
    }
    (crash_error(client, job, function, c).await, None)
}

/// The error of an attempt that ended without storing an outcome.
pub(crate) async fn crash_error(
    client: &BatchClient,
    job: &str,
    function: &str,
    c: &Completed,
) -> Outcome {
    let info = &c.item["executionInfo"];
    let exit_code = info["exitCode"]
        .as_i64()
        .and_then(|c| i32::try_from(c).ok());
    let failure = &info["failureInfo"];
    let code = failure["code"].as_str().unwrap_or("");
    let (kind, message) = match code {
        "MaxWallClockTimeExceeded" => (
            TaskErrorKind::Timeout,
            "ran longer than its timeout; Batch ended it".to_string(),
        ),
        "TaskEnded" => (
            TaskErrorKind::Cancelled,
            "the Batch task was terminated".to_string(),
        ),
        _ => (
            TaskErrorKind::Crash,
            match (exit_code, failure["message"].as_str()) {
                (Some(x), _) if x > 128 && x < 160 => format!(
                    "the worker process was killed{}",
                    redwood_core::types::task_error::killed_by(x - 128)
                ),
                (Some(x), _) if c.mpi => {
                    format!(
                        "the MPI launcher exited with code {x}: a rank failed or could not start"
                    )
                }
                (Some(x), _) => {
                    format!("the worker process exited with code {x} without storing an outcome")
                }
                (None, Some(m)) => format!("the task did not run: {code}: {m}"),
                (None, None) => "the worker process died".to_string(),
            },
        ),
    };
    let mut e = task_error(job, function, (c.index, c.attempt), kind, message);
    e.exit_code = exit_code;
    e.signal = exit_code.filter(|&x| x > 128 && x < 160).map(|x| x - 128);
    if kind == TaskErrorKind::Crash {
        let id = &c.batch_id;
        e.stderr_tail = client
            .file_tail(
                "get_task_file",
                &format!("/jobs/{job}/tasks/{id}/files/stderr.txt"),
                20,
            )
            .await
            .map(|tail| redwood_core::raw::worker::without_task_markers(&tail));
    }
    Outcome::Err(e)
}
