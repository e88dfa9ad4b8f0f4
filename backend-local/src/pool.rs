//! The dispatcher: one task that owns the worker processes, the queue of attempts, timeouts,
//! stopping and crash handling, and reports how each attempt ended to its job's driver.
//! Everything goes through its channels, so its state needs no lock.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::channel::mpsc::UnboundedSender;
use redwood_core::raw::backend::JobSpec;
use redwood_core::raw::envelope::{Outcome, TaskEnvelope};
use redwood_core::raw::executor::{Attempt, AttemptEnd, Ended};
use redwood_core::types::options::saturating_after;
use redwood_core::{Storage, TaskError, TaskErrorKind};
use std::os::unix::process::ExitStatusExt;
use tokio::sync::{mpsc, oneshot};

use crate::fetch::{Fetcher, Payload};
use crate::process::{WorkerEvent, WorkerProcess, spawn_worker};
use crate::protocol::{FromWorker, ToWorker, encode_frame};

/// The most tasks queued on one worker's pipe when tasks are short.
const MAX_PIPELINE: usize = 8;
/// Tasks slower than this (moving average) are sent one at a time, for balance.
const PIPELINE_BELOW: Duration = Duration::from_millis(1);
/// Finished tasks a job needs before its average run time is trusted for pipelining.
const PIPELINE_AFTER_SAMPLES: u32 = 16;
/// Workers that die before saying ready this many times in a row fail the queued tasks.
const MAX_STARTUP_FAILURES: u32 = 3;

/// Requests to the dispatcher.
pub(crate) enum Command {
    Open {
        spec: Arc<JobSpec>,
        storage: Storage,
        ends: UnboundedSender<AttemptEnd>,
    },
    Launch {
        job: Arc<str>,
        attempts: Vec<Attempt>,
    },
    Stop {
        job: Arc<str>,
    },
    Close {
        job: Arc<str>,
    },
    Shutdown {
        reply: oneshot::Sender<usize>,
    },
}

/// A handle to a running dispatcher.
#[derive(Debug, Clone)]
pub(crate) struct PoolHandle {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

/// Starts the dispatcher with `size` workers running `exe`.
pub(crate) fn start_pool(exe: PathBuf, size: usize) -> PoolHandle {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (worker_tx, worker_rx) = mpsc::unbounded_channel();
    let mut pool = Pool {
        exe,
        size,
        slots: Vec::new(),
        next_worker_id: 0,
        next_seq: 0,
        queue: VecDeque::new(),
        jobs: HashMap::new(),
        worker_tx,
        startup_failures: 0,
        last_error: None,
        fetcher: Fetcher::new(),
    };
    for _ in 0..size {
        pool.spawn_slot();
    }
    tokio::spawn(pool.run(command_rx, worker_rx));
    PoolHandle { commands }
}

/// An attempt waiting to run.
#[derive(Debug, Clone)]
struct Pending {
    job: Arc<str>,
    task: u64,
    attempt: u32,
    args: Bytes,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    pending: Pending,
    pipelined: bool,
}

#[derive(Debug)]
enum KillReason {
    Timeout(Duration),
    Cancel,
    Protocol(String),
}

struct Slot {
    process: WorkerProcess,
    inflight: VecDeque<InFlight>,
    /// When the task at the head of `inflight` started.
    head_since: Instant,
    head_started_at: SystemTime,
    ready: bool,
    killing: Option<KillReason>,
}

struct JobRun {
    spec: Arc<JobSpec>,
    storage: Storage,
    ends: UnboundedSender<AttemptEnd>,
    running: usize,
    /// Moving average of task run time, in microseconds.
    avg_us: f64,
    /// How many run times went into `avg_us`.
    samples: u32,
}

impl JobRun {
    /// Whether tasks of this job may queue on a busy worker: only when they are known to be
    /// short, so that a quick task never waits behind a slow one while another worker idles.
    fn pipelined(&self) -> bool {
        self.spec.options.timeout.is_none()
            && self.samples >= PIPELINE_AFTER_SAMPLES
            && self.avg_us < PIPELINE_BELOW.as_micros() as f64
    }

