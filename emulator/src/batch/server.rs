//! The HTTP side: one loopback listener per account (as each real account has its own host),
//! checks every request (api-version, SharedKey or bearer auth), and serves pools, jobs and
//! tasks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::middleware::{self};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::admin;
use super::exec;
use super::file_api;
use super::jobs::{
    add_job, delete_job, get_job, list_jobs, list_preparation_status, terminate_job,
};
use super::middleware::{catch_panics, check_request, unknown_path, unsupported_verb};
use super::pool_autoscale::autoscale_pools;
use super::pools::{
    add_pool, delete_pool, get_node, get_pool, list_nodes, list_pools, resize_pool,
};
use super::resources::Collection;
use super::tasks::{
    add_task, add_task_collection, delete_task, get_task, list_subtasks, list_tasks,
    reactivate_task, replace_task, terminate_task,
};
use super::{
    job_update, multi_instance, nodes, placement, pool_autoscale, pool_update, preparation,
    unimplemented,
};

/// The api-versions the emulator accepts.
pub const API_VERSIONS: [&str; 3] = ["2025-06-01", "2025-06-01.21.0", "2024-07-01.20.0"];

/// The largest request body the service takes (1 MiB).
pub const MAX_BODY: usize = 1 << 20;

/// The most tasks in one `addtaskcollection`.
pub const MAX_TASKS_PER_COLLECTION: usize = 100;

/// An emulated Batch account.
#[derive(Clone, PartialEq, Eq)]
pub struct BatchAccount {
    /// The account name.
    pub name: String,
    /// The SharedKey (base64).
    pub key: String,
    /// A bearer token accepted for this account (tests only), if any.
    pub bearer_token: Option<String>,
}

impl std::fmt::Debug for BatchAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchAccount")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A start latency per task close to the real service's, for benchmarks (`redwood emulator`
/// and `bench_batch` use it by default). Microsoft's Batch best practices
/// (<https://learn.microsoft.com/azure/batch/best-practices>, "Avoid short execution time")
/// say tasks of one to two seconds are not ideal and ask for ten seconds of work per task at
/// least: the service's own cost of scheduling, starting and reporting a task is of the order
/// of a second. One second is our reading of that, not a measurement.
pub const REALISTIC_TASK_START_LATENCY: Duration = Duration::from_secs(1);

/// How the emulator serves its endpoints.
#[derive(Debug, Clone, Default)]
pub struct BatchOptions {
    /// Serve `https` with a certificate made at start (see [`BatchEmulator::tls_certificate`]).
    pub tls: bool,
    /// How long a node takes to start each task's command once Batch has placed the task on
    /// it (the slot is taken meanwhile). Zero (the default, for tests) starts at once;
    /// [`REALISTIC_TASK_START_LATENCY`] models the real service.
    pub task_start_latency: Duration,
}

/// A running Batch emulator: one endpoint per account. Stops when dropped.
pub struct BatchEmulator {
    endpoints: Vec<(String, SocketAddr)>,
    states: Vec<Arc<AccountState>>,
    tls: Option<super::tls::Tls>,
    _stops: Vec<oneshot::Sender<()>>,
}

