//! What `redwood cleanup` deletes: jobs older than a cutoff that are over (or abandoned), and
//! broadcast values older than it that no remaining job reads.

use std::collections::HashSet;
use std::time::SystemTime;

use futures::TryStreamExt;

use crate::error::Result;
use crate::storage::Storage;

use super::{StoredJob, list_jobs};

/// A job or broadcast value a cleanup deletes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Doomed {
    /// The job id, or the broadcast value's key.
    pub name: String,
    /// Objects it has.
    pub objects: u64,
    /// Bytes they hold.
    pub bytes: u64,
}

/// What a cleanup deletes; see [`plan_cleanup`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CleanupPlan {
    /// The jobs.
    pub jobs: Vec<Doomed>,
    /// The broadcast values.
    pub broadcasts: Vec<Doomed>,
    /// Jobs kept because tasks of theirs may still run (unfinished, with an attempt that ended
    /// after the cutoff).
    pub kept_running: Vec<String>,
    /// Every job that stays stored (the recent ones and `kept_running`).
    pub kept: Vec<String>,
}

impl CleanupPlan {
    /// Objects it deletes.
    pub fn objects(&self) -> u64 {
        self.jobs
            .iter()
            .chain(&self.broadcasts)
            .map(|d| d.objects)
            .sum()
    }

    /// Bytes it frees.
    pub fn bytes(&self) -> u64 {
        self.jobs
            .iter()
            .chain(&self.broadcasts)
            .map(|d| d.bytes)
            .sum()
    }
}

/// Whether a job is over by `cutoff`: submitted before it, and either ended (every task has a
/// final outcome, or it was cancelled) or silent since (no attempt ended after it).
fn over(job: &StoredJob, cutoff: SystemTime) -> bool {
    job.submitted() < cutoff
        && (job.unfinished == 0 || job.cancelled || job.last_end().is_none_or(|end| end < cutoff))
}

/// What to delete: jobs submitted before `cutoff` that are over, and broadcast values stored
/// before it that no remaining job reads.
pub async fn plan_cleanup(storage: &Storage, cutoff: SystemTime) -> Result<CleanupPlan> {
    let mut plan = CleanupPlan::default();
    let mut read_by_kept: HashSet<String> = HashSet::new();
    for job in list_jobs(storage).await? {
        if over(&job, cutoff) {
            plan.jobs.push(Doomed {
                name: job.id().to_string(),
                objects: job.objects,
                bytes: job.bytes,
            });
        } else {
            plan.kept.push(job.id().to_string());
            if job.submitted() < cutoff {
                plan.kept_running.push(job.id().to_string());
            }
            read_by_kept.extend(job.manifest.data.objects.iter().map(|r| r.key.clone()));
        }
    }
    let prefix = storage.layout().broadcasts();
    let listed: Vec<object_store::ObjectMeta> = storage
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| storage.error("store.list", &prefix, e))?;
    for meta in listed {
        let key = meta.location.to_string();
        if SystemTime::from(meta.last_modified) < cutoff && !read_by_kept.contains(&key) {
            plan.broadcasts.push(Doomed {
                name: key,
                objects: 1,
                bytes: meta.size,
            });
        }
    }
    plan.broadcasts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(plan)
}

/// Deletes what `plan` names; returns the objects deleted.
pub async fn apply_cleanup(storage: &Storage, plan: &CleanupPlan) -> Result<u64> {
    let layout = storage.layout();
    let mut deleted = 0u64;
    for job in &plan.jobs {
        deleted += storage.delete_prefix(&layout.job(&job.name)).await? as u64;
    }
    for value in &plan.broadcasts {
        storage
            .delete(&object_store::path::Path::from(value.name.as_str()))
            .await?;
        deleted += 1;
    }
    Ok(deleted)
}
