//! Durable outcomes with group commit: the attempt ends of a job that arrive together are
//! stored together — the final outcomes the executor reported in one packed result segment,
//! their attempt records in one events segment, stderr tails at `tasks/<n>/log` — and only
//! then reported finished.

use std::time::SystemTime;

use futures::channel::mpsc::UnboundedSender;
use tokio::sync::mpsc;

use crate::raw::backend::{Finished, TaskEvent};
use crate::raw::envelope::Outcome;
use crate::raw::events::{TaskRecord, write_event_segment};
use crate::raw::executor::{AttemptEnd, Ended};
use crate::raw::pack::PackWriter;
use crate::storage::Storage;
use crate::types::result_ref::ResultLocation;
use crate::types::task_error::{TaskError, TaskErrorKind};

/// The most attempt ends stored in one round.
const MAX_BATCH: usize = 8192;
/// How long a round waits for more ends before it is stored.
const LINGER: std::time::Duration = std::time::Duration::from_millis(3);

/// An ended attempt to store.
#[derive(Debug)]
pub(crate) struct CommitItem {
    pub(crate) end: AttemptEnd,
    /// The task is finished (its outcome is final); otherwise a retry follows.
    pub(crate) last: bool,
    /// The executor that ran the attempt.
    pub(crate) executor: String,
}

/// What every round of one job needs.
pub(crate) struct Committer {
    pub(crate) storage: Storage,
    pub(crate) job: String,
    pub(crate) function: String,
    /// Store outcomes, attempt records and logs before reporting them (a job that can be
    /// attached to); otherwise report them as they come (a single call, whose record the
    /// session stores in one object).
    pub(crate) durable: bool,
    /// Whether the job is still wanted; a round of a job cleaned up is reported, not stored.
    pub(crate) keep: super::Keep,
}

