//! The compute backend contract: an object-safe trait with request and reply structs, declared
//! capabilities, and the events a backend reports as tasks finish.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::raw::envelope::Outcome;
use crate::storage::Storage;
use crate::types::options::TaskOptions;
use crate::types::result_ref::ResultLocation;
use crate::types::task_error::TaskError;

/// What a backend can do. Core checks every request against it; the conformance suite runs only
/// the cases a backend declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// `cancel` stops queued and running tasks.
    pub cancel: bool,
    /// Per-attempt timeouts are enforced.
    pub timeout: bool,
    /// Failed attempts are retried with backoff.
    pub retries: bool,
    /// A per-job concurrency limit is honoured.
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
}

impl Capabilities {
    /// Nothing declared; a backend sets what it supports.
    pub fn none() -> Self {
        Capabilities {
            cancel: false,
            timeout: false,
            retries: false,
            concurrency_limit: false,
            mpi: false,
            gpu: false,
            survives_client: false,
            max_tasks_per_job: None,
            max_payload: None,
            regions: 1,
        }
    }

    /// Checks a submission against what is declared; the error names what is missing.
    pub fn check(&self, backend: &str, job: &JobSpec, tasks: &[TaskInput]) -> Result<()> {
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
        if o.retries > 0 && !self.retries {
            return unsupported("retries (TaskOptions::retries)");
        }
        if o.concurrency.is_some() && !self.concurrency_limit {
            return unsupported("a concurrency limit (TaskOptions::concurrency)");
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
            && let Some(big) = tasks.iter().find(|t| t.args.len() as u64 > max)
        {
            return unsupported(&format!(
                "task {} with {} bytes of arguments (at most {max}); pass large data with \
                 Session::broadcast instead",
                big.index,
                big.args.len()
            ));
        }
        Ok(())
    }
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

/// One task's input.
#[derive(Debug, Clone)]
pub struct TaskInput {
    /// The task's index in its job.
    pub index: u64,
    /// The encoded argument tuple.
    pub args: Bytes,
}

/// Start running tasks of a job.
#[derive(Debug)]
#[non_exhaustive]
pub struct SubmitRequest {
    /// The job.
    pub job: Arc<JobSpec>,
    /// The tasks to run (all of them, or the unfinished ones when resuming).
    pub tasks: Vec<TaskInput>,
    /// The session's storage; results go under its layout.
    pub storage: Storage,
    /// The caller has no way to attach to this job (a single `call`), so a backend may report
    /// a task finished as soon as it has the outcome and store it right after. Without this,
    /// a task is reported only once its outcome is stored.
    pub report_before_stored: bool,
}

impl SubmitRequest {
    /// A submit request; outcomes are stored before they are reported.
    pub fn new(job: Arc<JobSpec>, tasks: Vec<TaskInput>, storage: Storage) -> Self {
        SubmitRequest {
            job,
            tasks,
            storage,
            report_before_stored: false,
        }
    }

    /// Lets the backend report outcomes before they are stored (see the field).
    pub fn report_before_stored(mut self, allowed: bool) -> Self {
        self.report_before_stored = allowed;
        self
    }
}

/// The events of a submitted job; the stream ends after the last task's `Finished`.
pub type EventStream = Pin<Box<dyn Stream<Item = TaskEvent> + Send>>;

/// The reply to a submit: the stream of the job's events.
#[non_exhaustive]
pub struct SubmitReply {
    /// Events as tasks retry and finish.
    pub events: EventStream,
    /// The backend stored the job's packed inputs at the layout's `input` key itself (it needed
    /// them before the session would write them), so the session does not write them again.
    pub inputs_stored: bool,
}

impl SubmitReply {
    /// A reply carrying an event stream.
    pub fn new(events: EventStream) -> Self {
        SubmitReply {
            events,
            inputs_stored: false,
        }
    }

    /// Says the backend stored the job's packed inputs (see the field).
    pub fn with_inputs_stored(mut self, stored: bool) -> Self {
        self.inputs_stored = stored;
        self
    }
}

impl fmt::Debug for SubmitReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitReply").finish_non_exhaustive()
    }
}

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
}

/// Stop a job's queued and running tasks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CancelRequest {
    /// The job id.
    pub job: String,
}

impl CancelRequest {
    /// Cancel the job `job`.
    pub fn new(job: impl Into<String>) -> Self {
        CancelRequest { job: job.into() }
    }
}

/// The reply to a cancel.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CancelReply {
    /// How many tasks were stopped before they finished.
    pub cancelled: u64,
}

/// Release what the backend holds (worker processes, pools, cloud jobs).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CleanupRequest {}

/// The reply to a cleanup.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CleanupReply {
    /// What was released, in words.
    pub released: Vec<String>,
}

/// A compute backend: runs the tasks of jobs and reports their outcomes.
#[async_trait]
pub trait ComputeBackend: Send + Sync + fmt::Debug + 'static {
    /// The backend's name as used in configuration (`local`, `azure-batch`, ...).
    fn name(&self) -> &str;

    /// What the backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Starts the tasks of a job; returns once they are accepted.
    async fn submit(&self, request: SubmitRequest) -> Result<SubmitReply>;

    /// Follows the unfinished tasks (`request.tasks`) of a job submitted earlier, maybe by
    /// another client, whose tasks kept running without it (backends that declare
    /// `survives_client`): reports each as it finishes, retrying as `submit` would.
    async fn watch(&self, request: SubmitRequest) -> Result<SubmitReply> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "backend `{}` cannot follow the running tasks of job {} started earlier",
                self.name(),
                request.job.id
            ),
        ))
    }

    /// Stops a job's unfinished tasks; each ends as `Finished` with a `Cancelled` error.
    async fn cancel(&self, request: CancelRequest) -> Result<CancelReply>;

    /// Releases what the backend holds.
    async fn cleanup(&self, request: CleanupRequest) -> Result<CleanupReply>;
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
