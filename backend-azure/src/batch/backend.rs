//! [`AzureBatchBackend`]: the `azure-batch` executor. Each job opened is one Batch job on a
//! pool (made ready, with the program uploaded, first); its attempts are Batch tasks
//! ([`super::job`]), watched by [`super::monitor`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_trait::async_trait;
use redwood_core::config::LoadedConfig;

use super::config::PoolConfig;
use redwood_core::raw::backend::{Capabilities, CleanupReply, CleanupRequest};
use redwood_core::raw::executor::{AttemptEnds, Executor, Health, OpenRequest, Opened};
use redwood_core::raw::factory::BackendFactory;
use redwood_core::storage::Access;
use redwood_core::{Error, ErrorKind, Result, Storage};
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use super::client::{BatchClient, BatchClientBuilder};
use super::credential::CredentialKind;
use super::job::BatchJob;
use super::leftovers;
use super::monitor::{Attempts, Monitor, Running};
use super::pack::PackPolicy;
use super::pool::{self, PoolFacts};
use super::tasks::{JobTemplate, parse_batch_id, sas_expiry};
use super::warm::{Placement, Warm, WarmJob};
use crate::task_times::TaskTimes;

/// The backend's name in configuration.
pub const NAME: &str = "azure-batch";

/// Runs tasks on an Azure Batch pool (or the emulator's): the program itself is uploaded once
/// per content hash and started on the nodes in worker mode.
#[derive(Debug)]
pub struct AzureBatchBackend {
    client: BatchClient,
    pool: PoolConfig,
    settings: Settings,
    state: tokio::sync::Mutex<Ready>,
    polls: Arc<AtomicU64>,
    /// What each function's tasks took lately (automatic pack sizes), shared by its jobs.
    task_times: std::sync::Mutex<HashMap<String, Arc<TaskTimes>>>,
    /// Warm workers (`workers = "warm"`), when on.
    warm: Option<Warm>,
}

#[derive(Debug, Clone)]
struct Settings {
    poll: Duration,
    sas_valid_for: Duration,
    allocation_timeout: Duration,
    infra_retries: u32,
    executable: Option<PathBuf>,
    progress: bool,
    pack: PackPolicy,
    /// Warm workers, and how long one waits for work before it exits.
    warm_idle: Option<Duration>,
}

#[derive(Debug, Default)]
struct Ready {
    pool_ready: bool,
    /// How the pool is set up, once allocated.
    pool_facts: Option<PoolFacts>,
    created_pool: bool,
    /// The sha256 of the program nodes run, once read.
    program: Option<String>,
    /// `<storage url>/<sha>` of the programs already uploaded.
    uploaded: HashSet<String>,
    /// The jobs this backend created, deleted on cleanup.
    jobs: Vec<String>,
}

/// Builds an [`AzureBatchBackend`].
#[derive(Debug, Clone)]
pub struct AzureBatchBackendBuilder {
    client: BatchClientBuilder,
    pool: PoolConfig,
    settings: Settings,
}

impl AzureBatchBackendBuilder {
    /// A backend on the account at `url`, signing with its shared key, on the default pool.
    pub fn new(url: impl Into<String>, account: impl Into<String>, key: impl Into<String>) -> Self {
        Self::from_client(BatchClientBuilder::new(url, account, key))
    }

    /// A backend on the account at `url`, signing with Microsoft Entra ID tokens from
    /// `credential` (any `azure_identity` credential, or one from [`CredentialKind::build`]).
    pub fn with_credential(
        url: impl Into<String>,
        account: impl Into<String>,
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
    ) -> Self {
        Self::from_client(BatchClientBuilder::with_credential(
            url, account, credential,
        ))
    }

    /// A backend using the client `client` builds (its URL, account, auth and retries).
    pub fn from_client(client: BatchClientBuilder) -> Self {
        AzureBatchBackendBuilder {
            client,
            pool: PoolConfig::default(),
            settings: Settings {
                poll: Duration::from_secs(1),
                sas_valid_for: Duration::from_secs(2 * 24 * 3600),
                allocation_timeout: Duration::from_secs(20 * 60),
                infra_retries: 2,
                executable: None,
                progress: true,
                pack: PackPolicy::Auto,
                warm_idle: None,
            },
        }
    }

