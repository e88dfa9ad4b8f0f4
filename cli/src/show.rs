//! `redwood show JOB`: one job's stats, where its tasks ran, and its failures.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use redwood_core::Storage;
use redwood_core::inspect::{StoredJob, read_job};
use redwood_core::raw::events::TaskRecord;

use crate::format;

/// What ran in one lane (or region).
#[derive(Debug, Default)]
struct Tally {
    attempts: u64,
    ok: u64,
    failed: u64,
    busy: Duration,
}

impl Tally {
    fn add(&mut self, r: &TaskRecord) {
        self.attempts += 1;
        if r.ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        if let Some(start) = r.started_us {
            self.busy += Duration::from_micros(r.finished_us.saturating_sub(start));
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "attempts": self.attempts, "ok": self.ok, "failed": self.failed,
            "busy_ms": self.busy.as_millis() as u64,
        })
    }
}

/// Prints the job, as text or (with `json`) one JSON object.
pub async fn run(
    storage: &Storage,
    id: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let job = format::with_spinner("reading the job", read_job(storage, id))
        .await
        .map_err(|e| e.to_string())?;
    let (lanes, regions) = tallies(&job);
    let retries = job.attempts.iter().filter(|r| r.retried).count();
    let requeues: u64 = job.attempts.iter().map(|r| u64::from(r.requeues)).sum();
    let mut times: Vec<Duration> = job
        .attempts
        .iter()
        .filter(|r| !r.retried)
        .filter_map(|r| {
            r.started_us
                .map(|s| Duration::from_micros(r.finished_us.saturating_sub(s)))
        })
        .collect();
    times.sort();
    let median = times.get(times.len() / 2).copied();
    let longest = times.last().copied();
    let io = |e: std::io::Error| format!("cannot write the output: {e}");
    if json {
        let mut value = crate::jobs::summary(&job);
        value["retries"] = retries.into();
        value["requeues"] = requeues.into();
        value["median_task_ms"] = median.map(|d| d.as_millis() as u64).into();
        value["max_task_ms"] = longest.map(|d| d.as_millis() as u64).into();
        value["lanes"] = lanes
            .iter()
            .map(|(k, t)| (k.clone(), t.json()))
            .collect::<serde_json::Map<_, _>>()
            .into();
        value["per_region"] = regions
            .iter()
            .map(|(k, t)| (k.clone(), t.json()))
            .collect::<serde_json::Map<_, _>>()
            .into();
        value["failures"] = job
            .failures
            .iter()
            .map(|e| {
                serde_json::json!({
                    "task": e.task, "attempt": e.attempt, "kind": format!("{:?}", e.kind),
                    "message": e.message, "location": e.location, "exit_code": e.exit_code,
                    "signal": e.signal, "stderr_tail": e.stderr_tail,
                })
            })
            .collect::<Vec<_>>()
            .into();
        let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        return writeln!(out, "{text}").map_err(io);
    }
    let m = &job.manifest;
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line(format!("job        {}", job.id()));
    line(format!("function   {}", m.spec.function));
    line(format!("backend    {}", m.backend));
    line(format!("storage    {}", m.storage));
    line(format!(
        "submitted  {} (took {})",
        format::time(job.submitted()),
        format::duration(job.duration())
    ));
    let mut state = format!(
        "{} tasks: {} succeeded, {} failed",
        m.spec.task_count, job.succeeded, job.failed
    );
    if job.unfinished > 0 {
        state.push_str(&format!(", {} unfinished", job.unfinished));
    }
    if job.cancelled {
        state.push_str(" (cancelled)");
    }
    line(format!("tasks      {state}"));
    line(format!(
        "attempts   {} recorded, {retries} retried, {requeues} requeued after a lost node",
        job.attempts.len()
    ));
    if let (Some(median), Some(longest)) = (median, longest) {
        line(format!(
            "task time  median {}, longest {}",
            format::duration(median),
            format::duration(longest)
        ));
    }
    line(format!(
        "stored     {} objects, {}",
        job.objects,
        format::bytes(job.bytes)
    ));
    if !regions.is_empty() {
        line(String::new());
        line("per region:".into());
        for (name, t) in &regions {
            line(format!("  {name}: {} ok, {} failed", t.ok, t.failed));
        }
    }
    if !lanes.is_empty() {
        line(String::new());
        line("per node or worker (attempts, ok, failed, busy):".into());
        for (name, t) in &lanes {
            line(format!(
                "  {name}: {} attempts, {} ok, {} failed, busy {}",
                t.attempts,
                t.ok,
                t.failed,
                format::duration(t.busy)
            ));
        }
    }
    if !job.failures.is_empty() {
        line(String::new());
        line("failed tasks:".into());
        for e in &job.failures {
            let mut how = Vec::new();
            if let Some(code) = e.exit_code {
                how.push(format!("exit code {code}"));
            }
            if let Some(signal) = e.signal {
                how.push(format!("signal {signal}"));
            }
            if let Some(at) = &e.location {
                how.push(format!("at {at}"));
            }
            let how = if how.is_empty() {
                String::new()
            } else {
                format!(" ({})", how.join(", "))
            };
            line(format!(
                "  task {} (attempt {}): {}{how}: {}",
                e.task, e.attempt, e.kind, e.message
            ));
            if let Some(tail) = &e.stderr_tail {
                for l in tail
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    line(format!("      | {l}"));
                }
            }
        }
    }
    write!(out, "{text}").map_err(io)
}

/// Attempts per lane and per region.
fn tallies(job: &StoredJob) -> (BTreeMap<String, Tally>, BTreeMap<String, Tally>) {
    let mut lanes: BTreeMap<String, Tally> = BTreeMap::new();
    let mut regions: BTreeMap<String, Tally> = BTreeMap::new();
    for r in &job.attempts {
        lanes.entry(redwood_timeline::lane(r)).or_default().add(r);
        if let Some(region) = &r.region {
            regions.entry(region.clone()).or_default().add(r);
        }
    }
    (lanes, regions)
}
