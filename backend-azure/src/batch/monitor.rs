//! Watching a job's attempts: one list request per interval for the tasks that completed since
//! the last one (`$filter` on state and transition time, `$select` of the few fields needed;
//! never a request per task), each outcome read from storage (the source of truth) and reported
//! to the job driver as the attempt's end.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use redwood_core::raw::envelope::Outcome;
use redwood_core::raw::executor::{AttemptEnd, Ended};
use redwood_core::types::result_ref::ResultLocation;
use redwood_core::{Result, Storage, TaskErrorKind};
use tokio::sync::{Notify, watch};

use super::client::BatchClient;
use super::nodes::{NodeSurvey, NodeWatch};
use super::outcome::{Completed, crash_error, never_started, read_outcome, task_error};
use super::pack_monitor::Finished;
use super::tasks::{JobTemplate, parse_batch_id};

/// How far back each listing reaches before the newest transition already seen, so a task
/// whose completion became visible late is still found.
const LOOKBACK: Duration = Duration::from_secs(10);
/// Times a task that failed before its program started is run again.
const MAX_RESTARTS: u32 = 3;
/// Outcomes read from storage at once.
const READS_IN_FLIGHT: usize = 32;

/// The attempts of a job on Batch that have not ended, shared by its launcher and its monitor.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    running: Mutex<HashMap<u64, Running>>,
    added: Notify,
}

/// One attempt on Batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Running {
    pub(crate) attempt: u32,
    /// When its storage URLs were minted, when that was after the job's.
    pub(crate) minted: Option<SystemTime>,
    /// It runs in a pack of several tasks (whose report the monitor reads while it runs).
    pub(crate) packed: bool,
}

