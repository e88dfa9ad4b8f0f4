//! The executor contract: what a backend does for the job driver. An executor runs attempts
//! and says how each ended; everything else about a task's life (attempt numbers, retries and
//! their backoff, storing outcomes, events, cancellation, attach) is the driver's, in core.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::raw::backend::{Capabilities, CleanupReply, CleanupRequest, JobSpec};
use crate::raw::envelope::Outcome;
use crate::storage::Storage;
use crate::types::result_ref::ResultLocation;

/// One attempt of one task, to run.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The task's index in its job.
    pub task: u64,
    /// The attempt number (1 is the first). It continues across executors and clients.
    pub attempt: u32,
    /// The encoded argument tuple.
    pub args: Bytes,
    /// Where the arguments are inside the job's stored input (`jobs/<job>/input`), for
    /// executors whose workers read them from storage.
    pub range: (u64, u64),
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Ended {
    /// The worker stored the outcome itself, at `location` (under the job's `results/`).
    Stored {
        /// The stored outcome, as read back.
        outcome: Outcome,
        /// Where it is.
        location: ResultLocation,
    },
    /// The executor has the outcome and the driver stores it: a value or error from the
    /// worker, or the error of an attempt that died (crash, timeout, node lost, cancelled).
    Reported(Outcome),
}

/// The end of one attempt.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    /// The task's index.
    pub task: u64,
    /// The attempt that ended.
    pub attempt: u32,
    /// How.
    pub ended: Ended,
    /// When it started, if known.
    pub started: Option<SystemTime>,
    /// When it ended.
    pub finished: SystemTime,
    /// The worker (local) that ran it, if known.
    pub worker: Option<u32>,
    /// The node (cloud) that ran it, if known.
    pub node: Option<String>,
    /// How often the platform put it back in its queue because its node was lost (not a
    /// retry: the attempt started over elsewhere).
    pub requeues: u32,
    /// The executor knows no further attempt can succeed (no node can run the task, say):
    /// the driver does not retry it.
    pub final_attempt: bool,
    /// The tail of the attempt's stderr, when there is one worth keeping (stored at
    /// `jobs/<job>/tasks/<n>/log` when it is the task's last attempt; without it, the stderr
    /// tail of a failure is stored there).
    pub log: Option<String>,
    /// The region that ran it, when the session has several (the driver sets it).
    pub region: Option<String>,
}

impl AttemptEnd {
    /// An attempt that ended now with `ended`, nothing else known.
    pub fn new(task: u64, attempt: u32, ended: Ended) -> Self {
        AttemptEnd {
            task,
            attempt,
            ended,
            started: None,
            finished: SystemTime::now(),
            worker: None,
            node: None,
            requeues: 0,
            final_attempt: false,
            log: None,
            region: None,
        }
    }

    /// The outcome, however it ended.
    pub fn outcome(&self) -> &Outcome {
        match &self.ended {
            Ended::Stored { outcome, .. } | Ended::Reported(outcome) => outcome,
        }
    }
}

/// The ends of a job's attempts, as they happen. The stream ends when the executor can report
/// nothing more (its job was closed or stopped, or the executor is gone).
pub type AttemptEnds = BoxStream<'static, AttemptEnd>;

/// Open a job on an executor.
#[derive(Debug)]
#[non_exhaustive]
pub struct OpenRequest {
    /// The job.
    pub job: Arc<JobSpec>,
    /// The session's storage; inputs and results are under its layout.
    pub storage: Storage,
    /// The job was started earlier (maybe by another client) and is being attached to: an
    /// executor whose tasks survive the client says which attempts are still its own.
    pub follow: bool,
}

impl OpenRequest {
    /// Opens `job` afresh.
    pub fn new(job: Arc<JobSpec>, storage: Storage) -> Self {
        OpenRequest {
            job,
            storage,
            follow: false,
        }
    }

    /// Opens a job started earlier, to follow it (see the field).
    pub fn following(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }
}

/// An opened job: where to send attempts, and where their ends come back.
#[non_exhaustive]
pub struct Opened {
    /// Launches and stops the job's attempts.
    pub job: Box<dyn ExecutorJob>,
    /// The ends of the attempts.
    pub ends: AttemptEnds,
    /// When following: the attempts of the job the executor runs already, `(task, attempt)`;
    /// their ends come on `ends` like the others'.
    pub running: Vec<(u64, u32)>,
}

impl Opened {
    /// An opened job with no attempt running yet.
    pub fn new(job: Box<dyn ExecutorJob>, ends: AttemptEnds) -> Self {
        Opened {
            job,
            ends,
            running: Vec::new(),
        }
    }

    /// Says which attempts run already (see the field).
    pub fn with_running(mut self, running: Vec<(u64, u32)>) -> Self {
        self.running = running;
        self
    }
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

/// Whether an executor can take work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Reachable and making progress.
    Healthy,
    /// Not reachable, or not making progress; the reason in words.
    Unhealthy(String),
}

/// One job on an executor.
#[async_trait]
pub trait ExecutorJob: Send + Sync + 'static {
    /// Starts attempts. An error means none of them started (the driver ends them as lost).
    async fn launch(&self, attempts: Vec<Attempt>) -> Result<()>;

    /// Stops every attempt of the job that has not ended. The driver ends them as cancelled
    /// itself; ends reported afterwards are ignored.
    async fn stop(&self) -> Result<()>;

    /// The job is over (every task finished): releases what the executor holds for it.
    async fn close(&self);
}

/// A compute backend as the job driver sees it: it runs attempts on its platform (processes,
/// Batch tasks, queue messages) and reports how each ended; it knows nothing else of the
/// task's life.
#[async_trait]
pub trait Executor: Send + Sync + fmt::Debug + 'static {
    /// The executor's name as used in configuration (`local`, `azure-batch`, ...).
    fn name(&self) -> &str;

    /// What it supports.
    fn capabilities(&self) -> Capabilities;

    /// Opens a job: makes the platform ready for it (a pool, the program uploaded, a Batch
    /// job) and returns where to launch its attempts.
    async fn open(&self, request: OpenRequest) -> Result<Opened>;

    /// Whether it can take work now.
    async fn health(&self) -> Health {
        Health::Healthy
    }

    /// Releases what it holds (worker processes, pools, cloud jobs).
    async fn release(&self, request: CleanupRequest) -> Result<CleanupReply>;
}
