//! `redwood logs JOB`: the tasks' stored logs, and each failed task's stderr tail and error.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use redwood_core::Storage;
use redwood_core::inspect::{read_job, task_log};

/// How often `--follow` looks again.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// Prints the logs of the job's tasks (or of `task`); with `follow`, keeps printing what
/// arrives until every task has ended.
pub async fn run(
    storage: &Storage,
    id: &str,
    task: Option<u64>,
    follow: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot write the output: {e}");
    let mut shown: BTreeSet<u64> = BTreeSet::new();
    loop {
        let job = read_job(storage, id).await.map_err(|e| e.to_string())?;
        let count = job.manifest.spec.task_count;
        if let Some(t) = task
            && t >= count
        {
            return Err(format!(
                "job `{id}` has {count} tasks (0 to {}); there is no task {t}",
                count.saturating_sub(1)
            ));
        }
        // The tasks that ended since the last look (all of them the first time).
        let mut ended: BTreeSet<u64> = job.attempts.iter().map(|r| r.task).collect();
        ended.extend(job.failures.iter().map(|e| e.task));
        let wanted: Vec<u64> = match task {
            Some(t) => vec![t],
            None => ended.iter().copied().collect(),
        };
        let mut printed_any = false;
        for t in wanted {
            if shown.contains(&t) || (follow && !ended.contains(&t)) {
                continue;
            }
            let log = task_log(storage, id, t).await.map_err(|e| e.to_string())?;
            let failure = job.failures.iter().find(|e| e.task == t);
            writeln!(out, "== task {t}").map_err(io)?;
            if log.is_none() && failure.is_none() {
                writeln!(
                    out,
                    "(no log stored: the {} backend stores logs of Batch tasks only; this task {})",
                    job.manifest.backend,
                    if ended.contains(&t) {
                        "succeeded"
                    } else {
                        "has not ended"
                    }
                )
                .map_err(io)?;
            }
            if let Some(log) = log {
                write!(out, "{log}").map_err(io)?;
                if !log.ends_with('\n') {
                    writeln!(out).map_err(io)?;
                }
            }
            if let Some(e) = failure {
                if let Some(tail) = &e.stderr_tail {
                    writeln!(out, "-- stderr (last lines of attempt {})", e.attempt).map_err(io)?;
                    writeln!(out, "{}", tail.trim_end()).map_err(io)?;
                }
                writeln!(
                    out,
                    "-- failed: {} (attempt {}): {}",
                    e.kind, e.attempt, e.message
                )
                .map_err(io)?;
            }
            shown.insert(t);
            printed_any = true;
        }
        let done = job.unfinished == 0 || job.cancelled;
        if !follow || done {
            if !printed_any && shown.is_empty() && !follow {
                writeln!(out, "no task of job `{id}` has ended yet").map_err(io)?;
            }
            return Ok(());
        }
        out.flush().map_err(io)?;
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}
