//! Watching a job: one list request per interval for the tasks that completed since the last
//! one (`$filter` on state and transition time, `$select` of the few fields needed; never a
//! request per task), the outcome read from storage (the source of truth), retries re-added as
//! new Batch tasks after their backoff, and cancellation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use redwood_core::raw::backend::{Finished, TaskEvent};
use redwood_core::raw::envelope::Outcome;
use redwood_core::types::options::saturating_after;
use redwood_core::types::result_ref::ResultLocation;
use redwood_core::{ErrorKind, Result, Storage, TaskError, TaskErrorKind};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::client::BatchClient;
use super::nodes::{NodeSurvey, NodeWatch};
use super::tasks::{JobTemplate, parse_task_id};

/// How far back each listing reaches before the newest transition already seen, so a task
/// whose completion became visible late is still found.
const LOOKBACK: Duration = Duration::from_secs(10);
/// Times a task that failed before its program started is run again.
const MAX_RESTARTS: u32 = 3;
/// Outcomes read from storage at once.
const READS_IN_FLIGHT: usize = 32;
/// `addtaskcollection` requests in flight at once.
pub(crate) const ADDS_IN_FLIGHT: usize = 8;

/// A request to cancel the job; the reply is how many tasks were stopped.
pub(crate) type CancelSignal = oneshot::Sender<u64>;

/// Everything a job's watcher needs.
pub(crate) struct Monitor {
    pub client: BatchClient,
    pub storage: Storage,
    pub template: JobTemplate,
    /// Each unfinished task's attempt and argument range.
    pub pending: HashMap<u64, (u32, (u64, u64))>,
    pub events: UnboundedSender<TaskEvent>,
    pub cancel: mpsc::UnboundedReceiver<CancelSignal>,
    pub poll: Duration,
    /// List requests made, for the benchmark.
    pub polls: Arc<std::sync::atomic::AtomicU64>,
    /// When the storage URLs of re-added attempts were minted, by task.
    pub minted: HashMap<u64, SystemTime>,
}

/// A completed Batch task, as listed.
struct Completed {
    index: u64,
    attempt: u32,
    item: Value,
    /// An MPI task: its exit code is the launcher's.
    mpi: bool,
}

