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
use super::tasks::{JobTemplate, chunks};

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
        let mut bodies = Vec::with_capacity(attempts.len());
        let mut running = Vec::with_capacity(attempts.len());
        for a in &attempts {
            bodies.push(self.template.task_body(
                &self.storage,
                a.task,
                a.attempt,
                a.range,
                Some(&a.args),
            )?);
            let minted = (a.attempt > 1).then_some(now);
            running.push((
                a.task,
                Running {
                    attempt: a.attempt,
                    minted,
                },
            ));
        }
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