    fn at_limit(&self) -> bool {
        self.spec
            .options
            .concurrency
            .is_some_and(|limit| self.running >= limit)
    }
}

struct Pool {
    exe: PathBuf,
    size: usize,
    slots: Vec<Slot>,
    next_worker_id: u32,
    next_seq: u64,
    queue: VecDeque<Pending>,
    jobs: HashMap<Arc<str>, JobRun>,
    worker_tx: mpsc::UnboundedSender<WorkerEvent>,
    startup_failures: u32,
    last_error: Option<String>,
    /// Serves the objects running tasks ask for.
    fetcher: Fetcher,
}

impl Pool {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut workers: mpsc::UnboundedReceiver<WorkerEvent>,
    ) {
        loop {
            self.dispatch();
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                event = workers.recv() => {
                    if let Some(event) = event {
                        self.on_worker_event(event);
                        // Take every event already waiting before dispatching again.
                        while let Ok(event) = workers.try_recv() {
                            self.on_worker_event(event);
                        }
                    }
                }
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        self.shutdown();
                        return;
                    }
                },
                () = sleep => self.on_timer(),
            }
        }
    }

    fn spawn_slot(&mut self) {
        let id = self.next_worker_id;
        self.next_worker_id += 1;
        match spawn_worker(id, &self.exe, self.worker_tx.clone()) {
            Ok(process) => {
                tracing::debug!(worker = id, pid = ?process.pid, "worker started");
                self.slots.push(Slot {
                    process,
                    inflight: VecDeque::new(),
                    head_since: Instant::now(),
                    head_started_at: SystemTime::now(),
                    ready: false,
                    killing: None,
                })
            }
            Err(e) => {
                let msg = format!("cannot start worker {}: {e}", self.exe.display());
                tracing::error!("{msg}");
                self.startup_failures += 1;
                self.last_error = Some(msg);
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Open {
                spec,
                storage,
                ends,
            } => {
                let job: Arc<str> = Arc::from(spec.id.as_str());
                tracing::debug!(job = %job, "job opened");
                self.jobs.insert(
                    job,
                    JobRun {
                        spec,
                        storage,
                        ends,
                        running: 0,
                        avg_us: 0.0,
                        samples: 0,
                    },
                );
            }
            Command::Launch { job, attempts } => {
                if !self.jobs.contains_key(&job) {
                    return;
                }
                self.queue.extend(attempts.into_iter().map(|a| Pending {
                    job: job.clone(),
                    task: a.task,
                    attempt: a.attempt,
                    args: a.args,
                }));
                // New work gets fresh workers even after start-up failures.
                self.startup_failures = 0;
                while self.slots.len() < self.size && self.startup_failures < MAX_STARTUP_FAILURES {
                    self.spawn_slot();
                }
                if self.slots.is_empty() {
                    self.fail_all_queued();
                }
            }
            Command::Stop { job } => self.stop(&job),
            Command::Close { job } => {
                tracing::debug!(job = %job, "job closed");
                self.jobs.remove(&job);
            }
            Command::Shutdown { reply } => {
                let n = self.slots.len();
                self.shutdown();
                let _ = reply.send(n);
            }
        }
    }

    /// Sends queued tasks to workers with room for them.
    fn dispatch(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let n = self.slots.len();
        for s in 0..n {
            while let Some(pending) = self.next_for(s).and_then(|pos| self.queue.remove(pos)) {
                self.send(s, pending);
            }
            if self.queue.is_empty() {
                return;
            }
        }
    }

    /// The queue position of the next task worker `s` may take now.
    fn next_for(&self, s: usize) -> Option<usize> {
        let slot = &self.slots[s];
        if slot.killing.is_some() {
            return None;
        }
        let busy = !slot.inflight.is_empty();
        if busy
            && (slot.inflight.len() >= MAX_PIPELINE || !slot.inflight.iter().all(|f| f.pipelined))
        {
            return None;
        }
        // Look a little way down the queue past jobs at their concurrency limit.
        for (pos, p) in self.queue.iter().enumerate().take(256) {
            let Some(job) = self.jobs.get(&p.job) else {
                return Some(pos); // a job gone (cancelled): taken and dropped by `send`
            };
            if job.at_limit() {
                continue;
            }
            if busy && !job.pipelined() {
                return None;
            }
            return Some(pos);
        }
        None
    }

    fn send(&mut self, s: usize, pending: Pending) {
        let Some(job) = self.jobs.get_mut(&pending.job) else {
            return;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let envelope = TaskEnvelope {
            job: job.spec.id.clone(),
            task: pending.task,
            attempt: pending.attempt,
            function: job.spec.function.clone(),
            signature: job.spec.signature,
            binary: job.spec.binary.clone(),
            args: pending.args.to_vec(),
        };
        let frame = match encode_frame(&ToWorker::Run { seq, envelope }) {
            Ok(f) => f,
            Err(e) => {
                let error = task_error(&job.spec, &pending, TaskErrorKind::Decode, e.to_string());
                self.report(pending, Outcome::Err(error), None, None);
                return;
            }
        };
        job.running += 1;
        let pipelined = job.pipelined();
        let slot = &mut self.slots[s];
        if slot.inflight.is_empty() {
            slot.head_since = Instant::now();
            slot.head_started_at = SystemTime::now();
        }
        slot.inflight.push_back(InFlight {
            seq,
            pending,
            pipelined,
        });
        // A closed pipe shows up as the worker's exit, which requeues the task.
        let _ = slot.process.tx.send(Bytes::from(frame));
    }

    fn slot_index(&self, id: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.process.id == id)
    }

    fn on_worker_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Message(id, msg) => {
                let Some(s) = self.slot_index(id) else { return };
                match msg {
                    FromWorker::Ready { pid, binary } => {
                        tracing::debug!(worker = id, pid, binary = %&binary[..binary.len().min(12)], "worker ready");
                        let slot = &mut self.slots[s];
                        slot.ready = true;
                        // Tasks sent while it started begin now: its start is not their time.
                        slot.head_since = Instant::now();
                        slot.head_started_at = SystemTime::now();
                        self.startup_failures = 0;
                    }
                    FromWorker::Done { seq, outcome } => self.on_done(s, seq, outcome),
                    FromWorker::Fetch {
                        id: fetch,
                        key,
                        range,
                    } => self.on_fetch(s, fetch, key, range),
                    FromWorker::Released { id: fetch } => self.fetcher.release(id, fetch),
                }
            }
            WorkerEvent::Exited {
                id,
                status,
                stderr_tail,
                error,
            } => self.on_exit(id, status, stderr_tail, error),
        }
    }

    fn on_done(&mut self, s: usize, seq: u64, outcome: Outcome) {
        let slot = &mut self.slots[s];
        let Some(head) = slot.inflight.pop_front() else {
            self.kill(s, KillReason::Protocol(format!("reply {seq} for no task")));
            return;
        };
        if head.seq != seq {
            let reason = format!("reply {seq} while task {} was running", head.seq);
            slot.inflight.push_front(head);
            self.kill(s, KillReason::Protocol(reason));
            return;
        }
        let now = Instant::now();
        let started_at = slot.head_started_at;
        let took = now - slot.head_since;
        slot.head_since = now;
        slot.head_started_at = SystemTime::now();
        let worker = slot.process.id;
        if let Some(job) = self.jobs.get_mut(&head.pending.job) {
            job.running = job.running.saturating_sub(1);
            let us = took.as_micros() as f64;
            job.avg_us = if job.avg_us == 0.0 {
                us
            } else {
                0.8 * job.avg_us + 0.2 * us
            };
        }
        self.report(head.pending, outcome, Some(started_at), Some(worker));
    }

    /// Tells the attempt's job how it ended.
    fn report(
        &mut self,
        pending: Pending,
        outcome: Outcome,
        started: Option<SystemTime>,
        worker: Option<u32>,
    ) {
        self.report_end(pending, outcome, started, worker, false);
    }

    fn report_end(
        &mut self,
        pending: Pending,
        outcome: Outcome,
        started: Option<SystemTime>,
        worker: Option<u32>,
        final_attempt: bool,
    ) {
        let Some(job) = self.jobs.get(&pending.job) else {
            return;
        };
        let mut end = AttemptEnd::new(pending.task, pending.attempt, Ended::Reported(outcome));
        end.started = started;
        end.worker = worker;
        end.final_attempt = final_attempt;
        let _ = job.ends.unbounded_send(end);
    }

    fn on_fetch(&mut self, s: usize, id: u64, key: String, range: Option<(u64, u64)>) {
        let slot = &self.slots[s];
        let storage = slot
            .inflight
            .front()
            .and_then(|f| self.jobs.get(&f.pending.job))
            .map(|j| j.storage.clone());
        let tx = slot.process.tx.clone();
        let worker = slot.process.id;
        let fetcher = self.fetcher.clone();
        tokio::spawn(async move {
            let result = match storage {
                Some(storage) => fetcher.fetch(storage, key.clone(), range).await,
                None => Err("no running task to fetch for".to_string()),
            };
            let frame = match result {
                Ok(Payload::Inline(bytes)) => {
                    let header = ToWorker::Fetched {
                        id,
                        result: Ok(bytes.len() as u64),
                    };
                    encode_frame(&header).map(|f| (f, Some(bytes)))
                }
                Ok(Payload::File(file)) => {
                    let header = ToWorker::FetchedFile {
                        id,
                        path: file.path.display().to_string(),
                        len: file.len,
                    };
                    fetcher.hold(worker, id, file);
                    encode_frame(&header).map(|f| (f, None))
                }
                Err(e) => {
                    let header = ToWorker::Fetched {
                        id,
                        result: Err(format!("{e} (while fetching {key})")),
                    };
                    encode_frame(&header).map(|f| (f, None))
                }
            };
            if let Ok((frame, payload)) = frame {
                let _ = tx.send(Bytes::from(frame));
                if let Some(payload) = payload {
                    // The same bytes for every worker that asked: no copy.
                    let _ = tx.send(payload);
                }
            }
        });
    }

    fn on_exit(
        &mut self,
        id: u32,
        status: Option<std::process::ExitStatus>,
        stderr_tail: String,
        error: Option<String>,
    ) {
        self.fetcher.release_worker(id);
        let Some(s) = self.slot_index(id) else { return };
        let slot = self.slots.swap_remove(s);
        let never_ready = !slot.ready && slot.killing.is_none();
        if never_ready {
            self.startup_failures += 1;
            self.last_error = Some(format!(
                "worker {id} exited before it was ready ({}{}). Note: {}{}",
                describe_status(status),
                error
                    .as_deref()
                    .map(|e| format!(", {e}"))
                    .unwrap_or_default(),
                redwood_core::raw::worker::MISSING_ENTRY_HINT,
                if stderr_tail.trim().is_empty() {
                    String::new()
                } else {
                    format!("\n--- worker stderr (tail) ---\n{}", stderr_tail.trim())
                },
            ));
        }
        tracing::debug!(worker = id, status = %describe_status(status), ?error, "worker exited");
        let mut inflight = slot.inflight;
        // A worker that never said ready never started a task: all of them go back. So do
        // those of a worker killed to stop another job's tasks (already taken out).
        let head = if never_ready || matches!(slot.killing, Some(KillReason::Cancel)) {
            None
        } else {
            inflight.pop_front()
        };
        if let Some(head) = head
            && let Some(job) = self.jobs.get_mut(&head.pending.job)
        {
            job.running = job.running.saturating_sub(1);
            let spec = job.spec.clone();
            let (kind, message) = match &slot.killing {
                Some(KillReason::Timeout(limit)) => (
                    TaskErrorKind::Timeout,
                    format!("ran longer than its timeout of {limit:?}; its worker was killed"),
                ),
                Some(KillReason::Protocol(why)) => (
                    TaskErrorKind::Lost,
                    format!("the worker broke the protocol ({why}) and was replaced"),
                ),
                Some(KillReason::Cancel) => {
                    (TaskErrorKind::Cancelled, "the job was cancelled".into())
                }
                None => (
                    TaskErrorKind::Crash,
                    match status.and_then(|s| s.signal()) {
                        Some(sig) => format!(
                            "the worker process was killed{}",
                            redwood_core::types::task_error::killed_by(sig)
                        ),
                        None => "the worker process died".to_string(),
                    },
                ),
            };
            let mut e = task_error(&spec, &head.pending, kind, message);
            if let Some(status) = status {
                e.exit_code = status.code();
                e.signal = status.signal();
            }
            if kind == TaskErrorKind::Crash {
                e.stderr_tail = Some(stderr_tail.clone());
            }
            let started = Some(slot.head_started_at);
            self.report(head.pending, Outcome::Err(e), started, Some(id));
        }
        // Tasks queued behind the head never started: they go back to the front of the queue.
        for f in inflight.into_iter().rev() {
            if let Some(job) = self.jobs.get_mut(&f.pending.job) {
                job.running = job.running.saturating_sub(1);
                self.queue.push_front(f.pending);
            }
        }
        if self.startup_failures >= MAX_STARTUP_FAILURES {
            self.fail_all_queued();
        } else if self.slots.len() < self.size {
            self.spawn_slot();
        }
    }

    /// Fails every queued attempt for good: workers cannot start.
    fn fail_all_queued(&mut self) {
        let why = self
            .last_error
            .clone()
            .unwrap_or_else(|| "worker processes cannot start".into());
        tracing::error!("failing queued tasks: {why}");
        let message = format!("no worker could run it: {why}");
        let all: Vec<Pending> = self.queue.drain(..).collect();
        for p in all {
            let Some(job) = self.jobs.get(&p.job) else {
                continue;
            };
            let e = task_error(&job.spec, &p, TaskErrorKind::Lost, message.clone());
            self.report_end(p, Outcome::Err(e), None, None, true);
        }
    }

    fn kill(&mut self, s: usize, reason: KillReason) {
        let slot = &mut self.slots[s];
        if slot.killing.is_none() {
            tracing::debug!(worker = slot.process.id, ?reason, "killing worker");
            slot.killing = Some(reason);
            slot.process.kill();
        }
    }

    /// Drops the job's queued attempts and kills the workers running its others; the driver
    /// ends them itself.
    fn stop(&mut self, job: &str) {
        self.queue.retain(|p| &*p.job != job);
        for s in 0..self.slots.len() {
            let slot = &mut self.slots[s];
            let before = slot.inflight.len();
            slot.inflight.retain(|f| &*f.pending.job != job);
            if slot.inflight.len() != before {
                if let Some(run) = self.jobs.get_mut(job) {
                    run.running = run.running.saturating_sub(before - slot.inflight.len());
                }
                // Its other tasks (of other jobs) are requeued when the exit is seen.
                self.kill(s, KillReason::Cancel);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.killing.is_none())
            .filter_map(|s| {
                let head = s.inflight.front()?;
                let limit = self.jobs.get(&head.pending.job)?.spec.options.timeout?;
                Some(saturating_after(s.head_since, limit))
            })
            .min()
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        for s in 0..self.slots.len() {
            let slot = &self.slots[s];
            if slot.killing.is_some() {
                continue;
            }
            let limit = slot
                .inflight
                .front()
                .and_then(|h| self.jobs.get(&h.pending.job))
                .and_then(|j| j.spec.options.timeout);
            if let Some(limit) = limit
                && saturating_after(slot.head_since, limit) <= now
            {
                self.kill(s, KillReason::Timeout(limit));
            }
        }
    }

    fn shutdown(&mut self) {
        for s in 0..self.slots.len() {
            self.slots[s].process.kill();
        }
        // The drivers of jobs still open end their tasks when their ends stream closes.
        self.queue.clear();
        self.jobs.clear();
        self.slots.clear();
    }
}

fn task_error(spec: &JobSpec, p: &Pending, kind: TaskErrorKind, message: String) -> TaskError {
    let mut e = TaskError::new(kind, message);
    e.function = spec.function.clone();
    e.job = spec.id.clone();
    e.task = p.task;
    e.attempt = p.attempt;
    e
}

fn describe_status(status: Option<std::process::ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "unknown exit".into(),
        },
        None => "exit status unknown".into(),
    }
}
