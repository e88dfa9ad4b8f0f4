//! The job driver: the life of every task of a job, once, for every executor. It owns the
//! task states (queued → running(attempt) → retrying → finished), attempt numbers (they
//! continue across executors and clients), retries with backoff and jitter, cancellation, and
//! durable outcomes (stored before reported, in group commits, see [`commit`]); the executor
//! only launches attempts and says how each ended.

mod commit;
pub(crate) mod inputs;
pub(crate) mod stored;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::error::Result;
use crate::raw::backend::{EventStream, JobSpec, TaskEvent};
use crate::raw::envelope::Outcome;
use crate::raw::executor::{
    Attempt, AttemptEnd, AttemptEnds, Ended, Executor, ExecutorJob, OpenRequest,
};
use crate::storage::Storage;
use crate::types::options::saturating_after;
use crate::types::task_error::{TaskError, TaskErrorKind};

use commit::{CommitItem, Committer};
use inputs::Inputs;

/// What the driver of one job needs.
pub(crate) struct DriveRequest {
    pub(crate) spec: Arc<JobSpec>,
    pub(crate) storage: Storage,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) inputs: Arc<Inputs>,
    /// The tasks to run, each with the last attempt already made (0: none).
    pub(crate) todo: Vec<(u64, u32)>,
    /// The job was started earlier: the executor may still run some of its attempts.
    pub(crate) follow: bool,
    /// Store outcomes, attempt records and logs before reporting them (a job that can be
    /// attached to); otherwise report them as they come (a single call: the session stores
    /// its record, outcome included, in one object).
    pub(crate) durable: bool,
    /// Whether the job is still wanted: one cleaned up while it ran stores nothing more.
    pub(crate) keep: Keep,
}

/// A test of whether a job is still wanted (see [`DriveRequest::keep`]).
pub(crate) type Keep = Arc<dyn Fn() -> bool + Send + Sync>;

/// A driven job: its events (ending after the last task's `Finished`) and a handle.
pub(crate) struct Driving {
    pub(crate) events: EventStream,
    pub(crate) handle: DriverHandle,
}

impl Driving {
    /// A job with nothing left to run.
    pub(crate) fn nothing_to_run() -> Driving {
        Driving {
            events: Box::pin(futures::stream::empty()),
            handle: DriverHandle { commands: None },
        }
    }
}

enum Command {
    Cancel(oneshot::Sender<u64>),
}

/// Controls a running driver.
#[derive(Debug, Clone)]
pub(crate) struct DriverHandle {
    commands: Option<mpsc::UnboundedSender<Command>>,
}

impl DriverHandle {
    /// Stops the job's unfinished tasks; each ends with a `Cancelled` error. Returns how many.
    pub(crate) async fn cancel(&self) -> u64 {
        let Some(commands) = &self.commands else {
            return 0;
        };
        let (reply, rx) = oneshot::channel();
        if commands.send(Command::Cancel(reply)).is_err() {
            return 0; // the job is over
        }
        rx.await.unwrap_or(0)
    }
}

