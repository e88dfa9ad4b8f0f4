//! Reading jobs back from storage alone, without the program that made them (what the
//! `redwood` tool shows): each job's manifest, how its tasks ended, its attempt records, its
//! failures and its size in storage.

mod cleanup;

pub use cleanup::{CleanupPlan, Doomed, apply_cleanup, plan_cleanup};

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::raw::call_record::read_call_record;
use crate::raw::envelope::Outcome;
use crate::raw::events::{TaskRecord, read_events};
use crate::raw::manifest::JobManifest;
use crate::storage::Storage;
use crate::types::task_error::TaskError;

/// What storage holds of one job.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoredJob {
    /// The job's manifest (function, task count, options, backend).
    pub manifest: JobManifest,
    /// Tasks whose final outcome is a value.
    pub succeeded: u64,
    /// Tasks whose final outcome is an error.
    pub failed: u64,
    /// Tasks without a final outcome (queued, running, waiting to retry, or abandoned).
    pub unfinished: u64,
    /// Whether someone cancelled it.
    pub cancelled: bool,
    /// Every ended attempt, in the order they were recorded.
    pub attempts: Vec<TaskRecord>,
    /// The final errors of the failed tasks, by task.
    pub failures: Vec<TaskError>,
    /// Objects stored under the job.
    pub objects: u64,
    /// Bytes stored under the job.
    pub bytes: u64,
}

impl StoredJob {
    /// The job id.
    pub fn id(&self) -> &str {
        &self.manifest.spec.id
    }

    /// When it was submitted.
    pub fn submitted(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.manifest.created_unix_ms)
    }

    /// When its last recorded attempt ended, if any did.
    pub fn last_end(&self) -> Option<SystemTime> {
        self.attempts
            .iter()
            .map(|r| r.finished_us)
            .max()
            .map(|us| UNIX_EPOCH + Duration::from_micros(us))
    }

    /// From submission to the last recorded end (or to now while tasks are unfinished).
    pub fn duration(&self) -> Duration {
        let end = if self.unfinished > 0 && !self.cancelled {
            SystemTime::now()
        } else {
            self.last_end().unwrap_or_else(|| self.submitted())
        };
        end.duration_since(self.submitted()).unwrap_or_default()
    }

    /// The regions that ran its attempts, in the order first seen.
    pub fn regions(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for region in self.attempts.iter().filter_map(|r| r.region.as_ref()) {
            if !seen.contains(region) {
                seen.push(region.clone());
            }
        }
        seen
    }
}

/// The ids of the jobs in `storage`, sorted, with the objects and bytes stored under each.
async fn job_objects(storage: &Storage) -> Result<BTreeMap<String, Vec<(Path, u64)>>> {
    let jobs = storage.layout().jobs();
    let depth = jobs.parts().count();
    let mut by_job: BTreeMap<String, Vec<(Path, u64)>> = BTreeMap::new();
    for (key, size) in storage.list_meta(&jobs).await? {
        if let Some(id) = key.parts().nth(depth) {
            by_job
                .entry(id.as_ref().to_string())
                .or_default()
                .push((key, size));
        }
    }
    Ok(by_job)
}

/// Every job in `storage`, oldest first. Objects that are not a job (a folder without a
/// manifest, say) are skipped.
pub async fn list_jobs(storage: &Storage) -> Result<Vec<StoredJob>> {
    let mut jobs = Vec::new();
    for (id, objects) in job_objects(storage).await? {
        if let Some(job) = read(storage, &id, &objects).await? {
            jobs.push(job);
        }
    }
    jobs.sort_by_key(|j| (j.manifest.created_unix_ms, j.id().to_string()));
    Ok(jobs)
}

/// The job `id`; an error naming it, the store, and the closest ids there, when there is none.
pub async fn read_job(storage: &Storage, id: &str) -> Result<StoredJob> {
    let all = job_objects(storage).await?;
    if let Some(objects) = all.get(id)
        && let Some(job) = read(storage, id, objects).await?
    {
        return Ok(job);
    }
    let mut close: Vec<&String> = all
        .keys()
        .filter(|k| k.starts_with(id) || strsim::levenshtein(k, id) <= 3)
        .collect();
    close.truncate(5);
    let hint = if close.is_empty() {
        format!("{} jobs are stored there", all.len())
    } else {
        let names: Vec<&str> = close.iter().map(|s| s.as_str()).collect();
        format!("did you mean {}?", names.join(", "))
    };
    Err(Error::new(
        ErrorKind::NotFound,
        format!("no job `{id}` in {}: {hint}", storage.url()),
    ))
}

/// The stored log (output and stderr) of task `task` of job `id`, when its backend stores one.
pub async fn task_log(storage: &Storage, id: &str, task: u64) -> Result<Option<String>> {
    let key = storage.layout().task_log(id, task);
    if !storage.exists(&key).await? {
        return Ok(None);
    }
    let bytes = storage.get(&key).await?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Reads one job from its objects; `None` when it has neither a manifest nor a call record.
async fn read(storage: &Storage, id: &str, objects: &[(Path, u64)]) -> Result<Option<StoredJob>> {
    let layout = storage.layout();
    let has = |key: &Path| objects.iter().any(|(k, _)| k == key);
    let bytes: u64 = objects.iter().map(|(_, n)| *n).sum();
    let cancelled = has(&layout.cancelled(id));
    let attempts = read_events(storage, id).await?;
    let (manifest, outcomes) = if has(&layout.manifest(id)) {
        let manifest = JobManifest::from_json(&storage.get(&layout.manifest(id)).await?)?;
        let stored = crate::driver::stored::read_stored(storage, &manifest.spec).await?;
        let outcomes: Vec<Outcome> = stored.finished.into_iter().map(|f| f.outcome).collect();
        (manifest, outcomes)
    } else if has(&layout.call_record(id)) {
        let record = read_call_record(&storage.get(&layout.call_record(id)).await?)?;
        (record.manifest, vec![record.outcome])
    } else {
        return Ok(None);
    };
    let mut failures = Vec::new();
    let mut succeeded = 0;
    for outcome in outcomes {
        match outcome {
            Outcome::Ok(_) => succeeded += 1,
            Outcome::Err(e) => failures.push(e),
        }
    }
    failures.sort_by_key(|e| e.task);
    let failed = failures.len() as u64;
    let unfinished = manifest
        .spec
        .task_count
        .saturating_sub(succeeded)
        .saturating_sub(failed);
    Ok(Some(StoredJob {
        manifest,
        succeeded,
        failed,
        unfinished,
        cancelled,
        attempts,
        failures,
        objects: objects.len() as u64,
        bytes,
    }))
}
