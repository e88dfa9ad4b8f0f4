//! `redwood jobs`: the jobs in the storage namespace.

use std::io::Write;

use redwood_core::Storage;
use redwood_core::inspect::{StoredJob, list_jobs};

use crate::format;

/// Lists the jobs, as a table or (with `json`) one JSON array.
pub async fn run(storage: &Storage, json: bool, out: &mut dyn Write) -> Result<(), String> {
    let jobs = format::with_spinner("reading the jobs", list_jobs(storage))
        .await
        .map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| format!("cannot write the output: {e}");
    if json {
        let all: Vec<serde_json::Value> = jobs.iter().map(summary).collect();
        let text = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
        return writeln!(out, "{text}").map_err(io);
    }
    if jobs.is_empty() {
        return writeln!(out, "no jobs in {}", storage.url()).map_err(io);
    }
    let rows: Vec<[String; 7]> = jobs
        .iter()
        .map(|j| {
            let mut backend = j.manifest.backend.clone();
            let regions = j.regions();
            if !regions.is_empty() {
                backend.push_str(&format!(" ({})", regions.join(", ")));
            }
            let mut tasks = format!(
                "{}/{} done, {} failed",
                j.succeeded, j.manifest.spec.task_count, j.failed
            );
            if j.unfinished > 0 {
                tasks.push_str(&format!(", {} unfinished", j.unfinished));
            }
            if j.cancelled {
                tasks.push_str(", cancelled");
            }
            [
                j.id().to_string(),
                j.manifest.spec.function.clone(),
                backend,
                tasks,
                format::time(j.submitted()),
                format::duration(j.duration()),
                format::bytes(j.bytes),
            ]
        })
        .collect();
    let header = [
        "JOB",
        "FUNCTION",
        "BACKEND",
        "TASKS",
        "SUBMITTED",
        "DURATION",
        "SIZE",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        s
    };
    writeln!(out, "{}", line(header.to_vec())).map_err(io)?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect())).map_err(io)?;
    }
    Ok(())
}

/// A job as JSON (shared with `redwood show --json`).
pub fn summary(j: &StoredJob) -> serde_json::Value {
    serde_json::json!({
        "id": j.id(),
        "function": j.manifest.spec.function,
        "backend": j.manifest.backend,
        "regions": j.regions(),
        "tasks": j.manifest.spec.task_count,
        "succeeded": j.succeeded,
        "failed": j.failed,
        "unfinished": j.unfinished,
        "cancelled": j.cancelled,
        "submitted": format::time(j.submitted()),
        "duration_ms": j.duration().as_millis() as u64,
        "objects": j.objects,
        "bytes": j.bytes,
    })
}
