//! Warm workers (`workers = "warm"`): a job's tasks go, many per message, to a queue of the
//! program in the region's storage account (the `azure-functions` executor's messages,
//! outcomes and watcher), and long-lived Batch tasks on the pool's nodes take them
//! ([`super::warm_worker`]). A [`Keeper`] starts one worker per node when work is queued and
//! too few run; workers exit after an idle time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redwood_core::raw::executor::{Attempt, ExecutorJob};
use redwood_core::storage::Access;
use redwood_core::{Error, ErrorKind, Result, Storage};
use serde_json::json;
use tracing::Instrument;

use super::client::BatchClient;
use super::pool;
use super::tasks::{program_command_line, program_file};
use super::warm_worker::{MODE, SPEC_ENV, WarmSpec};
use crate::functions::config::Taker;
use crate::functions::{AzureFunctionsBackend, FunctionsSettings};
use crate::queue::{Queue, QueueService};

/// How long a warm worker waits for work before it exits, unless configured.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(120);
/// How long a taken message stays hidden between two renewals by its worker (a message whose
/// worker died comes back after at most this long).
const VISIBILITY: Duration = Duration::from_secs(30);
/// How often the keeper looks whether queued work has workers.
const KEEPER_EVERY: Duration = Duration::from_secs(3);
/// Two checks of the workers at most this close together.
const CHECK_AT_MOST_EVERY: Duration = Duration::from_millis(500);

/// Where the warm workers of one backend run, and how.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    /// The Batch client.
    pub client: BatchClient,
    /// The pool.
    pub pool: String,
    /// Its task slots per node (a worker holds a whole node).
    pub slots_per_node: u64,
    /// Its nodes, when fixed (else read from the pool).
    pub nodes: Option<u64>,
    /// How long signed URLs stay valid.
    pub sas_valid_for: Duration,
    /// Batch-level retries of the job preparation task.
    pub infra_retries: u32,
}

/// The warm mode of a backend: for each store and program, a queue executor and
/// the workers it keeps.
#[derive(Debug)]
pub(crate) struct Warm {
    /// How long an idle worker waits before it exits.
    pub idle: Duration,
    queues: tokio::sync::Mutex<HashMap<String, WarmQueue>>,
    /// The Batch jobs of warm workers made, deleted on cleanup.
    made: Arc<Mutex<Vec<String>>>,
}

/// One program's queue in one store's account: its executor and its keeper.
#[derive(Clone)]
pub(crate) struct WarmQueue {
    /// The executor that sends groups and watches their outcomes.
    pub executor: Arc<AzureFunctionsBackend>,
    /// What starts workers.
    pub keeper: Arc<Keeper>,
}

impl std::fmt::Debug for WarmQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmQueue")
            .field("queue", &self.keeper.queue.name())
            .finish_non_exhaustive()
    }
}

impl Warm {
    /// Warm mode with workers idle for at most `idle`.
    pub fn new(idle: Duration) -> Warm {
        Warm {
            idle,
            queues: Default::default(),
            made: Arc::default(),
        }
    }

