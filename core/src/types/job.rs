//! [`Job<T>`]: the tasks of one `map`, and every way to get their results.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::Instrument;

use crate::codec;
use crate::driver::inputs::Inputs;
use crate::driver::stored::read_stored;
use crate::driver::{DriveRequest, DriverHandle, Driving, drive};
use crate::error::{Error, ErrorKind, Result};
use crate::raw::backend::{Finished, JobSpec, TaskEvent};
use crate::raw::call_record::read_call_record;
use crate::raw::envelope::Outcome;
use crate::raw::manifest::JobManifest;
use crate::types::finished::{FinishedTable, OutcomeAt};
use crate::types::lease::Lease;
use crate::types::pending;
use crate::types::progress::Progress;
use crate::types::result_ref::{ResultLocation, ResultRef, decode_stored_result, read_location};
use crate::types::session::Session;
use crate::types::stats::RegionTasks;
use crate::types::stats::{JobStats, summarize};
use crate::types::task_error::{TaskError, TaskErrorKind};

/// How long to wait, in [`Job::wait`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaitFor {
    /// Until every task finished.
    All,
    /// Until at least one task finished.
    Any,
    /// Until this fraction of the tasks finished (0.0 < f ≤ 1.0).
    Fraction(f64),
}

/// Where a job stands after a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitSummary {
    /// Tasks in the job.
    pub total: u64,
    /// Tasks finished (successfully or not).
    pub finished: u64,
    /// Tasks that failed.
    pub failed: u64,
}

/// The results of a job as its tasks finish, from [`Job::results`]: `(task index, result)` in
/// completion order. A boxed stream, so it is `Unpin`: call `.next().await` on it directly.
pub type ResultStream<T> = futures::stream::BoxStream<'static, (u64, Result<T>)>;

/// The tasks of one `map` (or one `call`). Results stream as tasks finish
/// ([`Job::results`]), or come in task order ([`Job::collect`]), or fold ([`Job::reduce`]).
/// Every method takes `&self`: the job's [`Job::stats`] stay available after a `collect`, and a
/// `Job` is cheap to clone (clones share one state).
/// Dropping a `Job` does not cancel it; its results stay in storage for [`Job::attach`].
pub struct Job<T> {
    shared: Arc<JobShared>,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Clone for Job<T> {
    fn clone(&self) -> Self {
        Job {
            shared: self.shared.clone(),
            _marker: PhantomData,
        }
    }
}

impl<T> Job<T> {
    /// The job id (for [`Job::attach`], logs and the storage layout).
    pub fn id(&self) -> &str {
        &self.shared.spec.id
    }

    /// The session that submitted or attached to the job.
    pub fn session(&self) -> &Session {
        &self.shared.session
    }
}

impl<T> std::fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.state();
        f.debug_struct("Job")
            .field("id", &self.shared.spec.id)
            .field("function", &self.shared.spec.function)
            .field("finished", &s.finished)
            .field("total", &self.shared.spec.task_count)
            .finish()
    }
}

pub(crate) struct JobShared {
    spec: Arc<JobSpec>,
    session: Session,
    driver: DriverHandle,
    state: Mutex<JobState>,
    changed: watch::Sender<u64>,
}

pub(crate) struct JobState {
    pub(crate) table: FinishedTable,
    /// Task indices in the order they finished.
    order: Vec<u64>,
    pub(crate) finished: u64,
    pub(crate) failed: u64,
    pub(crate) retries: u64,
    pub(crate) submitted: Instant,
    pub(crate) done: Option<Instant>,
    /// The driver's event stream ended: every outcome and attempt record is stored.
    recorded: bool,
    /// Several regions: what each did.
    pub(crate) regions: Vec<RegionTasks>,
}