impl Committer {
    /// Stores rounds as they come and reports their finished tasks on `events`, until `rx`
    /// closes.
    pub(crate) async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<CommitItem>,
        events: UnboundedSender<TaskEvent>,
    ) {
        // Segment names are unique per writer, so a job resumed by another process never
        // overwrites what an earlier one stored.
        let writer = crate::raw::binary::sha256_hex(
            format!(
                "{}/{}/{:?}",
                self.job,
                std::process::id(),
                SystemTime::now()
            )
            .as_bytes(),
        );
        let writer = writer[..12].to_string();
        let mut round = 0u64;
        let mut busy = false;
        while let Some(first) = rx.recv().await {
            if busy && self.durable {
                // Tasks finish in a stream: let the ends of those about to finish join this
                // round, one object (one new inode on a file store) for all of them. A lone
                // task (tasks finishing one by one) is not held back.
                tokio::time::sleep(LINGER).await;
            }
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            busy = batch.len() > 1;
            let name = format!("{writer}-{round:06}");
            round += 1;
            self.round(&name, batch, &events).await;
        }
    }

    async fn round(&self, name: &str, batch: Vec<CommitItem>, events: &UnboundedSender<TaskEvent>) {
        if !self.durable {
            for item in batch.into_iter().filter(|item| item.last) {
                let mut end = item.end;
                let (outcome, location) = match take_ended(&mut end) {
                    Ended::Stored { outcome, location } => (outcome, location),
                    Ended::Reported(outcome) => (outcome, ResultLocation::nowhere()),
                };
                report(events, &self.job, &end, outcome, location);
            }
            return;
        }
        let layout = self.storage.layout();
        let key = layout.result_segment(&self.job, name);
        // The final outcomes the executor reported go in this round's segment.
        let mut pack = PackWriter::new();
        let mut packed = Vec::new();
        let mut unencodable = Vec::new();
        for (i, item) in batch.iter().enumerate() {
            if let (true, Ended::Reported(outcome)) = (item.last, &item.end.ended) {
                match outcome.to_stored() {
                    Ok(bytes) => {
                        pack.push(item.end.task, &bytes);
                        packed.push(i);
                    }
                    Err(e) => unencodable.push((i, e.to_string())),
                }
            }
        }
        let mut ranges = vec![None; batch.len()];
        for (i, r) in packed.iter().zip(pack.ranges()) {
            ranges[*i] = Some(r);
        }
        let results = (!pack.is_empty()).then(|| pack.finish());
        let records: Vec<TaskRecord> = batch
            .iter()
            .map(|item| TaskRecord::of(&item.end, &item.executor, !item.last))
            .collect();
        let logs: Vec<(u64, String)> = batch
            .iter()
            .filter(|item| item.last)
            .filter_map(|item| {
                // The executor's log, else the stderr tail a failure carries.
                let tail = match item.end.outcome() {
                    Outcome::Err(e) => e.stderr_tail.as_ref(),
                    Outcome::Ok(_) => None,
                };
                let log = item
                    .end
                    .log
                    .as_ref()
                    .or(tail)
                    .filter(|l| !l.trim().is_empty())?;
                Some((item.end.task, log.clone()))
            })
            .collect();
        let store = {
            let (storage, job, key, name) = (
                self.storage.clone(),
                self.job.clone(),
                key.clone(),
                name.to_string(),
            );
            async move {
                let results = async {
                    match results {
                        Some(bytes) => storage.put(&key, bytes).await.map_err(|e| e.to_string()),
                        None => Ok(()),
                    }
                };
                let events = async {
                    if records.is_empty() {
                        return;
                    }
                    if let Err(e) = write_event_segment(&storage, &job, &name, &records).await {
                        tracing::warn!(job = %job, error = %e, "could not store the job's events");
                    }
                };
                let logs = futures::future::join_all(logs.into_iter().map(|(task, log)| {
                    let (storage, job) = (&storage, &job);
                    async move {
                        let key = storage.layout().task_log(job, task);
                        if let Err(e) = storage.put(&key, log.into_bytes()).await {
                            tracing::warn!(job = %job, task, error = %e, "could not store a task's log");
                        }
                    }
                }));
                let (stored, (), _) = futures::join!(results, events, logs);
                stored
            }
        };
        let stored = if !(self.keep)() {
            drop(store);
            Err("the job was cleaned up while it ran".to_string())
        } else {
            store.await
        };
        for (i, item) in batch.into_iter().enumerate() {
            if !item.last {
                continue;
            }
            let mut end = item.end;
            let (outcome, location) = match take_ended(&mut end) {
                Ended::Stored { outcome, location } => (outcome, location),
                Ended::Reported(outcome) => {
                    match (
                        &stored,
                        unencodable.iter().find(|(j, _)| *j == i),
                        &ranges[i],
                    ) {
                        (Ok(()), None, Some(range)) => (
                            outcome,
                            ResultLocation::new(
                                &self.storage,
                                key.to_string(),
                                Some(range.clone()),
                            ),
                        ),
                        (_, Some((_, why)), _) => (
                            self.lost(
                                (end.task, end.attempt),
                                &outcome,
                                format!("cannot encode: {why}"),
                            ),
                            ResultLocation::nowhere(),
                        ),
                        (Err(why), _, _) => (
                            self.lost(
                                (end.task, end.attempt),
                                &outcome,
                                format!("the outcome could not be stored: {why}"),
                            ),
                            ResultLocation::nowhere(),
                        ),
                        (Ok(()), None, None) => (outcome, ResultLocation::nowhere()),
                    }
                }
            };
            report(events, &self.job, &end, outcome, location);
        }
    }

    fn lost(&self, (task, attempt): (u64, u32), outcome: &Outcome, message: String) -> Outcome {
        let mut e = TaskError::new(TaskErrorKind::Lost, message);
        e.job = self.job.clone();
        e.function = self.function.clone();
        e.task = task;
        e.attempt = attempt;
        if let Outcome::Err(original) = outcome {
            e.stderr_tail = original.stderr_tail.clone();
        }
        Outcome::Err(e)
    }
}

/// Takes the end's outcome out, leaving an empty one.
fn take_ended(end: &mut AttemptEnd) -> Ended {
    std::mem::replace(&mut end.ended, Ended::Reported(Outcome::Ok(Vec::new())))
}

/// Reports a finished task.
fn report(
    events: &UnboundedSender<TaskEvent>,
    job: &str,
    end: &AttemptEnd,
    outcome: Outcome,
    location: ResultLocation,
) {
    let finished = Finished {
        task: end.task,
        attempt: end.attempt,
        outcome,
        location,
        started: end.started,
        finished: end.finished,
        worker: end.worker,
        requeues: end.requeues,
        region: end.region.clone(),
    };
    if events
        .unbounded_send(TaskEvent::Finished(Box::new(finished)))
        .is_err()
    {
        tracing::debug!(job, "nobody listens to the job's events any more");
    }
}
