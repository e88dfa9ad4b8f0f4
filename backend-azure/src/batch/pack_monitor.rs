//! The monitor's side of packs: a completed pack's report gives each task's times and the
//! tasks it released, which go back to Batch in new packs sized from what the report shows.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use redwood_core::raw::envelope::Outcome;
use redwood_core::{ErrorKind, Result, TaskErrorKind};
use serde_json::Value;

use super::job::{add_tasks, body};
use super::monitor::Monitor;
use super::outcome::{Completed, task_error};
use super::pack::{PackPolicy, PackReport, PackSpec, cut};
use super::tasks::Member;
use super::worker::TASK_ENV;

/// A completed Batch task (one task's or a pack's) and those of its tasks still out.
pub(crate) struct Finished {
    pub(crate) id: String,
    pub(crate) attempt: u32,
    pub(crate) tasks: Vec<u64>,
    pub(crate) pack: bool,
    pub(crate) item: Value,
}

fn time_of(us: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(us)
}

impl Monitor {
    /// Each finished task's completion to read; a pack's released tasks go back to Batch.
    pub(crate) async fn unpack(&self, finished: Vec<Finished>) -> Vec<Completed> {
        let mpi = self.template.spec.options.mpi.is_some();
        let mut out = Vec::new();
        for f in finished {
            let report = if f.pack {
                self.read_report(&f.id, true).await
            } else {
                None
            };
            let mut times: HashMap<u64, (u64, u64)> = HashMap::new();
            let mut released = Vec::new();
            if let Some(r) = &report {
                self.template
                    .times
                    .add(r.times.iter().map(|&(_, s, e)| e.saturating_sub(s)));
                times.extend(r.times.iter().map(|&(t, s, e)| (t, (s, e))));
                released = f
                    .tasks
                    .iter()
                    .copied()
                    .filter(|t| r.released.contains(t))
                    .collect();
            }
            if !released.is_empty()
                && let Err(e) = self.relaunch(&f, &released, report.as_ref()).await
            {
                // Never run: the driver hears of each as lost, and may retry it.
                tracing::warn!(job = %self.template.spec.id, pack = %f.id, error = %e, "cannot launch a pack's released tasks again");
                for &task in &released {
                    let message =
                        format!("its pack released it and it could not be added again: {e}");
                    let e = task_error(
                        &self.template.spec.id,
                        &self.template.spec.function,
                        (task, f.attempt),
                        TaskErrorKind::Lost,
                        message,
                    );
                    let c = self.completed(&f, task, None, mpi);
                    self.report(c, Outcome::Err(e), None, false);
                }
            }
            for &task in f.tasks.iter().filter(|t| !released.contains(t)) {
                let at = times.get(&task).map(|&(s, e)| (time_of(s), time_of(e)));
                out.push(self.completed(&f, task, at, mpi));
            }
        }
        out
    }

    fn completed(
        &self,
        f: &Finished,
        task: u64,
        times: Option<(SystemTime, SystemTime)>,
        mpi: bool,
    ) -> Completed {
        Completed {
            index: task,
            attempt: f.attempt,
            item: f.item.clone(),
            mpi,
            batch_id: f.id.clone(),
            times,
        }
    }