    /// The pool to reuse or create.
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// How often finished tasks are listed (default 1 s).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.settings.poll = every;
        self
    }

    /// How long the URLs given to tasks stay valid (default 2 days).
    pub fn sas_valid_for(mut self, valid_for: Duration) -> Self {
        self.settings.sas_valid_for = valid_for;
        self
    }

    /// How long to wait for the pool's nodes (default 20 min).
    pub fn allocation_timeout(mut self, timeout: Duration) -> Self {
        self.settings.allocation_timeout = timeout;
        self
    }

    /// The executable nodes run (default: this one); it must be the same program built for
    /// the pool's OS.
    pub fn executable(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.executable = Some(path.into());
        self
    }

    /// Whether to show a progress bar while waiting for nodes (default true).
    pub fn progress(mut self, show: bool) -> Self {
        self.settings.progress = show;
        self
    }

    /// Runs `n` tasks per Batch task, one after another in one warm worker (1: one each);
    /// default: sized automatically from the pool's slots and measured task times. A job's
    /// `TaskOptions::pack` overrides it.
    pub fn pack(mut self, n: u32) -> Self {
        self.settings.pack = PackPolicy::Fixed(usize::try_from(n.max(1)).unwrap_or(1));
        self
    }

    /// Runs tasks on warm workers (`workers = "warm"`): long-lived Batch tasks, one per node,
    /// that take groups of tasks from a queue in the storage account and keep the program
    /// loaded across groups and jobs; each exits after `idle` without work, and new ones
    /// start when work arrives. Default: one Batch task per task or pack.
    pub fn warm_workers(mut self, idle: Duration) -> Self {
        self.settings.warm_idle = Some(idle);
        self
    }

    /// Builds the backend; the pool is made ready on the first submit.
    pub fn build(self) -> Result<AzureBatchBackend> {
        Ok(AzureBatchBackend {
            warm: self.settings.warm_idle.map(Warm::new),
            client: self.client.build()?,
            pool: self.pool,
            settings: self.settings,
            state: Default::default(),
            polls: Arc::default(),
            task_times: Default::default(),
        })
    }
}

impl AzureBatchBackend {
    /// The Batch client (for its request count).
    pub fn client(&self) -> &BatchClient {
        &self.client
    }