impl JobShared {
    fn state(&self) -> MutexGuard<'_, JobState> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters to readers, so a poisoned lock is taken over.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn total(&self) -> u64 {
        self.spec.task_count
    }

    /// A test of whether every task of the job has finished.
    fn finished_probe(self: &Arc<Self>) -> impl Fn() -> bool + Send + Sync + 'static {
        let shared = Arc::downgrade(self);
        move || {
            shared
                .upgrade()
                .is_none_or(|s| s.state().finished >= s.total())
        }
    }

    fn apply(&self, event: TaskEvent) {
        {
            let mut s = self.state();
            match event {
                TaskEvent::Retrying { task, error } => {
                    s.retries += 1;
                    tracing::debug!(job = %self.spec.id, task, error = %error, "task will be retried");
                }
                TaskEvent::Copied {
                    region,
                    objects,
                    bytes,
                } => {
                    let r = RegionTasks::entry(&mut s.regions, &region);
                    r.copied_objects += objects;
                    r.copied_bytes = r.copied_bytes.saturating_add(bytes);
                }
                TaskEvent::Moved { region, tasks } => {
                    RegionTasks::entry(&mut s.regions, &region).moved_out += tasks;
                }
                TaskEvent::Finished(finished) => {
                    let task = finished.task;
                    let region = finished.region.clone();
                    if !s.table.contains(task) {
                        tracing::warn!(job = %self.spec.id, task, "the driver reported an unknown task");
                        return;
                    }
                    let ok = finished.outcome.is_ok();
                    // At most one outcome per task: a late duplicate is ignored.
                    if !s.table.insert(*finished) {
                        return;
                    }
                    s.order.push(task);
                    s.finished += 1;
                    if !ok {
                        s.failed += 1;
                    }
                    if let Some(region) = &region {
                        let r = RegionTasks::entry(&mut s.regions, region);
                        if ok {
                            r.succeeded += 1;
                        } else {
                            r.failed += 1;
                        }
                    }
                    if s.finished == self.total() {
                        s.done = Some(Instant::now());
                    }
                }
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Marks every unfinished task as failed with `kind` (used when events stop or on cancel).
    fn finish_missing(&self, kind: TaskErrorKind, message: &str) {
        let missing = self.state().table.missing();
        for task in missing {
            let mut error = TaskError::new(kind, message);
            error.function = self.spec.function.clone();
            error.job = self.spec.id.clone();
            error.task = task;
            self.apply(TaskEvent::Finished(Box::new(Finished {
                task,
                attempt: 0,
                outcome: Outcome::Err(error),
                location: ResultLocation::nowhere(),
                started: None,
                finished: SystemTime::now(),
                worker: None,
                requeues: 0,
                region: None,
            })));
        }
    }

    /// The stored outcome at `location`.
    async fn read_back(&self, location: ResultLocation) -> Result<bytes::Bytes> {
        read_location(self.session.storage(), &location).await
    }

    /// Task `task`'s value, or its error: held values are decoded at once, others read back
    /// from storage.
    async fn decode<T: DeserializeOwned>(&self, task: u64) -> Result<T> {
        let context = |e: Error| {
            e.with_operation("decode result")
                .with_context("job", &self.spec.id)
                .with_context("task", task)
                .with_context("type", std::any::type_name::<T>())
        };
        let location = match self.state().table.outcome(task) {
            OutcomeAt::Pending => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("task {task} of job {} has not finished", self.spec.id),
                ));
            }
            OutcomeAt::Held(bytes) => return codec::decode(bytes).map_err(context),
            OutcomeAt::Failed(task_error) => return Err(Error::from_task(task_error.clone())),
            OutcomeAt::Stored(location) => location,
        };
        let bytes = self.read_back(location).await.map_err(context)?;
        decode_stored_result(&bytes).map_err(|e| match e.task_error() {
            Some(_) => e,
            None => context(e),
        })
    }

    /// Waits until `needed` tasks finished; waiting for all of them also waits for the job's
    /// events record, so a program that ends right after finds it stored.
    async fn wait_until(&self, needed: u64, label: &str) {
        let mut rx = self.changed.subscribe();
        let mut progress = Progress::new(
            self.session.progress_enabled(),
            self.total(),
            &self.spec.id,
            label,
        );
        loop {
            let (finished, failed, recorded, regions) = {
                let s = self.state();
                let regions = (!s.regions.is_empty()).then(|| RegionTasks::summary(&s.regions));
                (s.finished, s.failed, s.recorded, regions)
            };
            progress.update(finished, failed, regions.as_deref());
            if finished >= needed && (needed < self.total() || recorded) {
                progress.finish();
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

impl JobShared {
    /// Waits until `needed` tasks finished, without the events record (the `call` fast path).
    async fn wait_finished(&self, needed: u64) {
        let mut rx = self.changed.subscribe();
        while self.state().finished < needed {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> Job<T> {
    /// Starts tracking a driven job from its events (and outcomes already known).
    pub(crate) fn start(
        session: Session,
        spec: Arc<JobSpec>,
        driving: Driving,
        known: Vec<Finished>,
        lease: Option<Lease>,
    ) -> Job<T> {
        let total = spec.task_count as usize;
        let (changed, _) = watch::channel(0);
        let Driving { mut events, handle } = driving;
        let shared = Arc::new(JobShared {
            spec,
            session,
            driver: handle,
            state: Mutex::new(JobState {
                table: FinishedTable::new(total),
                order: Vec::with_capacity(total),
                finished: 0,
                failed: 0,
                retries: 0,
                submitted: Instant::now(),
                done: (total == 0).then(Instant::now),
                recorded: false,
                regions: Vec::new(),
            }),
            changed,
        });
        for finished in known {
            shared.apply(TaskEvent::Finished(Box::new(finished)));
        }
        // Registered now, so a flush right after the last task finished waits for the record.
        let pending = pending::register(shared.session.id(), shared.finished_probe());
        let follower = shared.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                follower.apply(event);
            }
            follower.finish_missing(
                TaskErrorKind::Lost,
                "the job driver stopped reporting before this task finished",
            );
            if let Some(lease) = lease {
                lease.release().await;
            }
            follower.state().recorded = true;
            follower.changed.send_modify(|v| *v += 1);
            drop(pending);
        });
        Job {
            shared,
            _marker: PhantomData,
        }
    }

    /// Re-opens a job from storage, e.g. after the client process restarted. Finished results
    /// are read back; on a backend whose tasks stop with the client (`local`), unfinished tasks
    /// are submitted again from the stored inputs.
    pub async fn attach(session: &Session, job_id: &str) -> Result<Job<T>> {
        Job::attach_inner(session, job_id, false).await
    }

    /// [`Job::attach`] that also runs the unfinished tasks of a job another binary submitted,
    /// with this binary (an explicit opt-in: its code may differ from the submitter's).
    pub async fn attach_rerunning_here(session: &Session, job_id: &str) -> Result<Job<T>> {
        Job::attach_inner(session, job_id, true).await
    }

    async fn attach_inner(session: &Session, job_id: &str, rerun_here: bool) -> Result<Job<T>> {
        let storage = session.storage();
        let layout = storage.layout();
        let manifest_bytes = match storage.get(&layout.manifest(job_id)).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return match storage.get(&layout.call_record(job_id)).await {
                    Ok(record) => Job::from_call_record(session, job_id, &record),
                    Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::new(
                        ErrorKind::NotFound,
                        format!("no job `{job_id}` in storage {}", storage.url()),
                    )
                    .with_operation("Job::attach")),
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let manifest = JobManifest::from_json(&manifest_bytes)?;
        manifest
            .check_result_type::<T>()
            .map_err(|e| e.with_operation("Job::attach"))?;
        session.remember_job(job_id);
        // The input holds every task's arguments: its entry count checks the manifest's count.
        let input = storage.get(&layout.input(job_id)).await?;
        let inputs = Inputs::from_stored(job_id, input, manifest.spec.task_count)
            .map_err(|e| e.with_operation("Job::attach"))?;
        let regions = session.regions_for(&manifest.spec.options)?;
        // Tasks that kept running without a client are followed; tasks that stopped with it
        // are run again, by this binary, once this client holds the job's lease.
        let follow = regions
            .iter()
            .all(|r| r.executor().capabilities().survives_client);
        let task_count = manifest.spec.task_count;
        let mut stored = read_stored(storage, &manifest.spec).await?;
        let mut spec = manifest.spec.clone();
        let mut lease = None;
        if !follow && !stored.unfinished(task_count).is_empty() {
            let here = crate::raw::binary::current_binary_hash()?;
            if spec.binary != here && !rerun_here {
                return Err(Error::new(
                    ErrorKind::Mismatch,
                    format!(
                        "job `{job_id}` was submitted by another binary (sha256 {}), this one \
                         is {here}: its unfinished tasks would run other code. Attach from that \
                         binary, or use `Job::attach_rerunning_here` to run them with this one",
                        spec.binary
                    ),
                )
                .with_operation("Job::attach"));
            }
            lease = Some(Lease::take_over(storage, job_id).await?);
            // Outcomes stored before the lease was ours count too.
            stored = read_stored(storage, &manifest.spec).await?;
            spec.binary = here.to_string();
        }
        let todo = stored.unfinished(task_count);
        tracing::info!(
            job = job_id,
            finished = stored.finished.len(),
            missing = todo.len(),
            "attached"
        );
        let spec = Arc::new(spec);
        let (placement, failover_after) = session.placement();
        let driving = drive(DriveRequest {
            spec: spec.clone(),
            storage: storage.clone(),
            regions,
            placement,
            failover_after,
            inputs: Arc::new(inputs),
            data: Arc::new(manifest.data),
            todo,
            follow,
            durable: true,
            keep: session.keeps(job_id),
        })
        .await?;
        Ok(Job::start(
            session.clone(),
            spec,
            driving,
            stored.finished,
            lease,
        ))
    }

    /// A finished call, from its record.
    fn from_call_record(session: &Session, job_id: &str, bytes: &bytes::Bytes) -> Result<Job<T>> {
        let record = read_call_record(bytes).map_err(|e| e.with_operation("Job::attach"))?;
        if record.manifest.spec.task_count != 1 {
            return Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "call record of `{job_id}` is corrupt: it counts {} tasks, a call has one",
                    record.manifest.spec.task_count
                ),
            )
            .with_operation("Job::attach"));
        }
        record
            .manifest
            .check_result_type::<T>()
            .map_err(|e| e.with_operation("Job::attach"))?;
        session.remember_job(job_id);
        let finished = Finished {
            task: 0,
            attempt: match &record.outcome {
                Outcome::Err(e) => e.attempt,
                Outcome::Ok(_) => 0,
            },
            outcome: record.outcome,
            location: ResultLocation::new(
                session.storage(),
                session.storage().layout().call_record(job_id).to_string(),
                Some(record.outcome_range),
            ),
            started: None,
            finished: SystemTime::now(),
            worker: None,
            requeues: 0,
            region: None,
        };
        Ok(Job::start(
            session.clone(),
            Arc::new(record.manifest.spec),
            Driving::nothing_to_run(),
            vec![finished],
            None,
        ))
    }

    /// How many tasks the job has.
    pub fn len(&self) -> u64 {
        self.shared.total()
    }

    /// Whether the job has no task.
    pub fn is_empty(&self) -> bool {
        self.shared.total() == 0
    }

    /// The job's description as the backend got it.
    pub fn spec(&self) -> &JobSpec {
        &self.shared.spec
    }

    /// The results as tasks finish (completion order): `(task index, result)`; a failed task
    /// is an `Err` item and the stream goes on. The stream starts from the first finished task
    /// each time it is called, and ends after the last task.
    pub fn results(&self) -> ResultStream<T> {
        let shared = self.shared.clone();
        let rx = shared.changed.subscribe();
        Box::pin(futures::stream::unfold(
            (shared, 0usize, rx),
            |(shared, cursor, mut rx)| async move {
                loop {
                    let next = {
                        let s = shared.state();
                        if let Some(&task) = s.order.get(cursor) {
                            Some(Some(task))
                        } else if s.finished >= shared.total() {
                            Some(None)
                        } else {
                            None
                        }
                    };
                    match next {
                        Some(Some(task)) => {
                            let value = shared.decode::<T>(task).await;
                            return Some(((task, value), (shared, cursor + 1, rx)));
                        }
                        Some(None) => return None,
                        None => {
                            if rx.changed().await.is_err() {
                                return None;
                            }
                        }
                    }
                }
            },
        ))
    }

    /// Every result in task order; the first failed task (lowest index) is the error.
    pub async fn collect(&self) -> Result<Vec<T>> {
        self.shared.wait_until(self.shared.total(), "collect").await;
        let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        for i in 0..self.shared.total() {
            out.push(self.shared.decode(i).await?);
        }
        Ok(out)
    }

    /// Every result in task order, each its own `Result`.
    pub async fn collect_outcomes(&self) -> Vec<Result<T>> {
        self.shared.wait_until(self.shared.total(), "collect").await;
        let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        for i in 0..self.shared.total() {
            out.push(self.shared.decode(i).await);
        }
        out
    }

    /// Folds the results as they finish; the first failed task stops the fold with its error.
    pub async fn reduce<A>(&self, init: A, mut op: impl FnMut(A, T) -> A) -> Result<A> {
        let mut progress = Progress::new(
            self.shared.session.progress_enabled(),
            self.len(),
            self.id(),
            "reduce",
        );
        let mut acc = init;
        let mut results = self.results();
        let mut seen = 0;
        while let Some((_, value)) = results.next().await {
            acc = op(acc, value?);
            seen += 1;
            progress.update(seen, 0, None);
        }
        progress.finish();
        self.shared.wait_until(self.len(), "reduce").await;
        Ok(acc)
    }

    /// Waits until `what` is true of the job.
    pub async fn wait(&self, what: WaitFor) -> Result<WaitSummary> {
        let total = self.shared.total();
        let needed = match what {
            WaitFor::All => total,
            WaitFor::Any => total.min(1),
            WaitFor::Fraction(f) if f > 0.0 && f <= 1.0 => ((total as f64) * f).ceil() as u64,
            WaitFor::Fraction(f) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("WaitFor::Fraction({f}) must be in (0, 1]"),
                ));
            }
        };
        self.shared.wait_until(needed, "wait").await;
        Ok(self.summary())
    }

    /// [`Job::wait`] with a time limit; running out of time is a `Timeout` error.
    pub async fn wait_timeout(&self, what: WaitFor, limit: Duration) -> Result<WaitSummary> {
        match tokio::time::timeout(limit, self.wait(what)).await {
            Ok(r) => r,
            Err(_) => {
                let s = self.summary();
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "job {} had {}/{} tasks finished after {limit:?}",
                        self.id(),
                        s.finished,
                        s.total
                    ),
                ))
            }
        }
    }

    /// Where the job stands now.
    pub fn summary(&self) -> WaitSummary {
        let s = self.shared.state();
        WaitSummary {
            total: self.shared.total(),
            finished: s.finished,
            failed: s.failed,
        }
    }

    /// Stops the unfinished tasks; each ends with a `Cancelled` error. Finished results stay.
    /// Returns how many tasks were stopped.
    pub async fn cancel(&self) -> Result<u64> {
        let backend = self.shared.session.backend();
        if !backend.capabilities().cancel {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("backend `{}` does not support cancel", backend.name()),
            ));
        }
        let span = tracing::info_span!("cancel", job = %self.id());
        async {
            let before = self.summary().finished;
            self.shared.driver.cancel().await;
            // The driver reports each stopped task once it is stored; do not hang if it
            // cannot store them.
            let all = self.shared.total();
            let wait = self.shared.wait_until(all, "cancel");
            if tokio::time::timeout(Duration::from_secs(30), wait)
                .await
                .is_err()
            {
                self.shared
                    .finish_missing(TaskErrorKind::Cancelled, "the job was cancelled");
            }
            let cancelled = self.shared.state().table.cancelled();
            tracing::info!(finished_before = before, cancelled, "job cancelled");
            Ok(cancelled)
        }
        .instrument(span)
        .await
    }

    /// Counts and timings so far.
    pub fn stats(&self) -> JobStats {
        let s = self.shared.state();
        summarize(&self.shared.spec, &s)
    }

    /// References to every task's stored result, in task order, once all finished; the first
    /// failed task (lowest index) is the error, so no later job starts on a failed input.
    pub async fn refs(&self) -> Result<Vec<ResultRef<T>>> {
        self.shared.wait_until(self.shared.total(), "refs").await;
        let s = self.shared.state();
        (0..self.shared.total())
            .map(|i| match s.table.outcome(i) {
                OutcomeAt::Pending => Err(Error::new(
                    ErrorKind::Unexpected,
                    format!("task {i} has no outcome"),
                )),
                OutcomeAt::Failed(e) => Err(Error::from_task(e.clone())),
                OutcomeAt::Held(_) | OutcomeAt::Stored(_) => Ok(ResultRef::new(
                    self.shared.spec.id.clone(),
                    i,
                    s.table.location(i),
                )),
            })
            .collect()
    }

    /// A test of whether every task of the job has finished.
    pub(crate) fn finished_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        self.shared.finished_probe()
    }

    /// Waits until every task finished, without the events record.
    pub(crate) async fn wait_finished(&self) {
        self.shared.wait_finished(self.shared.total()).await;
    }

    /// Task `task`'s outcome as it would be stored (for a call's record).
    pub(crate) async fn outcome_of(&self, task: u64) -> Result<Outcome> {
        let location = match self.shared.state().table.outcome(task) {
            OutcomeAt::Pending => {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    format!("task {task} has not finished"),
                ));
            }
            OutcomeAt::Held(bytes) => return Ok(Outcome::Ok(bytes.to_vec())),
            OutcomeAt::Failed(e) => return Ok(Outcome::Err(e.clone())),
            OutcomeAt::Stored(location) => location,
        };
        Outcome::from_stored(&self.shared.read_back(location).await?)
    }

    /// The single result of a one-task job.
    pub(crate) async fn into_single(self) -> Result<T> {
        self.shared.wait_finished(1).await;
        self.shared.decode(0).await
    }
}
