//! One job on Batch as the job driver sees it: attempts become Batch tasks (added in
//! collections of up to 100, several requests in flight), stopping and closing end the Batch
//! job, and the [`Monitor`](super::monitor::Monitor) reports how each attempt ended.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use futures::StreamExt;
use redwood_core::raw::executor::{Attempt, ExecutorJob};
use redwood_core::retry::RetryPolicy;
use redwood_core::{Error, ErrorKind, Result, Storage};
use serde_json::json;
use tokio::sync::watch;

use super::client::BatchClient;
use super::monitor::{Attempts, Running};
use super::pack::cut;
use super::tasks::{JobTemplate, Member, chunks};

/// `addtaskcollection` requests in flight at once.
const ADDS_IN_FLIGHT: usize = 8;

/// A job's attempts on Batch.
pub(crate) struct BatchJob {
    pub(crate) client: BatchClient,
    pub(crate) storage: Storage,
    pub(crate) template: JobTemplate,
    pub(crate) attempts: Arc<Attempts>,
    /// Stops the monitor.
    pub(crate) stop: watch::Sender<bool>,
}

impl BatchJob {
    /// The add-task body of one task, or of a pack of several.
    fn body(
        &self,
        members: &[Member<'_>],
        attempt: u32,
        seq: u32,
        budget: Option<std::time::Duration>,
    ) -> Result<serde_json::Value> {
        body(&self.template, &self.storage, members, attempt, seq, budget)
    }

    /// Ends the Batch job (so it stops counting against the account's active jobs, and its
    /// tasks stop) and the monitor.
    async fn terminate(&self, reason: &str) -> Result<()> {
        // Once is enough: a job stopped (cancelled) is closed right after.
        if self.stop.send_replace(true) {
            return Ok(());
        }
        let job = &self.template.spec.id;
        match self
            .client
            .post(
                "terminate_job",
                &format!("/jobs/{job}/terminate"),
                &json!({ "terminateReason": reason }),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.kind() == ErrorKind::NotFound || e.service_code() == Some("JobCompleted") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl ExecutorJob for BatchJob {
    async fn launch(&self, attempts: Vec<Attempt>) -> Result<()> {
        let job = &self.template.spec.id;
        let span = tracing::debug_span!("batch.launch", job = %job, attempts = attempts.len());
        let _guard = span.enter();
        let now = SystemTime::now();
        let policy = self.template.pack_policy();
        let size = policy.size(
            attempts.len(),
            self.template.slots,
            self.template.times.typical_us(),
        );
        let items: Vec<(u64, u32)> = attempts.iter().map(|a| (a.task, a.attempt)).collect();
        let mut bodies = Vec::new();
        let mut packed = vec![false; attempts.len()];
        for pack in cut(&items, size) {
            if pack.len() > 1 {
                for &i in &pack {
                    packed[i] = true;
                }
            }
            let members: Vec<Member<'_>> = pack
                .iter()
                .map(|&i| Member {
                    task: attempts[i].task,
                    range: attempts[i].range,
                    args: Some(&attempts[i].args),
                })
                .collect();
            let attempt = attempts[pack[0]].attempt;
            bodies.push(self.body(&members, attempt, 0, policy.budget())?);
        }
        let running = attempts.iter().zip(packed).map(|(a, packed)| {
            (
                a.task,
                Running {
                    attempt: a.attempt,
                    minted: (a.attempt > 1).then_some(now),
                    packed,
                },
            )
        });
        drop(_guard);
        // Noted first, so a task that completes at once is not missed.
        self.attempts.add(running);
        if let Err(e) = add_tasks(&self.client, job, bodies).await {
            self.attempts.forget(attempts.iter().map(|a| a.task));
            return Err(e);
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        self.terminate("cancelled by Redwood").await
    }

    async fn close(&self) {
        if let Err(e) = self.terminate("every task finished").await {
            tracing::debug!(job = %self.template.spec.id, error = %e, "cannot end the Batch job");
        }
    }
}

/// Adds every task, `ADDS_IN_FLIGHT` collections at a time; a task Batch refuses for good
/// is an error naming it.
pub(crate) async fn add_tasks(
    client: &BatchClient,
    job: &str,
    bodies: Vec<serde_json::Value>,
) -> Result<()> {
    let results: Vec<Result<()>> = futures::stream::iter(chunks(bodies))
        .map(|chunk| async move {
            let left = Mutex::new(chunk);
            RetryPolicy::BATCH
                .run("add_tasks", || add_round(client, job, &left))
                .await
        })
        .buffer_unordered(ADDS_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

/// One `addtaskcollection` of the tasks in `left`; those Batch did not take for a transient
/// reason stay in it, and the round fails retryably. (The request itself was already retried by
/// the client, so its failure is final here.)
async fn add_round(
    client: &BatchClient,
    job: &str,
    left: &Mutex<Vec<serde_json::Value>>,
) -> Result<()> {
    let chunk = left.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let results = client
        .add_task_collection(job, &chunk)
        .await
        .map_err(|e| e.set_retryable(false))?;
    let mut again = Vec::new();
    for r in results {
        if r.added {
            continue;
        }
        if !r.retryable {
            return Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "Batch refused task {} of job {job}: {} {}",
                    r.task_id,
                    r.error_code.unwrap_or_default(),
                    r.error_message.unwrap_or_default()
                ),
            ));
        }
        if let Some(b) = chunk.iter().find(|b| b["id"] == r.task_id.as_str()) {
            again.push(b.clone());
        }
    }
    let count = again.len();
    *left.lock().unwrap_or_else(|p| p.into_inner()) = again;
    if count == 0 {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Backend,
        format!("Batch did not take {count} tasks of job {job} (server errors)"),
    )
    .set_retryable(true))
}

/// The add-task body of one task (a plain Batch task, as without packing) or of a pack.
pub(crate) fn body(
    template: &JobTemplate,
    storage: &Storage,
    members: &[Member<'_>],
    attempt: u32,
    seq: u32,
    budget: Option<std::time::Duration>,
) -> Result<serde_json::Value> {
    match members {
        [one] => template.task_body(storage, one.task, attempt, one.range, one.args),
        _ => template.pack_body(storage, members, attempt, seq, budget),
    }
}