    /// The task times of `function` as learnt so far.
    fn task_time(&self, function: &str) -> Arc<TaskTimes> {
        match self.task_times.lock() {
            Ok(mut times) => times.entry(function.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// The pool's task slots, when its node count is fixed.
    fn slots(&self) -> Option<u64> {
        self.capabilities().slots
    }

    /// How many list requests the job watchers made.
    pub fn poll_requests(&self) -> u64 {
        self.polls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes the pool ready and the program uploaded; returns the program's sha256.
    async fn prepare(&self, storage: &Storage) -> Result<(String, PoolFacts)> {
        let mut ready = self.state.lock().await;
        if !ready.pool_ready || ready.pool_facts.is_none() {
            ready.created_pool = pool::ensure_pool(&self.client, &self.pool).await?;
            let facts = pool::wait_allocated(
                &self.client,
                &self.pool,
                self.settings.allocation_timeout,
                self.settings.poll.min(Duration::from_secs(5)),
                self.settings.progress,
            )
            .await?;
            ready.pool_facts = Some(facts);
            ready.pool_ready = true;
        }
        let facts = ready.pool_facts.clone().ok_or_else(|| {
            Error::new(ErrorKind::Unexpected, "the pool is ready but was not read")
        })?;
        // The program is read and hashed once; each store gets it once.
        let sha = match &ready.program {
            Some(sha) => sha.clone(),
            None => {
                let (_, bytes) = self.program().await?;
                let sha = redwood_core::raw::binary::sha256_hex(&bytes);
                ready.program = Some(sha.clone());
                sha
            }
        };
        let id = format!("{}/{sha}", storage.url());
        if !ready.uploaded.contains(&id) {
            let (_, bytes) = self.program().await?;
            upload_program(storage, &storage.layout().binary(&sha), bytes).await?;
            ready.uploaded.insert(id);
        }
        Ok((sha, facts))
    }

    /// The program nodes run, checked to be one they can start.
    async fn program(&self) -> Result<(PathBuf, Vec<u8>)> {
        let path = match &self.settings.executable {
            Some(p) => p.clone(),
            None => {
                if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "this program was built for {}-{}, but Batch pool `{}` runs Linux \
                             x86_64: build it with `--target x86_64-unknown-linux-musl` and set \
                             `executable` in the region's configuration to that build",
                            std::env::consts::ARCH,
                            std::env::consts::OS,
                            self.pool.id
                        ),
                    ));
                }
                std::env::current_exe().map_err(|e| {
                    Error::new(ErrorKind::Backend, "cannot locate the running executable")
                        .with_source(e)
                })?
            }
        };
        let bytes = tokio::fs::read(&path).await.map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("cannot read the executable {}: {e}", path.display()),
            )
        })?;
        if !bytes.starts_with(b"\x7fELF") {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{} is not a Linux executable, so Batch pool `{}` cannot run it: build the \
                     program with `--target x86_64-unknown-linux-musl`",
                    path.display(),
                    self.pool.id
                ),
            ));
        }
        Ok((path, bytes))
    }

    /// Starts the monitor of a job; returns the job's handle and its attempt ends.
    fn monitor(&self, storage: Storage, template: JobTemplate) -> (BatchJob, AttemptEnds) {
        let job = template.spec.id.clone();
        let (ends, receiver) = futures::channel::mpsc::unbounded();
        let (stop, stopped) = watch::channel(false);
        let attempts = Arc::new(Attempts::default());
        let monitor = Monitor {
            client: self.client.clone(),
            storage: storage.clone(),
            template: template.clone(),
            attempts: attempts.clone(),
            ends,
            stop: stopped,
            poll: self.settings.poll,
            polls: self.polls.clone(),
        };
        tokio::spawn(
            monitor
                .run()
                .instrument(tracing::debug_span!("batch.monitor", job = %job)),
        );
        let handle = BatchJob {
            client: self.client.clone(),
            storage,
            template,
            attempts,
            stop,
        };
        (handle, Box::pin(receiver))
    }

    /// The attempt of each task Batch has now (the latest, when a task was retried).
    async fn attempts_on_batch(&self, job: &str) -> Result<Vec<(u64, u32)>> {
        let existing = self
            .client
            .list(
                "list_tasks",
                &format!("/jobs/{job}/tasks"),
                &[("$select", "id")],
            )
            .await?;
        let mut latest: HashMap<u64, u32> = HashMap::new();
        for (tasks, attempt) in existing
            .iter()
            .filter_map(|t| t["id"].as_str().and_then(parse_batch_id))
        {
            for index in tasks {
                let a = latest.entry(index).or_insert(attempt);
                *a = (*a).max(attempt);
            }
        }
        Ok(latest.into_iter().collect())
    }

    /// The container's URL and a read-only SAS (query string) on it, for tasks.
    fn container_read_sas(&self, storage: &Storage) -> Result<(String, String)> {
        let read_url = storage.signed_url(None, Access::READ, self.settings.sas_valid_for)?;
        Ok(read_url
            .split_once('?')
            .map(|(c, q)| (c.to_string(), q.to_string()))
            .unwrap_or((read_url.clone(), String::new())))
    }

    /// The template of a job already on Batch (for `watch`): its program is the one its job
    /// preparation task downloads, whatever program this client is.
    async fn existing_template(&self, request: &OpenRequest) -> Result<JobTemplate> {
        let job = &request.job.id;
        let storage = &request.storage;
        let batch_job = self
            .client
            .get("get_job", &format!("/jobs/{job}"))
            .await
            .map_err(|e| e.with_context("job", job))?;
        let binary_url = batch_job["jobPreparationTask"]["resourceFiles"][0]["httpUrl"]
            .as_str()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "Batch job {job} has no program download in its job preparation task: \
                         it was made by an older Redwood, which cannot be followed"
                    ),
                )
            })?
            .to_string();
        let program = binary_url
            .split('?')
            .next()
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        let (container, read_sas) = self.container_read_sas(storage)?;
        Ok(JobTemplate {
            urls_expire: sas_expiry(&binary_url),
            pool: batch_job["poolInfo"]["poolId"]
                .as_str()
                .unwrap_or(&self.pool.id)
                .to_string(),
            spec: request.job.clone(),
            binary_url,
            program,
            binary: request.job.binary.clone(),
            container,
            read_sas,
            input: storage.layout().input(job).to_string(),
            infra_retries: self.settings.infra_retries,
            sas_valid_for: self.settings.sas_valid_for,
            mpi_launcher: self.pool.mpi_launcher.clone(),
            home: storage.home_tag(),
            pack: self.settings.pack,
            slots: self.slots(),
            times: self.task_time(&request.job.function),
        })
    }

    /// Opens a job on warm workers: its groups go to the program's queue, the workers are
    /// started when it launches.
    async fn open_warm(&self, warm: &Warm, mut request: OpenRequest) -> Result<Opened> {
        let storage = request.storage.clone();
        let (program, facts) = self.prepare(&storage).await?;
        let placement = Placement {
            client: self.client.clone(),
            pool: facts.id.clone(),
            slots_per_node: facts.slots_per_node.max(1),
            nodes: facts.nodes,
            sas_valid_for: self.settings.sas_valid_for,
            infra_retries: self.settings.infra_retries,
        };
        let queue = warm.queue(&storage, &program, &placement).await?;
        // The worker checks that it runs the binary the caller expects; a configured
        // executable is the same program built for the pool, so it vouches for itself.
        if self.settings.executable.is_some() {
            let mut spec = (*request.job).clone();
            spec.binary = program;
            request.job = Arc::new(spec);
        }
        let opened = queue.executor.open(request).await?;
        let job = WarmJob {
            inner: opened.job,
            keeper: queue.keeper,
        };
        Ok(Opened::new(Box::new(job), opened.ends).with_running(opened.running))
    }

    async fn add_job(&self, template: &JobTemplate) -> Result<()> {
        let (job, concurrency) = (&template.spec.id, template.spec.options.concurrency);
        let (environment, preparation) = template.job_settings()?;
        let mut body = json!({
            "id": job,
            "poolInfo": { "poolId": template.pool },
            "constraints": { "maxTaskRetryCount": self.settings.infra_retries },
            "onAllTasksComplete": "noaction",
            "commonEnvironmentSettings": environment,
            "jobPreparationTask": preparation,
            "metadata": leftovers::job_metadata(&template.home),
        });
        if let Some(n) = concurrency {
            body["maxParallelTasks"] = json!(n);
        }
        match self.client.post("add_job", "/jobs", &body).await {
            Ok(_) => Ok(()),
            Err(e) if e.service_code() == Some("JobExists") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for AzureBatchBackend {
    /// A pool left running costs money: say so when the session ends without a cleanup.
    fn drop(&mut self) {
        if let Ok(ready) = self.state.try_lock()
            && ready.pool_ready
            && self.pool.autoscale_formula.is_none()
        {
            let how = if ready.created_pool && !self.pool.keep {
                "it was created for this session: call `Session::cleanup()` to delete it"
            } else {
                "delete it or resize it to 0 when you are done"
            };
            tracing::warn!(
                pool = %self.pool.id,
                "Batch pool `{}` is left running and its nodes are billed while idle; {how}",
                self.pool.id
            );
        }
    }
}

#[async_trait]
impl Executor for AzureBatchBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::none();
        c.cancel = true;
        c.cancel_running = true;
        c.timeout = true;
        c.retries = true;
        c.concurrency_limit = true;
        c.survives_client = true;
        c.inputs_from_storage = true;
        c.mpi = true;
        let nodes = u64::from(self.pool.dedicated).saturating_add(u64::from(self.pool.spot));
        c.slots = (self.pool.autoscale_formula.is_none() && nodes > 0)
            .then(|| nodes.saturating_mul(u64::from(self.pool.task_slots_per_node.max(1))));
        if self.warm.is_some() {
            // A group taken by a warm worker runs to its end; the driver keeps the limit; a
            // warm worker is one process per node, not a multi-instance task.
            c.cancel_running = false;
            c.concurrency_limit = false;
            c.mpi = false;
        }
        c
    }

    async fn open(&self, request: OpenRequest) -> Result<Opened> {
        let span = tracing::info_span!("batch.open", job = %request.job.id, follow = request.follow, account = %self.client.account());
        async {
            let storage = request.storage.clone();
            crate::blob::require_blob_storage(&storage, NAME, "its nodes")?;
            if let Some(warm) = &self.warm {
                return self.open_warm(warm, request).await;
            }
            let job = request.job.id.clone();
            if request.follow {
                let template = self.existing_template(&request).await?;
                let running = self.attempts_on_batch(&job).await?;
                let (handle, ends) = self.monitor(storage, template);
                // Whether these run in packs is not known here: the monitor looks, if it may.
                handle.attempts.add(running.iter().map(|&(task, attempt)| {
                    let packed = true;
                    (task, Running { attempt, minted: None, packed })
                }));
                tracing::info!(job = %job, running = running.len(), "following the job's running tasks");
                return Ok(Opened::new(Box::new(handle), ends).with_running(running));
            }
            let (binary, pool_facts) = self.prepare(&storage).await?;
            if let Some(shape) = request.job.options.mpi {
                pool_facts.check_mpi(shape)?;
            }
            let (container, read_sas) = self.container_read_sas(&storage)?;
            let binary_key = storage.layout().binary(&binary);
            // The worker checks that it runs the binary the caller expects; a configured
            // executable is the same program built for the pool, so it vouches for itself.
            let expected = if self.settings.executable.is_some() {
                binary.clone()
            } else {
                request.job.binary.clone()
            };
            let binary_url =
                storage.signed_url(Some(&binary_key), Access::READ, self.settings.sas_valid_for)?;
            let template = JobTemplate {
                pool: self.pool.id.clone(),
                spec: request.job.clone(),
                urls_expire: sas_expiry(&binary_url),
                binary_url,
                program: binary,
                binary: expected,
                container,
                read_sas,
                input: storage.layout().input(&job).to_string(),
                infra_retries: self.settings.infra_retries,
                sas_valid_for: self.settings.sas_valid_for,
                mpi_launcher: self.pool.mpi_launcher.clone(),
                home: storage.home_tag(),
                pack: self.settings.pack,
                slots: self.slots(),
                times: self.task_time(&request.job.function),
            };
            self.add_job(&template).await?;
            self.state.lock().await.jobs.push(job);
            let (handle, ends) = self.monitor(storage, template);
            Ok(Opened::new(Box::new(handle), ends))
        }
        .instrument(span)
        .await
    }

    async fn health(&self) -> Health {
        // Reachable when the account answers for the pool (a pool not made yet is fine).
        let span = tracing::debug_span!("batch.health", pool = %self.pool.id);
        let pool = format!("/pools/{}", self.pool.id);
        match self.client.get("get_pool", &pool).instrument(span).await {
            Ok(_) => Health::Healthy,
            Err(e) if e.kind() == ErrorKind::NotFound => Health::Healthy,
            Err(e) => Health::Unhealthy(format!(
                "Batch account `{}` does not answer for pool `{}`: {e}",
                self.client.account(),
                self.pool.id
            )),
        }
    }

    async fn release(&self, request: CleanupRequest) -> Result<CleanupReply> {
        let span =
            tracing::info_span!("batch.cleanup", pool = %self.pool.id, dry_run = request.dry_run);
        async {
            let mut reply = CleanupReply::default();
            let mut ready = self.state.lock().await;
            let mut jobs = if request.dry_run {
                Vec::new()
            } else {
                let mut jobs = std::mem::take(&mut ready.jobs);
                jobs.extend(self.warm.iter().flat_map(Warm::made_jobs));
                jobs
            };
            jobs.extend(request.jobs);
            jobs.sort();
            jobs.dedup();
            let found = match &request.leftovers {
                Some(l) => leftovers::find(&self.client, l, &jobs).await?,
                None => leftovers::Found::default(),
            };
            let account = self.client.account();
            if request.dry_run {
                reply.released.extend(found.jobs.iter().map(|j| {
                    format!("Batch job `{j}` on `{account}` (made for a job no longer stored)")
                }));
                reply.released.extend(found.pools.iter().map(|p| {
                    format!("Batch pool `{p}` on `{account}` (created by Redwood; no job uses it)")
                }));
                return Ok(reply);
            }
            let mut deleted = 0;
            for job in jobs.iter().chain(&found.jobs) {
                match self
                    .client
                    .delete("delete_job", &format!("/jobs/{job}"))
                    .await
                {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(job = %job, error = %e, "cannot delete the Batch job"),
                }
            }
            if deleted > 0 {
                reply
                    .released
                    .push(format!("{deleted} Batch jobs on `{account}`"));
            }
            for pool in &found.pools {
                match self
                    .client
                    .delete("delete_pool", &format!("/pools/{pool}"))
                    .await
                {
                    Ok(()) => reply.released.push(format!(
                        "Batch pool `{pool}` on `{account}` (created by Redwood; no job used it)"
                    )),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e.with_context("pool", pool)),
                }
            }
            if found.pools.contains(&self.pool.id) {
                ready.created_pool = false;
                ready.pool_ready = false;
            } else if ready.created_pool && !self.pool.keep {
                self.client
                    .delete("delete_pool", &format!("/pools/{}", self.pool.id))
                    .await?;
                ready.created_pool = false;
                ready.pool_ready = false;
                reply
                    .released
                    .push(format!("Batch pool `{}`", self.pool.id));
            } else if ready.pool_ready && self.pool.autoscale_formula.is_none() {
                ready.pool_ready = false; // warned here; not again on drop
                let nodes = pool::node_count(&self.client, &self.pool.id)
                    .await
                    .unwrap_or(0);
                if nodes > 0 {
                    tracing::warn!(
                        pool = %self.pool.id,
                        nodes,
                        "Batch pool `{}` is left running with {nodes} nodes, which are billed \
                         while idle: delete it, resize it to 0, or give it an autoscale formula",
                        self.pool.id
                    );
                }
            }
            Ok(reply)
        }
        .instrument(span)
        .await
    }
}