    /// The Batch jobs of warm workers made so far.
    pub fn made_jobs(&self) -> Vec<String> {
        self.made.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The queue of `program` in `storage`'s account (made, with its poison queue, on first
    /// use), and its keeper.
    pub async fn queue(
        &self,
        storage: &Storage,
        program: &str,
        placement: &Placement,
    ) -> Result<WarmQueue> {
        let id = format!("{}/{program}", storage.identity());
        let mut queues = self.queues.lock().await;
        if let Some(q) = queues.get(&id) {
            return Ok(q.clone());
        }
        let service = crate::blob::queue_service(storage)?;
        let name = queue_name(program);
        let queue = Arc::new(service.queue(&name)?);
        let poison = service.queue(&format!("{name}-poison"))?;
        queue.create().await?;
        poison.create().await?;
        let mut settings = FunctionsSettings::new(&name, String::new());
        settings.base64 = false;
        // Outcomes are listed in storage, not asked of Batch: the Functions executor's pace
        // (the region's `poll_interval` paces Batch requests).
        settings.sas_valid_for = placement.sas_valid_for;
        // Warm workers have no time limit of their own: a group is sized by task times only.
        settings.function_timeout = Duration::from_secs(365 * 24 * 3600);
        // A group runs on a whole node at once.
        settings.group_workers = u32::try_from(placement.slots_per_node).unwrap_or(u32::MAX);
        settings.taker = Taker::WarmWorkers;
        let executor = Arc::new(AzureFunctionsBackend::on_service(settings, &service)?);
        let keeper = Arc::new(Keeper {
            placement: placement.clone(),
            storage: storage.clone(),
            program: program.to_string(),
            service,
            queue,
            idle: self.idle,
            checked: tokio::sync::Mutex::new(None),
            job: tokio::sync::Mutex::new(None),
            made: self.made.clone(),
        });
        tokio::spawn(
            keep(Arc::downgrade(&keeper))
                .instrument(tracing::debug_span!("batch.warm_keeper", queue = %name)),
        );
        let q = WarmQueue { executor, keeper };
        queues.insert(id, q.clone());
        Ok(q)
    }
}

/// The queue of a program: `redwood-warm-` and the start of its sha256.
fn queue_name(program: &str) -> String {
    format!("redwood-warm-{}", &program[..24.min(program.len())])
}

/// Starts warm workers when queued work has too few.
pub(crate) struct Keeper {
    placement: Placement,
    storage: Storage,
    program: String,
    service: QueueService,
    queue: Arc<Queue>,
    idle: Duration,
    /// When the workers were last counted (and enough found or started).
    checked: tokio::sync::Mutex<Option<Instant>>,
    /// The Batch job workers are added to now, and until when it is used.
    job: tokio::sync::Mutex<Option<(String, SystemTime)>>,
    made: Arc<Mutex<Vec<String>>>,
}

/// Looks every few seconds, for as long as the backend lives, whether queued work has workers.
async fn keep(keeper: Weak<Keeper>) {
    loop {
        tokio::time::sleep(KEEPER_EVERY).await;
        let Some(k) = keeper.upgrade() else { return };
        match k.queue.approximate_count().await {
            Ok(0) => {}
            Ok(_) => {
                if let Err(e) = k.ensure().await {
                    tracing::warn!("cannot start warm workers: {e}");
                }
            }
            Err(e) => tracing::debug!("cannot count the queued groups: {e}"),
        }
    }
}

impl Keeper {
    /// Makes sure a worker runs on each node: counts the workers not completed, and adds
    /// the missing ones.
    pub async fn ensure(&self) -> Result<()> {
        let mut checked = self.checked.lock().await;
        if checked.is_some_and(|t| t.elapsed() < CHECK_AT_MOST_EVERY) {
            return Ok(());
        }
        let p = &self.placement;
        let span = tracing::debug_span!("batch.warm_workers", pool = %p.pool);
        async {
            let job = self.job().await?;
            let nodes = match p.nodes {
                Some(n) => n,
                None => pool::node_count(&p.client, &p.pool).await?,
            };
            let active = p
                .client
                .list(
                    "list_tasks",
                    &format!("/jobs/{job}/tasks"),
                    &[("$filter", "state ne 'completed'"), ("$select", "id")],
                )
                .await?
                .len();
            let missing = nodes.max(1).saturating_sub(active as u64);
            if missing > 0 {
                let tasks = (0..missing)
                    .map(|_| self.worker_body())
                    .collect::<Result<Vec<_>>>()?;
                for chunk in tasks.chunks(100) {
                    let added = p.client.add_task_collection(&job, chunk).await?;
                    if let Some(failed) = added.iter().find(|a| !a.added) {
                        return Err(Error::new(
                            ErrorKind::Backend,
                            format!(
                                "Batch did not take warm worker {}: {} {}",
                                failed.task_id,
                                failed.error_code.as_deref().unwrap_or("(no code)"),
                                failed.error_message.as_deref().unwrap_or_default()
                            ),
                        ));
                    }
                }
                tracing::info!(job = %job, added = missing, "warm workers started");
            }
            Ok::<_, Error>(())
        }
        .instrument(span)
        .await?;
        *checked = Some(Instant::now());
        Ok(())
    }