    /// The tasks of running packs that have stored their outcome (each pack stores its report
    /// so far every half second): their completions, handed on before their packs end.
    pub(crate) async fn progress(&self) -> Vec<Completed> {
        // Only packs of several tasks report as they go; a listing while none is out is waste.
        if self.template.pack_policy() == PackPolicy::Fixed(1) || !self.attempts.any_packed() {
            return Vec::new();
        }
        let job = &self.template.spec.id;
        self.polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let running = match self
            .client
            .list(
                "list_tasks",
                &format!("/jobs/{job}/tasks"),
                &[
                    ("$filter", "state eq 'running'"),
                    ("$select", "id,executionInfo,nodeInfo"),
                ],
            )
            .await
        {
            Ok(items) => items,
            Err(e) => {
                tracing::debug!(job = %job, error = %e, "cannot list the running packs");
                return Vec::new();
            }
        };
        let mpi = self.template.spec.options.mpi.is_some();
        let mut out = Vec::new();
        for item in running {
            let Some(id) = item["id"].as_str().map(str::to_string) else {
                continue;
            };
            let Some((tasks, attempt)) = super::pack::parse_pack_id(&id) else {
                continue;
            };
            let out_now: Vec<u64> = tasks
                .filter(|&t| self.attempts.attempt_of(t) == Some(attempt))
                .collect();
            if out_now.is_empty() {
                continue;
            }
            let Some(report) = self.read_report(&id, false).await else {
                continue;
            };
            let f = Finished {
                id,
                attempt,
                tasks: Vec::new(),
                pack: true,
                item,
            };
            for &(task, s, e) in report.times.iter().filter(|(t, _, _)| out_now.contains(t)) {
                out.push(self.completed(&f, task, Some((time_of(s), time_of(e))), mpi));
            }
        }
        out
    }

    /// A pack's report, when it stored one (a pack that crashed did not); `settle`: a pack
    /// that has just completed may take a moment to show it.
    async fn read_report(&self, id: &str, settle: bool) -> Option<PackReport> {
        let key = self.template.report_key(&self.storage, id);
        let waits: &[u64] = if settle { &[0, 300] } else { &[0] };
        for &wait in waits {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            match self.storage.get(&key).await {
                Ok(bytes) => return serde_json::from_slice(&bytes).ok(),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::debug!(pack = %id, error = %e, "cannot read a pack's report");
                    return None;
                }
            }
        }
        None
    }

    /// Adds a pack's released tasks again, in packs sized from the task times known now (or
    /// the pack's own); where their arguments are comes from the pack's description.
    async fn relaunch(
        &self,
        f: &Finished,
        released: &[u64],
        report: Option<&PackReport>,
    ) -> Result<()> {
        let job = &self.template.spec.id;
        let item = self
            .client
            .get("get_task", &format!("/jobs/{job}/tasks/{}", f.id))
            .await?;
        let spec: Option<PackSpec> = item["environmentSettings"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == TASK_ENV))
            .and_then(|e| e["value"].as_str())
            .and_then(|v| serde_json::from_str::<Value>(v).ok())
            .and_then(|v| serde_json::from_value(v["pack"].clone()).ok());
        let Some(spec) = spec else {
            return Err(redwood_core::Error::new(
                ErrorKind::Backend,
                format!("pack {} has no readable description", f.id),
            ));
        };
        let ranges: HashMap<u64, (u64, u64)> =
            spec.tasks.iter().map(|t| (t.task, t.range)).collect();
        let mut typical = self.template.times.typical_us();
        if typical == 0
            && let Some(r) = report
        {
            let mut took: Vec<u64> = r
                .times
                .iter()
                .map(|&(_, s, e)| e.saturating_sub(s))
                .collect();
            took.sort_unstable();
            typical = took.get(took.len() / 2).copied().unwrap_or(0);
        }
        let policy = self.template.pack_policy();
        let size = policy.size(released.len(), self.template.slots, typical);
        let items: Vec<(u64, u32)> = released.iter().map(|&t| (t, f.attempt)).collect();
        let mut bodies = Vec::new();
        for pack in cut(&items, size) {
            let members: Vec<Member<'_>> = pack
                .iter()
                .filter_map(|&i| {
                    let task = items[i].0;
                    ranges.get(&task).map(|&range| Member {
                        task,
                        range,
                        args: None,
                    })
                })
                .collect();
            if members.len() != pack.len() {
                return Err(redwood_core::Error::new(
                    ErrorKind::Backend,
                    format!("pack {} does not describe every task it released", f.id),
                ));
            }
            let seq = fastrand::u32(1..);
            bodies.push(body(
                &self.template,
                &self.storage,
                &members,
                f.attempt,
                seq,
                policy.budget(),
            )?);
        }
        tracing::debug!(job = %job, pack = %f.id, released = released.len(), size, "launching a pack's released tasks again");
        add_tasks(&self.client, job, bodies).await
    }
}