/// Stores the program under its content address unless it is there. Another client uploading
/// the same program at once can make a multipart upload fail; the blob it stored is the same.
async fn upload_program(
    storage: &Storage,
    key: &object_store::path::Path,
    bytes: Vec<u8>,
) -> Result<()> {
    let bytes = bytes::Bytes::from(bytes);
    let span = tracing::info_span!("batch.upload_program", key = %key, len = bytes.len());
    async {
        if storage.exists(key).await? {
            return Ok(());
        }
        match storage.put(key, bytes).await {
            Err(e) if storage.exists(key).await.unwrap_or(false) => {
                tracing::debug!(error = %e, "another client stored the program meanwhile");
                Ok(())
            }
            other => other,
        }
    }
    .instrument(span)
    .await
}

fn duration(config: &LoadedConfig, value: &Option<String>, default: Duration) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| config.error("regions", text, format!("`{text}` is not a duration: {e}"))),
    }
}

use crate::env::from_env_or;

fn build_from_config(config: &LoadedConfig) -> Result<Arc<dyn Executor>> {
    let region = super::config::region(config)?;
    let url =
        from_env_or(&region.name, &region.batch_url, "REDWOOD_BATCH_URL").ok_or_else(|| {
            config.error(
                "regions",
                "",
                "backend `azure-batch` needs the Batch account URL: set `batch_url` in the region \
             or REDWOOD_BATCH_URL",
            )
        })?;
    let account = from_env_or(&region.name, &region.batch_account, "REDWOOD_BATCH_ACCOUNT")
        .or_else(|| {
            reqwest::Url::parse(&url)
                .ok()
                .and_then(|u| {
                    u.host_str()
                        .map(|h| h.split('.').next().unwrap_or(h).to_string())
                })
                .filter(|a| a.parse::<std::net::Ipv4Addr>().is_err() && a != "localhost")
        })
        .ok_or_else(|| {
            config.error(
                "regions",
                &url,
                "cannot tell the Batch account name from this URL: set `batch_account` or \
                 REDWOOD_BATCH_ACCOUNT",
            )
        })?;
    let key = from_env_or(&region.name, &region.batch_key, "REDWOOD_BATCH_KEY");
    let auth = from_env_or(&region.name, &region.batch_auth, "REDWOOD_BATCH_AUTH");
    let client = match (auth.as_deref(), key) {
        (None | Some("shared-key"), Some(key)) => BatchClientBuilder::new(url, account, key),
        (Some("shared-key"), None) => {
            return Err(config.error(
                "regions",
                &account,
                format!(
                    "`batch_auth = \"shared-key\"` but Batch account `{account}` has no key: set \
                     `batch_key` in the region or REDWOOD_BATCH_KEY"
                ),
            ));
        }
        (auth, _) => {
            let kind = CredentialKind::parse(auth.unwrap_or("auto"))
                .map_err(|e| config.error("regions", &account, e.to_string()))?;
            let credential = kind
                .build()
                .map_err(|e| config.error("regions", &account, e.to_string()))?;
            BatchClientBuilder::with_credential(url, account, credential)
        }
    };
    let mut builder = AzureBatchBackendBuilder::from_client(client)
        .pool(region.pool.clone())
        .poll_interval(duration(
            config,
            &region.poll_interval,
            Duration::from_secs(1),
        )?)
        .sas_valid_for(duration(
            config,
            &region.sas_valid_for,
            Duration::from_secs(2 * 24 * 3600),
        )?)
        .allocation_timeout(duration(
            config,
            &region.pool.allocation_timeout,
            Duration::from_secs(20 * 60),
        )?)
        .progress(config.config.progress.unwrap_or(true));
    if let Some(exe) = &region.executable {
        builder = builder.executable(exe);
    }
    match from_env_or(&region.name, &region.pack, "REDWOOD_BATCH_PACK").as_deref() {
        None | Some("auto") => {}
        Some(text) => match text.parse::<u32>() {
            Ok(n) if n >= 1 => builder = builder.pack(n),
            _ => {
                return Err(config.error(
                    "pack",
                    text,
                    "must be `auto` or a number of tasks per Batch task (1 or more)",
                ));
            }
        },
    }
    let idle = from_env_or(&region.name, &region.warm_idle, "REDWOOD_BATCH_WARM_IDLE");
    match from_env_or(&region.name, &region.workers, "REDWOOD_BATCH_WORKERS").as_deref() {
        None | Some("per-task") => {}
        Some("warm") => {
            let idle = duration(config, &idle, super::warm::DEFAULT_IDLE)?;
            builder = builder.warm_workers(idle);
        }
        Some(other) => {
            return Err(config.error(
                "workers",
                other,
                "must be `per-task` (one Batch task per task or pack) or `warm` (long-lived \
                 workers taking tasks from a queue)",
            ));
        }
    }
    Ok(Arc::new(builder.build()?))
}

