//! What the job driver and the executors share: the job's description, the declared
//! capabilities, and the events the driver reports as tasks finish.

use std::pin::Pin;
use std::time::SystemTime;

use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::raw::envelope::Outcome;
use crate::types::options::TaskOptions;
use crate::types::result_ref::ResultLocation;
use crate::types::task_error::TaskError;

/// What a backend can do. Core checks every request against it; the conformance suite runs only
/// the cases a backend declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Cancelling a job stops its queued attempts.
    pub cancel: bool,
    /// Cancelling a job also stops its running attempts (when false, those run to their end
    /// and their outcomes are discarded).
    pub cancel_running: bool,
    /// The longest an attempt may run on this platform, if it has a limit (a per-task
    /// timeout above it is refused).
    pub longest_task: Option<std::time::Duration>,
    /// Workers read a task's arguments from the stored job input, so it must be stored
    /// before attempts are launched.
    pub inputs_from_storage: bool,
    /// The most attempts of one job the executor wants launched and not ended at once; the
    /// driver holds the rest (a few bytes each) until there is room. `None`: no limit.
    pub max_launched: Option<u64>,
    /// Per-attempt timeouts are enforced.
    pub timeout: bool,
    /// Failed attempts are retried with backoff.
    pub retries: bool,
    /// The executor keeps a per-job concurrency limit itself (so it holds while no client
    /// runs the job); otherwise the job driver holds the attempts beyond the limit.
    pub concurrency_limit: bool,
    /// Multi-node (MPI) tasks.
    pub mpi: bool,
    /// GPU nodes.
    pub gpu: bool,
    /// Tasks keep running when the client process stops (cloud backends); when false, a job
    /// attached after a restart resubmits its unfinished tasks.
    pub survives_client: bool,
    /// The most tasks one job may have.
    pub max_tasks_per_job: Option<u64>,
    /// The largest encoded arguments of one task, in bytes.
    pub max_payload: Option<u64>,
    /// How many regions the backend spans.
    pub regions: u32,
    /// How many attempts run at once when the platform is ready (worker processes, nodes ×
    /// slots); placement by capacity across regions starts from it. `None`: unknown.
    pub slots: Option<u64>,
}

impl Capabilities {
    /// Nothing declared; a backend sets what it supports.
    pub fn none() -> Self {
        Capabilities {
            cancel: false,
            cancel_running: false,
            longest_task: None,
            inputs_from_storage: false,
            max_launched: None,
            timeout: false,
            retries: false,
            concurrency_limit: false,
            mpi: false,
            gpu: false,
            survives_client: false,
            max_tasks_per_job: None,
            max_payload: None,
            regions: 1,
            slots: None,
        }
    }

    /// Checks a submission against what is declared; the error names what is missing.
    pub fn check(&self, backend: &str, job: &JobSpec, args: &[Vec<u8>]) -> Result<()> {
        let unsupported = |what: &str| {
            Err(Error::new(
                ErrorKind::Unsupported,
                format!("backend `{backend}` does not support {what}"),
            )
            .with_context("job", &job.id))
        };
        let o = &job.options;
        if o.timeout.is_some() && !self.timeout {
            return unsupported("task timeouts (TaskOptions::timeout)");
        }
        // `Duration::MAX` is no timeout of the task's own: the platform's longest still holds.
        if let (Some(timeout), Some(longest)) = (o.timeout, self.longest_task)
            && timeout > longest
            && timeout != std::time::Duration::MAX
        {
            return unsupported(&format!(
                "a task timeout of {} (tasks run at most {} there)",
                humanize(timeout),
                humanize(longest)
            ));
        }
        if o.retries > 0 && !self.retries {
            return unsupported("retries (TaskOptions::retries)");
        }
        if let Some(shape) = o.mpi {
            if !self.mpi {
                return unsupported("multi-node MPI tasks (TaskOptions::mpi)");
            }
            if shape.nodes == 0 || shape.procs_per_node == 0 {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "TaskOptions::mpi({}, {}): nodes and procs_per_node must be at least 1",
                        shape.nodes, shape.procs_per_node
                    ),
                ));
            }
        }
        if o.concurrency == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "TaskOptions::concurrency must be at least 1",
            ));
        }
        if let Some(max) = self.max_tasks_per_job
            && job.task_count > max
        {
            return unsupported(&format!(
                "{} tasks in one job (at most {max})",
                job.task_count
            ));
        }
        if let Some(max) = self.max_payload
            && let Some((index, big)) = args.iter().enumerate().find(|(_, a)| a.len() as u64 > max)
        {
            return unsupported(&format!(
                "task {index} with {} bytes of arguments (at most {max}); pass large data with \
                 Session::broadcast instead",
                big.len()
            ));
        }
        Ok(())
    }
}