/// Opens the job on its executor, launches the attempts it needs, and drives it from a
/// background task. Fails when the executor cannot open the job or launch its first attempts.
pub(crate) async fn drive(request: DriveRequest) -> Result<Driving> {
    if request.todo.is_empty() {
        return Ok(Driving::nothing_to_run());
    }
    let (events_tx, events_rx) = futures::channel::mpsc::unbounded();
    let spec = request.spec.clone();
    let opened = request
        .executor
        .open(OpenRequest::new(spec.clone(), request.storage.clone()).following(request.follow))
        .await?;
    let running: HashMap<u64, u32> = opened.running.iter().copied().collect();
    let mut driver = Driver {
        attempts: vec![0; spec.task_count as usize],
        done: vec![true; spec.task_count as usize],
        remaining: 0,
        delayed: BinaryHeap::new(),
        waiting: VecDeque::new(),
        launched: 0,
        window: request
            .executor
            .capabilities()
            .max_launched
            .unwrap_or(u64::MAX)
            .max(1),
        job: opened.job,
        spec: spec.clone(),
        inputs: request.inputs,
        events: events_tx.clone(),
        commit: None,
    };
    for (task, last) in request.todo {
        let Some(slot) = driver.attempts.get_mut(task as usize) else {
            continue;
        };
        driver.done[task as usize] = false;
        driver.remaining += 1;
        match running.get(&task) {
            // An attempt the executor still has, newer than the last one known to have ended.
            Some(&attempt) if attempt > last => {
                *slot = attempt;
                driver.launched += 1;
            }
            _ => {
                *slot = last.saturating_add(1);
                driver.waiting.push_back(task);
            }
        }
    }
    if let Err(e) = driver.launch_waiting().await {
        driver.job.close().await;
        return Err(e);
    }
    let (commit_tx, commit_rx) = mpsc::unbounded_channel();
    driver.commit = Some(commit_tx);
    let committer = Committer {
        storage: request.storage,
        job: spec.id.clone(),
        function: spec.function.clone(),
        executor: request.executor.name().to_string(),
        durable: request.durable,
        keep: request.keep,
    };
    tokio::spawn(committer.run(commit_rx, events_tx));
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let span = tracing::debug_span!("driver", job = %spec.id);
    tokio::spawn(driver.run(opened.ends, commands_rx).instrument(span));
    Ok(Driving {
        events: Box::pin(events_rx),
        handle: DriverHandle {
            commands: Some(commands_tx),
        },
    })
}

/// One job's task states, a few bytes per task.
struct Driver {
    /// The current attempt of each task (0: none yet).
    attempts: Vec<u32>,
    /// Whether each task is finished (or not this driver's to run).
    done: Vec<bool>,
    remaining: u64,
    /// Retries waiting for their backoff: (due, task).
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Tasks whose next attempt waits for room in the executor's window.
    waiting: VecDeque<u64>,
    /// Attempts launched that have not ended.
    launched: u64,
    /// The most attempts the executor takes at once (`Capabilities::max_launched`).
    window: u64,
    job: Box<dyn ExecutorJob>,
    spec: Arc<JobSpec>,
    inputs: Arc<Inputs>,
    events: futures::channel::mpsc::UnboundedSender<TaskEvent>,
    commit: Option<mpsc::UnboundedSender<CommitItem>>,
}