inventory::submit! {
    BackendFactory { name: NAME, build: build_from_config }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(region: &str) -> Result<Arc<dyn Executor>> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Redwood.toml");
        std::fs::write(
            &file,
            format!(
                "[default]\nbackend = \"azure-batch\"\n[[default.regions]]\nname = \"west\"\n\
                 batch_url = \"http://127.0.0.1:1/acct\"\nbatch_account = \"acct\"\n\
                 batch_key = \"a2V5\"\n{region}\n"
            ),
        )
        .unwrap();
        let loaded = LoadedConfig::load_from(Some(file), "default", false).unwrap();
        build_from_config(&loaded)
    }

    #[test]
    fn warm_workers_are_chosen_by_configuration() {
        let warm = built("workers = \"warm\"\nwarm_idle = \"30s\"").unwrap();
        assert!(!warm.capabilities().cancel_running && !warm.capabilities().mpi);
        let per_task = built("workers = \"per-task\"").unwrap();
        assert!(per_task.capabilities().cancel_running && per_task.capabilities().mpi);
        let text = match built("workers = \"hot\"") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("`hot` was taken"),
        };
        assert!(
            text.contains("workers") && text.contains("hot") && text.contains("per-task"),
            "{text}"
        );
        let text = match built("workers = \"warm\"\nwarm_idle = \"soon\"") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("`soon` was taken"),
        };
        assert!(text.contains("soon"), "{text}");
    }
}