    /// The Batch job workers go to now: one per program, queue and period of half the SAS
    /// validity (its program download URL must stay valid while nodes join), made when first
    /// needed.
    async fn job(&self) -> Result<String> {
        let mut job = self.job.lock().await;
        if let Some((id, until)) = job.as_ref()
            && SystemTime::now() < *until
        {
            return Ok(id.clone());
        }
        let p = &self.placement;
        let half = (p.sas_valid_for / 2).as_secs().max(60);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let period = now / half;
        let until = UNIX_EPOCH + Duration::from_secs(period.saturating_add(1).saturating_mul(half));
        let place = {
            use sha2::Digest;
            let digest = sha2::Sha256::new()
                .chain_update(self.service.endpoint().as_bytes())
                .chain_update([0u8])
                .chain_update(self.queue.name().as_bytes())
                .chain_update([0u8])
                .chain_update(self.program.as_bytes())
                .finalize();
            digest[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let id = format!("redwood-warm-{place}-{period}");
        let binary_key = self.storage.layout().binary(&self.program);
        let binary_url =
            self.storage
                .signed_url(Some(&binary_key), Access::READ, p.sas_valid_for)?;
        let body = json!({
            "id": id,
            "poolInfo": { "poolId": p.pool },
            "onAllTasksComplete": "noaction",
            "commonEnvironmentSettings": [
                { "name": redwood_core::raw::worker::WORKER_ENV, "value": MODE },
            ],
            "jobPreparationTask": {
                "id": "redwood-program",
                "commandLine": "/bin/true",
                "resourceFiles": [program_file(&binary_url, &self.program)],
                "waitForSuccess": true,
                "constraints": { "maxTaskRetryCount": p.infra_retries },
            },
        });
        match p.client.post("add_job", "/jobs", &body).await {
            Ok(_) => {}
            Err(e) if e.service_code() == Some("JobExists") => {}
            Err(e) => return Err(e),
        }
        if let Ok(mut made) = self.made.lock()
            && !made.contains(&id)
        {
            made.push(id.clone());
        }
        *job = Some((id.clone(), until));
        Ok(id)
    }

    /// The add-task body of one warm worker: it holds a whole node, runs as many tasks at
    /// once as the node has slots, and reaches the queue with a SAS of its own.
    fn worker_body(&self) -> Result<serde_json::Value> {
        let p = &self.placement;
        let expires = SystemTime::now() + p.sas_valid_for;
        let spec = WarmSpec {
            endpoint: self.service.endpoint().to_string(),
            queue: self.queue.name().to_string(),
            sas: self.service.worker_sas(expires)?,
            sas_expires: expires
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            visibility_ms: u64::try_from(VISIBILITY.as_millis()).unwrap_or(u64::MAX),
            idle_ms: u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX),
            tasks: u32::try_from(p.slots_per_node.saturating_mul(4)).unwrap_or(u32::MAX),
        };
        let spec = serde_json::to_string(&spec).map_err(|e| {
            Error::new(
                ErrorKind::Codec,
                format!("cannot encode a warm worker's description: {e}"),
            )
        })?;
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Ok(json!({
            "id": format!("w{millis}-{:08x}", fastrand::u32(..)),
            "commandLine": program_command_line(&self.program),
            "requiredSlots": p.slots_per_node.max(1),
            "environmentSettings": [
                { "name": SPEC_ENV, "value": spec },
                { "name": "REDWOOD_WORKERS", "value": p.slots_per_node.max(1).to_string() },
            ],
            "constraints": { "maxTaskRetryCount": 0 },
        }))
    }
}

/// A job on warm workers: the queue executor's job, which also makes sure workers run when
/// it launches.
pub(crate) struct WarmJob {
    /// The queue executor's job.
    pub inner: Box<dyn ExecutorJob>,
    /// What starts workers.
    pub keeper: Arc<Keeper>,
}

#[async_trait]
impl ExecutorJob for WarmJob {
    async fn launch(&self, attempts: Vec<Attempt>) -> Result<()> {
        self.inner.launch(attempts).await?;
        // In the background: the launch does not wait for Batch. If it fails, the keeper
        // tries again within seconds; the groups wait in the queue meanwhile.
        let keeper = self.keeper.clone();
        tokio::spawn(
            async move {
                if let Err(e) = keeper.ensure().await {
                    tracing::warn!("cannot start warm workers: {e}");
                }
            }
            .instrument(tracing::Span::current()),
        );
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        self.inner.stop().await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_has_a_valid_queue_name() {
        let name = queue_name(&"ab12".repeat(16));
        assert_eq!(name, "redwood-warm-ab12ab12ab12ab12ab12ab12");
        assert!(crate::queue::valid_queue_name(&name));
        assert!(crate::queue::valid_queue_name(&format!("{name}-poison")));
    }
}
