//! `redwood cancel JOB` and `redwood cleanup`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use redwood_core::Storage;
use redwood_core::config::LoadedConfig;
use redwood_core::inspect::{apply_cleanup, plan_cleanup, read_job};
use redwood_core::raw::backend::{CleanupRequest, Leftovers};

use crate::format;

/// Marks the job cancelled: a program still driving it stops its unfinished tasks within a few
/// seconds (each ends `Cancelled`).
pub async fn cancel(storage: &Storage, id: &str, out: &mut dyn Write) -> Result<(), String> {
    let job = read_job(storage, id).await.map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| format!("cannot write the output: {e}");
    if job.cancelled {
        return writeln!(out, "job `{id}` is already cancelled").map_err(io);
    }
    if job.unfinished == 0 {
        return writeln!(
            out,
            "job `{id}` has ended ({} succeeded, {} failed): nothing to cancel",
            job.succeeded, job.failed
        )
        .map_err(io);
    }
    let note = format!(
        "cancelled by `redwood cancel` at {}\n",
        format::time(SystemTime::now())
    );
    storage
        .put(&storage.layout().cancelled(id), note.into_bytes())
        .await
        .map_err(|e| e.to_string())?;
    writeln!(
        out,
        "job `{id}` marked cancelled: the program driving it stops its {} unfinished tasks within \
         a few seconds (tasks already running on a cloud backend may finish first); if no \
         program drives it any more, nothing runs it",
        job.unfinished
    )
    .map_err(io)
}

/// Deletes (or, with `dry_run`, lists) the jobs over before `older_than` ago and the broadcast
/// values stored before then that no remaining job reads, saying how much that frees.
pub async fn cleanup(
    storage: &Storage,
    config: &LoadedConfig,
    older_than: Duration,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot write the output: {e}");
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let plan = format::with_spinner("reading the jobs", plan_cleanup(storage, cutoff))
        .await
        .map_err(|e| e.to_string())?;
    let verb = if dry_run { "would delete" } else { "deleting" };
    for job in &plan.jobs {
        writeln!(
            out,
            "{verb} job {} ({} objects, {})",
            job.name,
            job.objects,
            format::bytes(job.bytes)
        )
        .map_err(io)?;
    }
    for value in &plan.broadcasts {
        writeln!(
            out,
            "{verb} broadcast value {} ({})",
            value.name,
            format::bytes(value.bytes)
        )
        .map_err(io)?;
    }
    for id in &plan.kept_running {
        writeln!(out, "keeping job {id}: tasks of it may still run").map_err(io)?;
    }
    let summary = format!(
        "{} jobs and {} broadcast values older than {}: {} objects, {}",
        plan.jobs.len(),
        plan.broadcasts.len(),
        format::duration(older_than),
        plan.objects(),
        format::bytes(plan.bytes())
    );
    let cloud = config.config.backend != "local";
    let deleting: Vec<String> = plan.jobs.iter().map(|j| j.name.clone()).collect();
    let leftovers = Leftovers::new(storage.home_tag(), plan.kept.iter().cloned());
    if dry_run {
        if cloud {
            let request = CleanupRequest::default()
                .with_leftovers(leftovers)
                .dry_run(true);
            if !deleting.is_empty() {
                writeln!(
                    out,
                    "would also delete these jobs' cloud jobs on the profile's `{}` backend",
                    config.config.backend
                )
                .map_err(io)?;
            }
            for found in release_cloud(config, request).await? {
                writeln!(out, "would delete {found}").map_err(io)?;
            }
        }
        return writeln!(out, "dry run: would free {summary}").map_err(io);
    }
    let deleted = format::with_spinner("deleting", apply_cleanup(storage, &plan))
        .await
        .map_err(|e| e.to_string())?;
    writeln!(out, "freed {summary} ({deleted} objects deleted)").map_err(io)?;
    if cloud {
        let request = CleanupRequest::default()
            .with_jobs(deleting)
            .with_leftovers(leftovers);
        for released in release_cloud(config, request).await? {
            writeln!(out, "released {released}").map_err(io)?;
        }
    }
    Ok(())
}

/// Sends `request` to each region of the profile's backend (deleting the named jobs' cloud
/// jobs and the leftovers it finds, or, for a dry run, only finding them); returns what each
/// released or would.
async fn release_cloud(
    config: &LoadedConfig,
    request: CleanupRequest,
) -> Result<Vec<String>, String> {
    let regions: Vec<LoadedConfig> = match config.config.regions.len() {
        0 => vec![config.clone()],
        n => (0..n).filter_map(|i| config.for_region(i)).collect(),
    };
    let mut released = Vec::new();
    for region in regions {
        if region.config.backend == "local" {
            continue;
        }
        let executor = redwood_core::raw::factory::build_backend(&region)
            .map_err(|e| format!("cannot reach the profile's backend to clean up: {e}"))?;
        let reply = format::with_spinner(
            "looking at the cloud account",
            executor.release(request.clone()),
        )
        .await
        .map_err(|e| format!("cannot clean up on the `{}` backend: {e}", executor.name()))?;
        released.extend(reply.released);
    }
    Ok(released)
}
