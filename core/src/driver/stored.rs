//! Reading a job's stored outcomes back (for `attach`): every object under
//! `jobs/<job>/results/` is a pack of outcomes keyed by task index, written by the job driver
//! (many per object) or by a worker (one). A task's outcome is final when it succeeded, failed
//! in a way no retry helps, or used its last attempt; a stored failure that a retry may still
//! fix — or an attempt recorded in the job's events as retried — says which attempt comes
//! next.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::error::Result;
use crate::raw::backend::{Finished, JobSpec};
use crate::raw::envelope::Outcome;
use crate::raw::events::read_events;
use crate::raw::pack::read_pack;
use crate::storage::Storage;
use crate::types::result_ref::ResultLocation;

/// What storage says about a job's tasks.
#[derive(Debug, Default)]
pub(crate) struct StoredOutcomes {
    /// Tasks whose outcome is final.
    pub(crate) finished: Vec<Finished>,
    /// Unfinished tasks with a stored failure a retry may fix: the attempt that failed.
    pub(crate) tried: HashMap<u64, u32>,
}

impl StoredOutcomes {
    /// The tasks of the job without a final outcome, each with the last attempt made (0: none).
    pub(crate) fn unfinished(&self, task_count: u64) -> Vec<(u64, u32)> {
        let mut done = vec![false; task_count as usize];
        for f in &self.finished {
            if let Some(d) = done.get_mut(f.task as usize) {
                *d = true;
            }
        }
        (0..task_count)
            .filter(|&i| !done[i as usize])
            .map(|i| (i, self.tried.get(&i).copied().unwrap_or(0)))
            .collect()
    }
}

/// Whether `a` is a better stored outcome of a task than `b`: a success beats any failure,
/// a later attempt's failure beats an earlier one's.
fn better(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Ok(_), Outcome::Err(_)) => true,
        (Outcome::Err(x), Outcome::Err(y)) => x.attempt > y.attempt,
        _ => false,
    }
}

/// Reads every stored outcome of `spec`'s job.
pub(crate) async fn read_stored(storage: &Storage, spec: &JobSpec) -> Result<StoredOutcomes> {
    let layout = storage.layout();
    let now = SystemTime::now();
    let mut best: HashMap<u64, Finished> = HashMap::new();
    let mut keys = storage.list(&layout.result_segments(&spec.id)).await?;
    keys.sort();
    for key in keys {
        let bytes = storage.get(&key).await?;
        for entry in read_pack(&bytes)? {
            if entry.key >= spec.task_count {
                continue;
            }
            let outcome = Outcome::from_stored(&entry.bytes)?;
            if best
                .get(&entry.key)
                .is_some_and(|known| !better(&outcome, &known.outcome))
            {
                continue;
            }
            let attempt = match &outcome {
                Outcome::Err(e) => e.attempt,
                Outcome::Ok(_) => 0,
            };
            best.insert(
                entry.key,
                Finished {
                    task: entry.key,
                    attempt,
                    outcome,
                    location: ResultLocation::new(storage, key.to_string(), Some(entry.range)),
                    started: None,
                    finished: now,
                    worker: None,
                    requeues: 0,
                    region: None,
                },
            );
        }
    }
    let mut out = StoredOutcomes::default();
    for (task, f) in best {
        match &f.outcome {
            Outcome::Err(e) if e.is_retryable() && e.attempt <= spec.options.retries => {
                out.tried.insert(task, e.attempt);
            }
            _ => out.finished.push(f),
        }
    }
    // Attempts that failed and were to be retried are in the job's events even where their
    // outcomes were not stored (the driver stores final outcomes only).
    let finished: std::collections::HashSet<u64> = out.finished.iter().map(|f| f.task).collect();
    for record in read_events(storage, &spec.id).await? {
        if record.retried && record.task < spec.task_count && !finished.contains(&record.task) {
            let tried = out.tried.entry(record.task).or_insert(0);
            *tried = (*tried).max(record.attempt);
        }
    }
    out.finished.sort_by_key(|f| f.task);
    Ok(out)
}