impl Monitor {
    /// Watches until every task finished or the job is cancelled.
    pub(crate) async fn run(mut self) {
        let job = self.template.spec.id.clone();
        let mut newest: Option<SystemTime> = None;
        let mut retries: Vec<(Instant, u64, u32)> = Vec::new();
        let mut restarts: HashMap<u64, u32> = HashMap::new();
        let mut nodes = NodeWatch::new();
        while !self.pending.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(self.poll) => {}
                signal = self.cancel.recv() => {
                    let n = self.cancel_all().await;
                    if let Some(reply) = signal {
                        let _ = reply.send(n);
                    }
                    return;
                }
            }
            self.add_due_retries(&mut retries).await;
            let completed = match self.list_completed(&mut newest).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(job = %job, error = %e, "cannot list the job's tasks; trying again");
                    continue;
                }
            };
            if !completed.is_empty() {
                nodes.progress();
            } else if nodes.due() {
                self.check_nodes(&mut nodes).await;
                continue;
            }
            let storage = self.storage.clone();
            let client = self.client.clone();
            let function = self.template.spec.function.clone();
            let outcomes: Vec<(Completed, Outcome, bool)> = futures::stream::iter(completed)
                .map(|c| {
                    let (storage, client, job) = (storage.clone(), client.clone(), job.clone());
                    let function = function.clone();
                    async move {
                        let (outcome, stored) =
                            read_outcome(&storage, &client, &job, &function, &c).await;
                        let exit = c.item["executionInfo"]["exitCode"].as_i64().unwrap_or(0);
                        if c.mpi && exit != 0 && matches!(outcome, Outcome::Ok(_)) {
                            // Rank 0 stored its result, but another rank failed the launcher.
                            let failed = crash_error(&client, &job, &function, &c).await;
                            return (c, failed, false);
                        }
                        (c, outcome, stored)
                    }
                })
                .buffer_unordered(READS_IN_FLIGHT)
                .collect()
                .await;
            for (c, outcome, stored) in outcomes {
                let outcome = if stored {
                    outcome
                } else {
                    self.explain_expired_urls(&c, outcome)
                };
                if !stored && never_started(&c.item) {
                    let tries = restarts.entry(c.index).or_insert(0);
                    if *tries < MAX_RESTARTS && self.reactivate(&c).await {
                        *tries += 1;
                        continue;
                    }
                }
                self.settle(c, outcome, stored, &mut retries).await;
            }
        }
        // Done: end the Batch job so it stops counting against the account's active jobs.
        let _ = self
            .client
            .post(
                "terminate_job",
                &format!("/jobs/{job}/terminate"),
                &serde_json::json!({}),
            )
            .await;
    }

    /// Looks at the pool's nodes after a while without progress: warns once about each node
    /// that cannot run this job's tasks, and when that is every node of the pool, ends every
    /// unfinished task with the reason (Batch would keep them waiting).
    async fn check_nodes(&mut self, watch: &mut NodeWatch) {
        watch.checked();
        let job = self.template.spec.id.clone();
        let pool = self.template.pool.clone();
        self.polls
            .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        let survey = match NodeSurvey::take(&self.client, &pool, &job).await {
            Ok(survey) => survey,
            Err(e) => {
                tracing::debug!(pool = %pool, error = %e, "cannot look at the pool's nodes");
                return;
            }
        };
        for (node, why) in &survey.unusable {
            if watch.warned.insert(node.clone()) {
                tracing::warn!(job = %job, pool = %pool, node = %node, "{}: Batch runs none of this job's tasks on that node", why.text());
            }
        }
        let Some(why) = survey.none_usable(&self.client).await else {
            return;
        };
        tracing::error!(job = %job, pool = %pool, "{why}");
        let pending: Vec<(u64, u32)> = self.pending.iter().map(|(i, p)| (*i, p.0)).collect();
        for (index, attempt) in pending {
            self.fail_now(index, attempt, why.clone()).await;
        }
    }

    /// A crash of an attempt that ended after its storage URLs expired says so: the worker
    /// could not read its inputs or store its outcome (a retry gets fresh URLs).
    fn explain_expired_urls(&self, c: &Completed, outcome: Outcome) -> Outcome {
        let Outcome::Err(mut e) = outcome else {
            return outcome;
        };
        let valid = self.template.sas_valid_for;
        let Some(job_urls) = self.template.urls_expire else {
            return Outcome::Err(e);
        };
        // A re-added attempt has its own write URL, and its own read URL when the job's was
        // past half its validity (see `JobTemplate::task_body`).
        let expired_at = match self.minted.get(&c.index) {
            Some(&minted) if job_urls < minted + valid / 2 => minted + valid,
            _ => job_urls,
        };
        let ended = c.item["executionInfo"]["endTime"]
            .as_str()
            .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
            .unwrap_or_else(SystemTime::now);
        if e.kind == TaskErrorKind::Crash && ended >= expired_at {
            e.message = format!(
                "{}: its storage URLs had expired (at {}), so it could not read its inputs or \
                 store its outcome. They are valid for `sas_valid_for` ({}) after the job (or \
                 a retry) is added: raise it above how long tasks wait and run; a retry gets \
                 fresh ones",
                e.message,
                humantime::format_rfc3339_seconds(expired_at),
                humantime::format_duration(valid)
            );
        }
        Outcome::Err(e)
    }

    /// Makes Batch run a task again that failed before its program started (a resource file
    /// that could not be downloaded, say); the attempt is not the user's, so it is not counted.
    async fn reactivate(&self, c: &Completed) -> bool {
        let job = &self.template.spec.id;
        let id = super::tasks::task_id(c.index, c.attempt);
        let why = &c.item["executionInfo"]["failureInfo"]["message"];
        tracing::info!(job = %job, task = %id, why = %why, "the task did not start; Batch runs it again");
        self.client
            .post(
                "reactivate_task",
                &format!("/jobs/{job}/tasks/{id}/reactivate"),
                &serde_json::json!({}),
            )
            .await
            .is_ok()
    }

    /// The completed tasks not seen before, newest transition time remembered.
    async fn list_completed(&self, newest: &mut Option<SystemTime>) -> Result<Vec<Completed>> {
        let job = &self.template.spec.id;
        let mut filter = "state eq 'completed'".to_string();
        if let Some(t) = newest {
            let since = *t - LOOKBACK;
            filter.push_str(&format!(
                " and stateTransitionTime ge DateTime'{}'",
                humantime::format_rfc3339_millis(since)
            ));
        }
        self.polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let items = self
            .client
            .list(
                "list_tasks",
                &format!("/jobs/{job}/tasks"),
                &[
                    ("$filter", filter.as_str()),
                    ("$select", "id,stateTransitionTime,executionInfo"),
                ],
            )
            .await?;
        let mut out = Vec::new();
        for item in items {
            if let Some(t) = item["stateTransitionTime"]
                .as_str()
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
            {
                *newest = Some(newest.map_or(t, |n| n.max(t)));
            }
            let Some((index, attempt)) = item["id"].as_str().and_then(parse_task_id) else {
                continue;
            };
            if self.pending.get(&index).map(|p| p.0) == Some(attempt) {
                out.push(Completed {
                    index,
                    attempt,
                    item,
                    mpi: self.template.spec.options.mpi.is_some(),
                });
            }
        }
        Ok(out)
    }

    /// Retries a failed attempt if its options allow, or reports the task finished.
    async fn settle(
        &mut self,
        c: Completed,
        outcome: Outcome,
        stored: bool,
        retries: &mut Vec<(Instant, u64, u32)>,
    ) {
        let options = &self.template.spec.options;
        if let Outcome::Err(e) = &outcome
            && e.is_retryable()
            && c.attempt <= options.retries
        {
            let next = c.attempt + 1;
            if let Some(p) = self.pending.get_mut(&c.index) {
                p.0 = next;
            }
            let _ = self.events.unbounded_send(TaskEvent::Retrying {
                task: c.index,
                error: e.clone(),
            });
            retries.push((
                saturating_after(Instant::now(), options.backoff_for(next)),
                c.index,
                next,
            ));
            return;
        }
        self.pending.remove(&c.index);
        let job = &self.template.spec.id;
        let key = self.storage.layout().task_result(job, c.index);
        let mut outcome = outcome;
        if !stored {
            // The worker could not store it (it crashed): store what we know, for attach.
            let bytes = outcome.to_stored().unwrap_or_default();
            if let Err(e) = self.storage.put(&key, bytes).await {
                tracing::warn!(job = %job, task = c.index, error = %e, "cannot store the task's failure");
                outcome = lost(
                    job,
                    c.index,
                    c.attempt,
                    format!("cannot store the failure: {e}"),
                );
            }
        }
        let info = &c.item["executionInfo"];
        let time = |name: &str| {
            info[name]
                .as_str()
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
        };
        let finished = Finished {
            task: c.index,
            attempt: c.attempt,
            outcome,
            location: ResultLocation {
                key: key.to_string(),
                range: None,
            },
            started: time("startTime"),
            finished: time("endTime").unwrap_or_else(SystemTime::now),
            worker: None,
            requeues: info["requeueCount"].as_u64().unwrap_or(0) as u32,
        };
        let _ = self
            .events
            .unbounded_send(TaskEvent::Finished(Box::new(finished)));
    }

    /// Adds the retries whose backoff has passed, as new Batch tasks.
    async fn add_due_retries(&mut self, retries: &mut Vec<(Instant, u64, u32)>) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = retries.drain(..).partition(|(at, _, _)| *at <= now);
        *retries = later;
        let mut bodies = Vec::new();
        for (_, index, attempt) in due {
            let Some(&(_, range)) = self.pending.get(&index) else {
                continue;
            };
            match self
                .template
                .task_body(&self.storage, index, attempt, range, None)
            {
                Ok(b) => {
                    self.minted.insert(index, SystemTime::now());
                    bodies.push(b);
                }
                Err(e) => self.fail_now(index, attempt, e.to_string()).await,
            }
        }
        if bodies.is_empty() {
            return;
        }
        let job = self.template.spec.id.clone();
        for chunk in super::tasks::chunks(bodies) {
            let ids: Vec<String> = chunk
                .iter()
                .filter_map(|b| b["id"].as_str().map(str::to_string))
                .collect();
            let failed: Vec<(String, String)> =
                match self.client.add_task_collection(&job, &chunk).await {
                    Ok(results) => results
                        .into_iter()
                        .filter(|r| !r.added)
                        .map(|r| {
                            let why = format!(
                                "Batch refused the retry: {} {}",
                                r.error_code.unwrap_or_default(),
                                r.error_message.unwrap_or_default()
                            );
                            (r.task_id, why)
                        })
                        .collect(),
                    Err(e) => ids.into_iter().map(|id| (id, e.to_string())).collect(),
                };
            for (id, why) in failed {
                if let Some((index, attempt)) = parse_task_id(&id) {
                    self.fail_now(index, attempt, why).await;
                }
            }
        }
    }

    /// Finishes a task that cannot run again as lost.
    async fn fail_now(&mut self, index: u64, attempt: u32, why: String) {
        let job = self.template.spec.id.clone();
        let c = Completed {
            index,
            attempt,
            item: Value::Null,
            mpi: false,
        };
        // The last attempt the options allow.
        let options_retries = self.template.spec.options.retries.saturating_add(1);
        // No retry of a retry that could not be added.
        let mut outcome = lost(&job, index, attempt.max(options_retries), why);
        if let Outcome::Err(e) = &mut outcome {
            e.function = self.template.spec.function.clone();
        }
        let mut none = Vec::new();
        self.settle(
            Completed {
                attempt: attempt.max(options_retries),
                ..c
            },
            outcome,
            false,
            &mut none,
        )
        .await;
    }

    /// Terminates the Batch job; every unfinished task ends cancelled (unless its outcome was
    /// stored meanwhile, which is then reported as it is).
    async fn cancel_all(&mut self) -> u64 {
        let job = self.template.spec.id.clone();
        if let Err(e) = self
            .client
            .post(
                "terminate_job",
                &format!("/jobs/{job}/terminate"),
                &serde_json::json!({ "terminateReason": "cancelled by Redwood" }),
            )
            .await
        {
            tracing::warn!(job = %job, error = %e, "cannot terminate the Batch job");
        }
        let mut cancelled = 0;
        let pending: Vec<(u64, u32)> = self.pending.iter().map(|(i, p)| (*i, p.0)).collect();
        for (index, attempt) in pending {
            let key = self.storage.layout().task_result(&job, index);
            let mut e = TaskError::new(TaskErrorKind::Cancelled, "the job was cancelled");
            e.job = job.clone();
            e.function = self.template.spec.function.clone();
            e.task = index;
            e.attempt = attempt;
            let outcome = Outcome::Err(e);
            let bytes = outcome.to_stored().unwrap_or_default();
            let outcome = match self.storage.put_if_absent(&key, bytes).await {
                Ok(true) => {
                    cancelled += 1;
                    outcome
                }
                _ => match self
                    .storage
                    .get(&key)
                    .await
                    .map(|b| Outcome::from_stored(&b))
                {
                    Ok(Ok(o)) => o,
                    _ => {
                        cancelled += 1;
                        outcome
                    }
                },
            };
            let c = Completed {
                index,
                attempt: self
                    .template
                    .spec
                    .options
                    .retries
                    .saturating_add(1)
                    .max(attempt),
                item: Value::Null,
                mpi: false,
            };
            self.settle(c, outcome, true, &mut Vec::new()).await;
        }
        cancelled
    }
}

