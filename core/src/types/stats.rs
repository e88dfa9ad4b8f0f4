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
    /// Tasks per region, when the session has several (in the order of the regions that
    /// ran, copied or moved something).
    pub regions: Vec<RegionTasks>,
}

/// What one region did for a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionTasks {
    /// The region's name.
    pub name: String,
    /// Tasks it finished with a value.
    pub succeeded: u64,
    /// Tasks it finished with an error.
    pub failed: u64,
    /// Objects copied into its store for its tasks.
    pub copied_objects: u64,
    /// Bytes copied into its store for its tasks.
    pub copied_bytes: u64,
    /// Unfinished tasks that moved away when it went down.
    pub moved_out: u64,
}

impl RegionTasks {
    /// The entry for `name` in `list`, added when missing.
    pub(crate) fn entry<'a>(list: &'a mut Vec<RegionTasks>, name: &str) -> &'a mut RegionTasks {
        match list.iter().position(|r| r.name == name) {
            Some(i) => &mut list[i],
            None => {
                list.push(RegionTasks {
                    name: name.to_string(),
                    ..RegionTasks::default()
                });
                let last = list.len() - 1;
                &mut list[last]
            }
        }
    }

    /// `west 120, east 98` (finished tasks per region), for the progress bar.
    pub(crate) fn summary(list: &[RegionTasks]) -> String {
        list.iter()
            .map(|r| {
                let moved = if r.moved_out > 0 {
                    format!(" ({} moved out)", r.moved_out)
                } else {
                    String::new()
                };
                format!("{} {}{moved}", r.name, r.succeeded + r.failed)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
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
        regions: s.regions.clone(),
    }
}