impl std::fmt::Debug for BatchEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEmulator")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl BatchEmulator {
    /// Starts the Batch API for the accounts, each on a free loopback port, over `http`.
    pub async fn start(accounts: Vec<BatchAccount>) -> std::io::Result<BatchEmulator> {
        BatchEmulator::start_with(accounts, BatchOptions::default()).await
    }

    /// Starts the Batch API for the accounts, each on a free loopback port.
    pub async fn start_with(
        accounts: Vec<BatchAccount>,
        options: BatchOptions,
    ) -> std::io::Result<BatchEmulator> {
        // reqwest is built without a TLS provider of its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = if options.tls {
            Some(super::tls::Tls::generate()?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoints = Vec::new();
        let mut states = Vec::new();
        let mut stops = Vec::new();
        for account in accounts {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let root = tempfile::Builder::new()
                .prefix(&format!("redwood-batch-{}-", account.name))
                .tempdir()?;
            let downloads = super::files::DownloadCache::new(root.path().join("downloads"));
            multi_instance::install_mpirun(root.path())?;
            let state = Arc::new(AccountState {
                url: format!("{scheme}://{addr}"),
                downloads,
                account: account.clone(),
                data: Mutex::new(Data {
                    bearer_token: account.bearer_token.clone(),
                    ..Data::default()
                }),
                root,
                changed: tokio::sync::Notify::new(),
                running: Mutex::new(Default::default()),
                runs: Default::default(),
                outage: Default::default(),
                preps: Mutex::new(Default::default()),
                http: reqwest::Client::new(),
                task_start_latency: options.task_start_latency,
            });
            tokio::spawn(scheduler(Arc::downgrade(&state)));
            states.push(state.clone());
            let app = router(state);
            let (stop, stopped) = oneshot::channel::<()>();
            let stopped = async move {
                let _ = stopped.await;
            };
            match &tls {
                None => {
                    let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
                    tokio::spawn(async move {
                        if let Err(e) = serve.await {
                            tracing::warn!(error = %e, "Batch emulator endpoint stopped");
                        }
                    });
                }
                Some(tls) => {
                    let listener = tls.listener(listener)?;
                    let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
                    tokio::spawn(async move {
                        if let Err(e) = serve.await {
                            tracing::warn!(error = %e, "Batch emulator endpoint stopped");
                        }
                    });
                }
            }
            tracing::info!(account = %account.name, %addr, "Batch emulator listening");
            endpoints.push((account.name, addr));
            stops.push(stop);
        }
        Ok(BatchEmulator {
            endpoints,
            states,
            tls,
            _stops: stops,
        })
    }

    /// The certificate (PEM) an `https` emulator presents, for clients to trust; `None` over
    /// `http`.
    pub fn tls_certificate(&self) -> Option<std::path::PathBuf> {
        self.tls.as_ref().map(super::tls::Tls::certificate)
    }

    /// Takes an account (a region) down or brings it back, as `POST /_emulator/outage` does.
    pub fn set_outage(&self, account: &str, outage: super::outage::Outage) -> Result<(), String> {
        let state = self.account(account)?;
        state.outage.apply(outage)?;
        tracing::warn!(account, ?outage, "outage changed");
        Ok(())
    }

    /// Says that the account's storage is reached through `proxy` (by its nodes and clients),
    /// so an outage of the account's storage can refuse them.
    pub fn put_storage_behind(
        &self,
        account: &str,
        proxy: Arc<crate::fault_proxy::FaultProxy>,
    ) -> Result<(), String> {
        self.account(account)?.outage.put_storage_behind(proxy);
        Ok(())
    }

    fn account(&self, name: &str) -> Result<&Arc<AccountState>, String> {
        self.states
            .iter()
            .find(|s| s.account.name == name)
            .ok_or_else(|| format!("no Batch account `{name}` in this emulator"))
    }

    /// The endpoint URL of an account (`http://127.0.0.1:<port>`, or `https://` with TLS).
    pub fn url(&self, account: &str) -> Option<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .find(|(name, _)| name == account)
            .map(|(_, addr)| format!("{scheme}://{addr}"))
    }
}

/// One emulated account: its resources, its nodes' folders, and a wake-up for the scheduler.
pub(super) struct AccountState {
    pub(super) url: String,
    pub(super) account: BatchAccount,
    data: Mutex<Data>,
    /// The nodes' folders (removed when the emulator stops).
    pub(super) root: tempfile::TempDir,
    /// Signals the scheduler that something changed.
    pub(super) changed: tokio::sync::Notify,
    /// Stop switches of running tasks.
    running: Mutex<exec::Running>,
    /// The last run number given to a placed task.
    runs: std::sync::atomic::AtomicU64,
    /// Whether the account is down (see [`super::outage`]).
    pub(super) outage: super::outage::Switches,
    /// Whether a job's preparation task succeeded on a node, by (node, job).
    preps: Mutex<preparation::Preps>,
    /// For resource and output files.
    pub(super) http: reqwest::Client,
    /// Resource files already downloaded, revalidated by ETag.
    pub(super) downloads: super::files::DownloadCache,
    /// See [`BatchOptions::task_start_latency`].
    pub(super) task_start_latency: Duration,
}

#[derive(Default)]
pub(super) struct Data {
    pub(super) pools: Collection,
    pub(super) jobs: Collection,
    /// Tasks by job id (lower-cased).
    pub(super) tasks: std::collections::HashMap<String, Collection>,
    pub(super) nodes: nodes::Nodes,
    /// Pools (lower-cased ids) whose allocation fails, with the error to report.
    pub(super) failing_pools: std::collections::HashMap<String, (String, String)>,
    /// Pools (lower-cased ids) whose nodes storage refuses, with the HTTP status it answers.
    pub(super) storage_refused: std::collections::HashMap<String, u16>,
    /// The metric history of each autoscale pool (lower-cased ids).
    pub(super) autoscale_history: std::collections::HashMap<String, super::autoscale::History>,
    /// API faults: the share of requests (per million) answered with `fault_status`.
    pub(super) fault_ppm: u64,
    pub(super) fault_status: u16,
    pub(super) latency_ms: u64,
    pub(super) fault_rng: u64,
    /// The bearer token accepted now (the account's, until an admin call rotates it).
    pub(super) bearer_token: Option<String>,
}

impl Data {
    /// A pool, to change it (404 `PoolNotFound`).
    pub(super) fn pool_mut(
        &mut self,
        pool: &str,
    ) -> Result<&mut super::resources::Resource, super::error::BatchError> {
        self.pools
            .get_mut(pool)
            .ok_or_else(|| super::error::BatchError::not_found("PoolNotFound", "pool"))
    }

    /// A job, to change it (404 `JobNotFound`).
    pub(super) fn job_mut(
        &mut self,
        job: &str,
    ) -> Result<&mut super::resources::Resource, super::error::BatchError> {
        self.jobs
            .get_mut(job)
            .ok_or_else(|| super::error::BatchError::not_found("JobNotFound", "job"))
    }

