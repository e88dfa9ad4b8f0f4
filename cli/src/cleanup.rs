//! `redwood cancel JOB` and `redwood cleanup`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use redwood_core::Storage;
use redwood_core::inspect::{apply_cleanup, plan_cleanup, read_job};

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
    if dry_run {
        return writeln!(out, "dry run: would free {summary}").map_err(io);
    }
    let deleted = format::with_spinner("deleting", apply_cleanup(storage, &plan))
        .await
        .map_err(|e| e.to_string())?;
    writeln!(out, "freed {summary} ({deleted} objects deleted)").map_err(io)
}