impl Driver {
    async fn run(mut self, mut ends: AttemptEnds, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut commands_open = true;
        while self.remaining > 0 {
            let due = self.delayed.peek().map(|Reverse((at, _))| *at);
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                command = commands.recv(), if commands_open => match command {
                    Some(Command::Cancel(reply)) => {
                        let n = self.cancel().await;
                        let _ = reply.send(n);
                    }
                    None => commands_open = false,
                },
                end = ends.next() => match end {
                    Some(end) => {
                        self.on_end(end);
                        // Take every end already waiting before launching more.
                        while let Some(Some(end)) = ends.now_or_never_ready() {
                            self.on_end(end);
                        }
                        self.launch_more().await;
                    }
                    None => {
                        self.end_all(
                            TaskErrorKind::Lost,
                            "the executor stopped reporting before this task finished",
                        );
                    }
                },
                () = sleep => {
                    self.move_due();
                    self.launch_more().await;
                }
            }
        }
        self.job.close().await;
        tracing::debug!("job finished");
    }

    /// A task error of the job's function.
    fn error(&self, task: u64, attempt: u32, kind: TaskErrorKind, message: &str) -> TaskError {
        let mut e = TaskError::new(kind, message);
        e.function = self.spec.function.clone();
        e.job = self.spec.id.clone();
        e.task = task;
        e.attempt = attempt;
        e
    }

    fn on_end(&mut self, end: AttemptEnd) {
        let task = end.task as usize;
        if self.done.get(task).is_none_or(|&d| d) || self.attempts[task] != end.attempt {
            tracing::debug!(
                task = end.task,
                attempt = end.attempt,
                "a stale attempt end is ignored"
            );
            return;
        }
        self.launched = self.launched.saturating_sub(1);
        let options = &self.spec.options;
        if let Outcome::Err(error) = end.outcome()
            && error.is_retryable()
            && end.attempt <= options.retries
            && !end.final_attempt
        {
            let next = end.attempt.saturating_add(1);
            let _ = self.events.unbounded_send(TaskEvent::Retrying {
                task: end.task,
                error: error.clone(),
            });
            self.attempts[task] = next;
            let wait = with_jitter(options.backoff_for(next));
            self.delayed
                .push(Reverse((saturating_after(Instant::now(), wait), end.task)));
            self.commit(end, false);
            return;
        }
        self.done[task] = true;
        self.remaining -= 1;
        self.commit(end, true);
    }

    fn commit(&self, end: AttemptEnd, last: bool) {
        if let Some(commit) = &self.commit {
            let _ = commit.send(CommitItem { end, last });
        }
    }

    /// Moves the retries whose backoff has passed to the front of the waiting tasks.
    fn move_due(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, task))) = self.delayed.peek() {
            if at > now {
                break;
            }
            self.delayed.pop();
            if !self.done[task as usize] {
                self.waiting.push_front(task);
            }
        }
    }

    /// Launches waiting tasks while the executor's window has room.
    async fn launch_waiting(&mut self) -> Result<()> {
        let room = self.window.saturating_sub(self.launched);
        let n = usize::try_from(room)
            .unwrap_or(usize::MAX)
            .min(self.waiting.len());
        if n == 0 {
            return Ok(());
        }
        let attempts: Vec<Attempt> = self
            .waiting
            .drain(..n)
            .filter(|&task| !self.done[task as usize])
            .map(|task| self.inputs.attempt(task, self.attempts[task as usize]))
            .collect();
        self.launched += attempts.len() as u64;
        let ids: Vec<(u64, u32)> = attempts.iter().map(|a| (a.task, a.attempt)).collect();
        if let Err(e) = self.job.launch(attempts).await {
            // None of them started: each ends here, lost for good.
            let why = format!("the attempt could not be started: {e}");
            for (task, attempt) in ids {
                let error = self.error(task, attempt, TaskErrorKind::Lost, &why);
                let mut end = AttemptEnd::new(task, attempt, Ended::Reported(Outcome::Err(error)));
                end.final_attempt = true;
                self.on_end(end);
            }
            return Err(e);
        }
        Ok(())
    }

    /// [`Driver::launch_waiting`] in the running job: a failure ends those attempts (lost).
    async fn launch_more(&mut self) {
        if let Err(e) = self.launch_waiting().await {
            tracing::warn!(error = %e, "attempts could not be started");
        }
    }

    /// Ends every unfinished task with an error of `kind`; returns how many.
    fn end_all(&mut self, kind: TaskErrorKind, message: &str) -> u64 {
        self.delayed.clear();
        self.waiting.clear();
        let mut n = 0;
        for task in 0..self.done.len() {
            if self.done[task] {
                continue;
            }
            let attempt = self.attempts[task];
            let error = self.error(task as u64, attempt, kind, message);
            let mut end =
                AttemptEnd::new(task as u64, attempt, Ended::Reported(Outcome::Err(error)));
            end.final_attempt = true;
            self.on_end(end);
            n += 1;
        }
        n
    }

    async fn cancel(&mut self) -> u64 {
        if let Err(e) = self.job.stop().await {
            tracing::warn!(error = %e, "the executor could not stop the job's attempts");
        }
        let n = self.end_all(TaskErrorKind::Cancelled, "the job was cancelled");
        tracing::info!(cancelled = n, "job cancelled");
        n
    }
}

/// `wait` plus up to a tenth more, at random, so that retries of tasks that failed together
/// do not all start at the same instant.
fn with_jitter(wait: Duration) -> Duration {
    let extra = (wait / 10).mul_f64(fastrand::f64());
    wait.saturating_add(extra)
}

/// Polls a stream once without waiting.
trait NowOrNeverReady: futures::Stream + Unpin {
    fn now_or_never_ready(&mut self) -> Option<Option<Self::Item>> {
        futures::FutureExt::now_or_never(self.next())
    }
}

impl<S: futures::Stream + Unpin> NowOrNeverReady for S {}