    /// The ids of a job's running tasks.
    pub(super) fn running_tasks(&self, job: &str) -> Vec<String> {
        self.tasks
            .get(&job.to_lowercase())
            .map(|tasks| {
                tasks
                    .all()
                    .filter(|t| t.state() == "running")
                    .map(|t| t.id().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl AccountState {
    pub(super) fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new run number, never given before in this account.
    pub(super) fn next_run(&self) -> u64 {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    pub(super) fn running(&self) -> MutexGuard<'_, exec::Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn preps(&self) -> MutexGuard<'_, preparation::Preps> {
        self.preps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Places tasks whenever something changed (and at least every 200 ms), until the account's
/// endpoint stops.
pub(super) async fn scheduler(state: std::sync::Weak<AccountState>) {
    loop {
        let Some(strong) = state.upgrade() else {
            return;
        };
        // A bug met here must not stop the account's scheduling for good.
        let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            autoscale_pools(&strong);
            placement::schedule(&strong);
        }));
        if pass.is_err() {
            tracing::error!(account = %strong.account.name, "a scheduling pass panicked; going on");
        }
        let wait = async {
            tokio::select! {
                () = strong.changed.notified() => {}
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        };
        wait.await;
    }
}

pub(super) type Shared = Arc<AccountState>;

fn router(state: Shared) -> Router {
    Router::new()
        .route("/pools", post(add_pool).get(list_pools))
        .route(
            "/pools/{pool}",
            get(get_pool)
                .delete(delete_pool)
                .patch(pool_update::update_pool),
        )
        .route("/pools/{pool}/resize", post(resize_pool))
        .route("/pools/{pool}/stopresize", post(pool_update::stop_resize))
        .route(
            "/pools/{pool}/updateproperties",
            post(pool_update::replace_pool_properties),
        )
        .route("/pools/{pool}/removenodes", post(pool_update::remove_nodes))
        .route(
            "/pools/{pool}/enableautoscale",
            post(pool_autoscale::enable_autoscale),
        )
        .route(
            "/pools/{pool}/disableautoscale",
            post(pool_autoscale::disable_autoscale),
        )
        .route(
            "/pools/{pool}/evaluateautoscale",
            post(pool_update::evaluate_autoscale),
        )
        .route("/pools/{pool}/nodes", get(list_nodes))
        .route("/pools/{pool}/nodes/{node}", get(get_node))
        .route(
            "/pools/{pool}/nodes/{node}/files",
            get(file_api::list_node_files),
        )
        .route(
            "/pools/{pool}/nodes/{node}/files/{*path}",
            get(file_api::get_node_file).delete(file_api::delete_node_file),
        )
        .route("/nodecounts", get(pool_update::node_counts))
        .route("/supportedimages", get(pool_update::supported_images))
        .route("/jobs", post(add_job).get(list_jobs))
        .route(
            "/jobs/{job}",
            get(get_job)
                .delete(delete_job)
                .patch(job_update::update_job)
                .put(job_update::replace_job),
        )
        .route("/jobs/{job}/terminate", post(terminate_job))
        .route("/jobs/{job}/disable", post(job_update::disable_job))
        .route("/jobs/{job}/enable", post(job_update::enable_job))
        .route("/jobs/{job}/taskcounts", get(job_update::task_counts))
        .route(
            "/jobs/{job}/jobpreparationandreleasetaskstatus",
            get(list_preparation_status),
        )
        .route("/jobs/{job}/tasks", post(add_task).get(list_tasks))
        .route("/jobs/{job}/addtaskcollection", post(add_task_collection))
        .route(
            "/jobs/{job}/tasks/{task}",
            get(get_task).delete(delete_task).put(replace_task),
        )
        .route("/jobs/{job}/tasks/{task}/terminate", post(terminate_task))
        .route("/jobs/{job}/tasks/{task}/reactivate", post(reactivate_task))
        .route("/jobs/{job}/tasks/{task}/subtasksinfo", get(list_subtasks))
        .route(
            "/jobs/{job}/tasks/{task}/files",
            get(file_api::list_task_files),
        )
        .route(
            "/jobs/{job}/tasks/{task}/files/{*path}",
            get(file_api::get_task_file).delete(file_api::delete_task_file),
        )
        .merge(unimplemented::routes())
        .route(
            "/_emulator/pools/{pool}/nodes/{node}/remove",
            post(admin::remove_node),
        )
        .route(
            "/_emulator/pools/{pool}/allocation-failure",
            post(admin::fail_allocation),
        )
        .route(
            "/_emulator/pools/{pool}/storage-firewall",
            post(admin::set_storage_firewall),
        )
        .route("/_emulator/faults", post(admin::set_faults))
        .route("/_emulator/outage", post(super::outage::set_outage))
        .route("/_emulator/bearer-token", post(admin::rotate_bearer_token))
        .fallback(unknown_path)
        .method_not_allowed_fallback(unsupported_verb)
        .layer(middleware::from_fn_with_state(state.clone(), check_request))
        .layer(middleware::from_fn(catch_panics))
        .with_state(state)
}
