//! [`JobStats`]: counts and timings of a job.

use std::time::Duration;

use crate::raw::backend::JobSpec;
use crate::types::job::JobState;

/// Counts and timings of a job, as of now.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobStats {
    /// The job id.
    pub job: String,
    /// Tasks in the job.
    pub total: u64,
    /// Tasks finished with a value.
    pub succeeded: u64,
    /// Tasks finished with an error.
    pub failed: u64,
    /// Tasks not finished yet (queued, running or waiting to retry).
    pub pending: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Times a task went back to the queue because its node was lost (cloud backends); the
    /// task started over elsewhere, which is not a retry.
    pub requeues: u64,
    /// From submission until the last task finished (or until now).
    pub elapsed: Duration,
    /// Median run time of the final attempts, where the backend reports start times.
    pub median_task_time: Option<Duration>,
    /// Longest run time of a final attempt.
    pub max_task_time: Option<Duration>,
    /// Finished tasks per second over `elapsed`.
    pub tasks_per_second: f64,
}

pub(crate) fn summarize(spec: &JobSpec, s: &JobState) -> JobStats {
    let elapsed = s.done.unwrap_or_else(std::time::Instant::now) - s.submitted;
    let mut times: Vec<Duration> = s.table.task_times();
    times.sort_unstable();
    JobStats {
        job: spec.id.clone(),
        total: spec.task_count,
        succeeded: s.finished - s.failed,
        failed: s.failed,
        pending: spec.task_count - s.finished,
        retries: s.retries,
        requeues: s.table.requeues(),
        elapsed,
        median_task_time: times.get(times.len() / 2).copied(),
        max_task_time: times.last().copied(),
        tasks_per_second: if elapsed.as_secs_f64() > 0.0 {
            s.finished as f64 / elapsed.as_secs_f64()
        } else {
            0.0
        },
    }
}