impl Attempts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes attempts about to be added.
    pub(crate) fn add(&self, attempts: impl IntoIterator<Item = (u64, Running)>) {
        self.lock().extend(attempts);
        self.added.notify_one();
    }

    /// Forgets attempts that could not be added.
    pub(crate) fn forget(&self, tasks: impl IntoIterator<Item = u64>) {
        let mut running = self.lock();
        for t in tasks {
            running.remove(&t);
        }
    }

    /// The attempt of `task` still out, if any.
    pub(crate) fn attempt_of(&self, task: u64) -> Option<u32> {
        self.get(task).map(|r| r.attempt)
    }

    /// Whether any attempt still out runs in a pack of several tasks.
    pub(crate) fn any_packed(&self) -> bool {
        self.lock().values().any(|r| r.packed)
    }

    fn get(&self, task: u64) -> Option<Running> {
        self.lock().get(&task).copied()
    }

    /// Takes attempt `attempt` of `task` out, if it is the one running.
    fn take(&self, task: u64, attempt: u32) -> Option<Running> {
        let mut running = self.lock();
        match running.get(&task) {
            Some(r) if r.attempt == attempt => running.remove(&task),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn all(&self) -> Vec<(u64, u32)> {
        self.lock().iter().map(|(t, r)| (*t, r.attempt)).collect()
    }
}

/// Everything a job's watcher needs.
pub(crate) struct Monitor {
    pub client: BatchClient,
    pub storage: Storage,
    pub template: JobTemplate,
    pub attempts: Arc<Attempts>,
    pub ends: UnboundedSender<AttemptEnd>,
    /// Becomes true when the job is stopped or closed.
    pub stop: watch::Receiver<bool>,
    pub poll: Duration,
    /// List requests made, for the benchmark.
    pub polls: Arc<std::sync::atomic::AtomicU64>,
}

impl Monitor {
    /// Watches until the job is stopped or closed (or nobody listens).
    pub(crate) async fn run(mut self) {
        let job = self.template.spec.id.clone();
        let mut newest: Option<SystemTime> = None;
        let mut restarts: HashMap<String, u32> = HashMap::new();
        let mut nodes = NodeWatch::new();
        loop {
            if *self.stop.borrow() || self.ends.is_closed() {
                return;
            }
            let idle = self.attempts.is_empty();
            tokio::select! {
                () = tokio::time::sleep(self.poll), if !idle => {}
                () = self.attempts.added.notified(), if idle => continue,
                _ = self.stop.changed() => return,
            }
            let completed = match self.list_completed(&mut newest).await {
                Ok(finished) => {
                    let mut completed = self.unpack(finished).await;
                    completed.extend(self.progress().await);
                    completed
                }
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
            let outcomes: Vec<(Completed, Outcome, Option<ResultLocation>)> =
                futures::stream::iter(completed)
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
                                return (c, failed, None);
                            }
                            (c, outcome, stored)
                        }
                    })
                    .buffer_unordered(READS_IN_FLIGHT)
                    .collect()
                    .await;
            // The Batch tasks (a pack's, once for all its tasks) run again this round.
            let mut reactivated: HashSet<String> = HashSet::new();
            for (c, outcome, stored) in outcomes {
                let outcome = if stored.is_some() {
                    outcome
                } else {
                    self.explain_expired_urls(&c, outcome)
                };
                if stored.is_none() && never_started(&c.item) {
                    if reactivated.contains(&c.batch_id) {
                        continue;
                    }
                    let tries = restarts.entry(c.batch_id.clone()).or_insert(0);
                    if *tries < MAX_RESTARTS && self.reactivate(&c).await {
                        *tries += 1;
                        reactivated.insert(c.batch_id.clone());
                        continue;
                    }
                }
                self.report(c, outcome, stored, false);
            }
        }
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
        let function = self.template.spec.function.clone();
        for (index, attempt) in self.attempts.all() {
            let e = task_error(
                &job,
                &function,
                (index, attempt),
                TaskErrorKind::Lost,
                why.clone(),
            );
            let c = Completed {
                index,
                attempt,
                item: serde_json::Value::Null,
                mpi: false,
                batch_id: String::new(),
                times: None,
            };
            self.report(c, Outcome::Err(e), None, true);
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
        let minted = self.attempts.get(c.index).and_then(|r| r.minted);
        let expired_at = match minted {
            Some(minted) if job_urls < minted + valid / 2 => minted + valid,
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
        let id = &c.batch_id;
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

    /// The completed Batch tasks not seen before, with those of their tasks whose attempt is
    /// still out; newest transition time remembered.
    async fn list_completed(&self, newest: &mut Option<SystemTime>) -> Result<Vec<Finished>> {
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
                    ("$select", "id,stateTransitionTime,executionInfo,nodeInfo"),
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
            let Some(id) = item["id"].as_str().map(str::to_string) else {
                continue;
            };
            let Some((range, attempt)) = parse_batch_id(&id) else {
                continue;
            };
            let pack = id.starts_with('p');
            let tasks: Vec<u64> = range
                .filter(|&t| self.attempts.get(t).map(|r| r.attempt) == Some(attempt))
                .collect();
            if !tasks.is_empty() {
                out.push(Finished {
                    id,
                    attempt,
                    tasks,
                    pack,
                    item,
                });
            }
        }
        Ok(out)
    }

    /// Reports how an attempt ended, once.
    pub(crate) fn report(
        &self,
        c: Completed,
        outcome: Outcome,
        stored: Option<ResultLocation>,
        last: bool,
    ) {
        if self.attempts.take(c.index, c.attempt).is_none() {
            return;
        }
        let info = &c.item["executionInfo"];
        let time = |name: &str| {
            info[name]
                .as_str()
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
        };
        let ended = match stored {
            Some(location) => Ended::Stored { outcome, location },
            None => Ended::Reported(outcome),
        };
        let mut end = AttemptEnd::new(c.index, c.attempt, ended);
        match c.times {
            Some((started, finished)) => {
                end.started = Some(started);
                end.finished = finished;
            }
            None => {
                end.started = time("startTime");
                end.finished = time("endTime").unwrap_or_else(SystemTime::now);
            }
        }
        end.node = c.item["nodeInfo"]["nodeId"].as_str().map(str::to_string);
        end.requeues = info["requeueCount"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        end.final_attempt = last;
        let _ = self.ends.unbounded_send(end);
    }
}