fn humanize(d: std::time::Duration) -> String {
    format!("{d:?}")
}

/// A job as the backend sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job id (unique in the storage namespace).
    pub id: String,
    /// The remote function's id.
    pub function: String,
    /// The function's signature hash.
    pub signature: u64,
    /// The sha256 of the binary that must run the tasks.
    pub binary: String,
    /// How many tasks the job has.
    pub task_count: u64,
    /// Retries, timeout, concurrency.
    pub options: TaskOptions,
}

/// The events of a driven job; the stream ends after the last task's `Finished`.
pub type EventStream = Pin<Box<dyn Stream<Item = TaskEvent> + Send>>;

/// Something that happened to a task.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    /// An attempt failed and another will run after a backoff.
    Retrying {
        /// The task's index.
        task: u64,
        /// Why the attempt failed.
        error: TaskError,
    },
    /// The task finished for good, and its outcome is durable in storage.
    Finished(Box<Finished>),
    /// Objects a region's tasks read were copied into its store (once per store).
    Copied {
        /// The region.
        region: String,
        /// How many objects.
        objects: u64,
        /// How many bytes.
        bytes: u64,
    },
    /// A region went down: its unfinished tasks moved to the others.
    Moved {
        /// The region.
        region: String,
        /// How many tasks.
        tasks: u64,
    },
}

/// A finished task: its outcome, where it is stored, and when it ran.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The task's index.
    pub task: u64,
    /// The attempt that finished (1 is the first; 0 when the task never started).
    pub attempt: u32,
    /// The value or the error.
    pub outcome: Outcome,
    /// Where the stored outcome is.
    pub location: ResultLocation,
    /// When the final attempt started, if known.
    pub started: Option<SystemTime>,
    /// When it finished.
    pub finished: SystemTime,
    /// Which worker ran it, if known.
    pub worker: Option<u32>,
    /// How often the platform put it back in the queue because its node was lost (not a
    /// retry: the attempt started over elsewhere).
    pub requeues: u32,
    /// The region that ran it, when the session has several.
    pub region: Option<String>,
}

/// Release what the backend holds (worker processes, pools, cloud jobs).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CleanupRequest {
    /// Also the platform's resources of these jobs (by id), whether or not this executor ran
    /// them: what `redwood cleanup` deletes from storage, so their cloud jobs go too.
    pub jobs: Vec<String>,
    /// Also what the platform holds for a storage home that no stored job needs any more.
    pub leftovers: Option<Leftovers>,
    /// Release nothing: the reply says what would be released.
    pub dry_run: bool,
}

impl CleanupRequest {
    /// A cleanup that also releases these jobs' platform resources.
    pub fn with_jobs(mut self, jobs: impl IntoIterator<Item = String>) -> Self {
        self.jobs.extend(jobs);
        self
    }

    /// A cleanup that also looks for leftovers (see [`Leftovers`]).
    pub fn with_leftovers(mut self, leftovers: Leftovers) -> Self {
        self.leftovers = Some(leftovers);
        self
    }

    /// A cleanup that only says what it would release.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// What to look for beyond the named jobs: the platform's jobs made for jobs of one storage
/// home (a store and namespace, [`Storage::home_tag`](crate::Storage::home_tag)) that are no
/// longer stored there, and the pools Redwood created that no platform job uses.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Leftovers {
    /// The home's tag, as the executor marked the platform jobs it made for it.
    pub home: String,
    /// The jobs still stored in the home: their platform jobs stay.
    pub stored: Vec<String>,
}

impl Leftovers {
    /// Leftovers of the home tagged `home`, whose stored jobs are `stored`.
    pub fn new(home: impl Into<String>, stored: impl IntoIterator<Item = String>) -> Self {
        Leftovers {
            home: home.into(),
            stored: stored.into_iter().collect(),
        }
    }
}

/// The reply to a cleanup.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CleanupReply {
    /// What was released (or, for a dry run, would be), in words.
    pub released: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(options: TaskOptions) -> JobSpec {
        JobSpec {
            id: "j".into(),
            function: "f".into(),
            signature: 0,
            binary: "b".into(),
            task_count: 1,
            options,
        }
    }

    #[test]
    fn mpi_is_refused_unless_declared_and_needs_a_shape() {
        let none = Capabilities::none();
        let e = none
            .check("local", &job(TaskOptions::new().mpi(2, 4)), &[])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("TaskOptions::mpi"), "{e}");
        let mut mpi = Capabilities::none();
        mpi.mpi = true;
        assert!(
            mpi.check("b", &job(TaskOptions::new().mpi(2, 4)), &[])
                .is_ok()
        );
        let e = mpi
            .check("b", &job(TaskOptions::new().mpi(0, 4)), &[])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