/// Whether a completed task failed before its program started (no exit code, and not ended
/// by a timeout or a terminate).
fn never_started(item: &Value) -> bool {
    let info = &item["executionInfo"];
    let code = info["failureInfo"]["code"].as_str();
    info["exitCode"].is_null()
        && code.is_some()
        && !matches!(code, Some("MaxWallClockTimeExceeded" | "TaskEnded"))
}

fn lost(job: &str, task: u64, attempt: u32, why: String) -> Outcome {
    let mut e = TaskError::new(TaskErrorKind::Lost, why);
    e.job = job.to_string();
    e.task = task;
    e.attempt = attempt;
    Outcome::Err(e)
}

/// The outcome of a completed attempt: the one the worker stored, or, when there is none, what
/// Batch says happened (exit code, failure, the end of stderr). The flag says it is stored.
async fn read_outcome(
    storage: &Storage,
    client: &BatchClient,
    job: &str,
    function: &str,
    c: &Completed,
) -> (Outcome, bool) {
    let key = storage.layout().task_result(job, c.index);
    let mut last = None;
    for wait in [0u64, 200, 1000, 3000] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        match storage.get(&key).await {
            Ok(bytes) => match Outcome::from_stored(&bytes) {
                Ok(Outcome::Err(e)) if e.attempt != c.attempt => {
                    // An earlier attempt's failure: this attempt stored nothing.
                    last = None;
                    break;
                }
                Ok(o) => return (o, true),
                Err(e) => {
                    let mut te = TaskError::new(
                        TaskErrorKind::Decode,
                        format!("the stored outcome cannot be read: {e}"),
                    );
                    te.job = job.to_string();
                    te.task = c.index;
                    te.attempt = c.attempt;
                    return (Outcome::Err(te), true);
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        return (
            lost(
                job,
                c.index,
                c.attempt,
                format!("the outcome cannot be read: {e}"),
            ),
            false,
        );
    }
    (crash_error(client, job, function, c).await, false)
}

/// The error of an attempt that ended without storing an outcome.
async fn crash_error(client: &BatchClient, job: &str, function: &str, c: &Completed) -> Outcome {
    let info = &c.item["executionInfo"];
    let exit_code = info["exitCode"].as_i64().map(|c| c as i32);
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
    let mut e = TaskError::new(kind, message);
    e.job = job.to_string();
    e.function = function.to_string();
    e.task = c.index;
    e.attempt = c.attempt;
    e.exit_code = exit_code;
    e.signal = exit_code.filter(|&x| x > 128 && x < 160).map(|x| x - 128);
    if kind == TaskErrorKind::Crash {
        let id = super::tasks::task_id(c.index, c.attempt);
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
