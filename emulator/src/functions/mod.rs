//! A local Azure Functions host for custom handlers: it reads a function app folder, starts
//! the handler's processes (instances), feeds them queue messages from Azurite with the
//! service's semantics, serves HTTP triggers with keys, and scales instances with the work
//! (from zero, up to a maximum, back to zero when idle).
//!
//! What it follows (Microsoft's custom-handler and queue-trigger documentation): the handler is
//! started with `FUNCTIONS_CUSTOMHANDLER_PORT` and is ready once `GET /` answers; each
//! invocation is `POST /{function}` with `{"Data": {binding: value}, "Metadata": {...}}` and a
//! 2xx `{"Outputs", "Logs", "ReturnValue"}` answer; a queue message is hidden while it runs,
//! deleted when it succeeded, made visible again after `visibilityTimeout` when it failed, and
//! moved to `<queue>-poison` once it was delivered `maxDequeueCount` times; an invocation past
//! `functionTimeout` kills its instance. Messages of an instance that dies are not touched:
//! they come back once their lease (hidden time) ends, with their dequeue count raised.
//!
//! Admin calls (`/_emulator/functions/...`, with the master key in `x-functions-key`) kill an
//! instance mid-invocation, add latency or errors, and report the host's counters.

mod app;
mod http;
mod instance;
mod listener;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redwood_azure::queue::QueueService;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use app::{App, AuthLevel, Function, Output, QueueSettings, Trigger, parse_timespan};
use instance::Instance;

/// How a host is started.
#[derive(Debug, Clone)]
pub struct FunctionsHostOptions {
    /// The function app folder.
    pub app_dir: PathBuf,
    /// App settings: the handler's environment, `%NAME%` values, and the connection strings
    /// bindings name (`AzureWebJobsStorage` by default).
    pub settings: BTreeMap<String, String>,
    /// The most instances at once (`WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT` when set).
    pub max_instances: u32,
    /// An instance with nothing to do for this long is stopped (down to zero).
    pub idle_timeout: Duration,
    /// How long a received message stays hidden; renewed while its invocation runs, so it
    /// only matters when an instance dies (then it is the wait before redelivery).
    pub message_lease: Duration,
    /// How often the scale controller looks at the queues.
    pub scale_interval: Duration,
    /// How long a starting handler has to answer `GET /`.
    pub init_timeout: Duration,
    /// The master key (generated when `None`).
    pub master_key: Option<String>,
}

impl FunctionsHostOptions {
    /// Defaults for the app in `app_dir`: 4 instances, idle after 30 s, 30 s leases.
    pub fn new(app_dir: impl Into<PathBuf>) -> Self {
        FunctionsHostOptions {
            app_dir: app_dir.into(),
            settings: BTreeMap::new(),
            max_instances: 4,
            idle_timeout: Duration::from_secs(30),
            message_lease: Duration::from_secs(30),
            scale_interval: Duration::from_millis(50),
            init_timeout: Duration::from_secs(30),
            master_key: None,
        }
    }

    /// Sets an app setting.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(name.into(), value.into());
        self
    }
}

/// Faults the host adds to invocations (admin call `POST /_emulator/functions/faults`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFaults {
    /// Added before each invocation, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// The fraction of invocations the host fails without calling the handler (0 to 1).
    #[serde(default)]
    pub error_rate: f64,
}

/// The host's counters (admin call `GET /_emulator/functions/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// Instances running now.
    pub instances: u32,
    /// Instances starting now.
    pub starting: u32,
    /// Instances started so far.
    pub started: u64,
    /// Starts from zero instances.
    pub cold_starts: u64,
    /// Invocations so far.
    pub invocations: u64,
    /// Invocations that succeeded.
    pub succeeded: u64,
    /// Invocations that failed (a non-2xx answer, no answer, a timeout, an injected error).
    pub failed: u64,
    /// Invocations past `functionTimeout`.
    pub timed_out: u64,
    /// Messages left to come back because their instance died.
    pub abandoned: u64,
    /// Messages moved to a poison queue.
    pub poisoned: u64,
    /// The most instances running at once.
    pub peak_instances: u32,
    /// Why the last instance start failed, if one did.
    pub last_start_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    cold_starts: AtomicU64,
    invocations: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    abandoned: AtomicU64,
    poisoned: AtomicU64,
    peak: AtomicU32,
}

/// What the host's tasks share.
struct HostState {
    app: App,
    settings: BTreeMap<String, String>,
    options: FunctionsHostOptions,
    max_instances: u32,
    instances: Mutex<Vec<Arc<Instance>>>,
    starting: AtomicU32,
    next_id: AtomicU32,
    counters: Counters,
    last_start_error: Mutex<Option<(String, Instant)>>,
    faults: Mutex<HostFaults>,
    master_key: String,
    function_keys: BTreeMap<String, String>,
    /// An instance got ready or a slot freed.
    capacity: Notify,
    /// Queue services by connection setting.
    services: Mutex<HashMap<String, QueueService>>,
}

/// A running Functions host. Stops (with its instances) when dropped.
pub struct FunctionsHost {
    state: Arc<HostState>,
    url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FunctionsHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionsHost")
            .field("url", &self.url)
            .field("app", &self.state.app.root)
            .finish_non_exhaustive()
    }
}

impl FunctionsHost {
    /// Reads the app, starts the HTTP front door on a loopback port, the queue listeners and
    /// the scale controller. No instance runs until there is work.
    pub async fn start(options: FunctionsHostOptions) -> Result<FunctionsHost, String> {
        let app = App::read(&options.app_dir, &options.settings)?;
        let max_instances = options
            .settings
            .get("WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT")
            .and_then(|v| v.parse().ok())
            .unwrap_or(options.max_instances)
            .max(1);
        let master_key = options
            .master_key
            .clone()
            .unwrap_or_else(|| random_key("master"));
        let function_keys = app
            .functions
            .keys()
            .map(|name| (name.clone(), random_key(name)))
            .collect();
        let state = Arc::new(HostState {
            settings: options.settings.clone(),
            max_instances,
            instances: Mutex::new(Vec::new()),
            starting: AtomicU32::new(0),
            next_id: AtomicU32::new(1),
            counters: Counters::default(),
            last_start_error: Mutex::new(None),
            faults: Mutex::new(HostFaults::default()),
            master_key,
            function_keys,
            capacity: Notify::new(),
            services: Mutex::new(HashMap::new()),
            app,
            options,
        });
        // Every queue a trigger reads must be reachable now: a wrong connection is an error
        // at start, not a silent listener.
        let mut tasks = Vec::new();
        for function in state.app.functions.values().filter(|f| !f.disabled) {
            if let Trigger::Queue {
                queue, connection, ..
            } = &function.trigger
            {
                let q = state.queue(connection, queue)?;
                q.create()
                    .await
                    .map_err(|e| format!("function `{}`: {e}", function.name))?;
                tasks.push(tokio::spawn(listener::listen(
                    state.clone(),
                    function.name.clone(),
                    Arc::new(q),
                )));
            }
        }
        tasks.push(tokio::spawn(listener::scale(state.clone())));
        let (url, server) = http::serve(state.clone()).await?;
        tasks.push(server);
        tracing::info!(%url, app = %state.app.root.display(), "Functions host started");
        Ok(FunctionsHost { state, url, tasks })
    }

    /// The host's base URL (`http://127.0.0.1:<port>`); HTTP triggers are under
    /// `/<routePrefix>/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The master key (admin calls, every function).
    pub fn master_key(&self) -> &str {
        &self.state.master_key
    }

    /// The default key of a function.
    pub fn function_key(&self, function: &str) -> Option<&str> {
        self.state.function_keys.get(function).map(String::as_str)
    }

    /// The app as read.
    pub fn app(&self) -> &App {
        &self.state.app
    }

    /// The counters.
    pub fn status(&self) -> HostStatus {
        self.state.status()
    }

    /// Kills an instance: the one with the most invocations running, or `id`. Returns the
    /// instance killed.
    pub fn kill_instance(&self, id: Option<u32>) -> Option<u32> {
        self.state.kill_instance(id)
    }

    /// Sets the faults added to invocations.
    pub fn set_faults(&self, faults: HostFaults) {
        if let Ok(mut f) = self.state.faults.lock() {
            *f = faults;
        }
    }

    /// Stops the listeners, the front door and every instance.
    pub async fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Ok(mut instances) = self.state.instances.lock() {
            for i in instances.drain(..) {
                i.kill();
            }
        }
    }
}

impl Drop for FunctionsHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl HostState {
    /// A queue of the account an app setting's connection string names.
    fn queue(&self, connection: &str, name: &str) -> Result<redwood_azure::queue::Queue, String> {
        let mut services = self
            .services
            .lock()
            .map_err(|_| "the host's state is poisoned".to_string())?;
        let service = match services.get(connection) {
            Some(s) => s.clone(),
            None => {
                let conn = self.settings.get(connection).ok_or_else(|| {
                    format!(
                        "app setting `{connection}` (the storage connection of a binding) is not set"
                    )
                })?;
                let service = QueueService::from_connection_string(conn)
                    .map_err(|e| format!("app setting `{connection}`: {e}"))?;
                services.insert(connection.to_string(), service.clone());
                service
            }
        };
        service.queue(name).map_err(|e| e.to_string())
    }

    fn live(&self) -> Vec<Arc<Instance>> {
        let Ok(mut instances) = self.instances.lock() else {
            return Vec::new();
        };
        instances.retain(|i| !i.is_dead());
        instances.clone()
    }

    /// The instance with the fewest invocations running, if one has room for another.
    fn pick(&self, per_instance: u32) -> Option<Arc<Instance>> {
        self.live()
            .into_iter()
            .filter(|i| i.inflight.load(Ordering::SeqCst) < per_instance)
            .min_by_key(|i| i.inflight.load(Ordering::SeqCst))
    }

    /// Starts instances until `wanted` run or start (at most the maximum). A failed start is
    /// retried no sooner than a second later.
    fn scale_to(self: &Arc<Self>, wanted: u32) {
        let wanted = wanted.min(self.max_instances);
        if let Ok(last) = self.last_start_error.lock()
            && let Some((_, at)) = last.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return;
        }
        loop {
            let running = self.live().len() as u32;
            let starting = self.starting.load(Ordering::SeqCst);
            if running + starting >= wanted {
                return;
            }
            if self
                .starting
                .compare_exchange(starting, starting + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            if running + starting == 0 {
                self.counters.cold_starts.fetch_add(1, Ordering::Relaxed);
            }
            let state = self.clone();
            tokio::spawn(async move {
                let id = state.next_id.fetch_add(1, Ordering::SeqCst);
                let started =
                    Instance::start(&state.app, &state.settings, id, state.options.init_timeout)
                        .await;
                match started {
                    Ok(instance) => {
                        state.counters.started.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut instances) = state.instances.lock() {
                            instances.push(instance);
                            state
                                .counters
                                .peak
                                .fetch_max(instances.len() as u32, Ordering::Relaxed);
                        }
                        if let Ok(mut last) = state.last_start_error.lock() {
                            *last = None;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("an instance could not start: {e}");
                        if let Ok(mut last) = state.last_start_error.lock() {
                            *last = Some((e, Instant::now()));
                        }
                    }
                }
                state.starting.fetch_sub(1, Ordering::SeqCst);
                state.capacity.notify_waiters();
            });
        }
    }

    /// An instance to invoke now, starting one (from zero) when none has room; `None` when
    /// none became ready within the start timeout.
    async fn instance_for_request(self: &Arc<Self>) -> Option<Arc<Instance>> {
        let deadline = Instant::now() + self.options.init_timeout;
        loop {
            let notified = self.capacity.notified();
            if let Some(i) = self.pick(u32::MAX) {
                return Some(i);
            }
            self.scale_to(1);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }

    fn kill_instance(&self, id: Option<u32>) -> Option<u32> {
        let live = self.live();
        let victim = match id {
            Some(id) => live.into_iter().find(|i| i.id == id),
            None => live
                .into_iter()
                .max_by_key(|i| i.inflight.load(Ordering::SeqCst)),
        }?;
        tracing::info!(instance = victim.id, "instance killed (admin call)");
        victim.kill();
        Some(victim.id)
    }

    fn status(&self) -> HostStatus {
        let c = &self.counters;
        HostStatus {
            instances: self.live().len() as u32,
            starting: self.starting.load(Ordering::SeqCst),
            started: c.started.load(Ordering::Relaxed),
            cold_starts: c.cold_starts.load(Ordering::Relaxed),
            invocations: c.invocations.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            abandoned: c.abandoned.load(Ordering::Relaxed),
            poisoned: c.poisoned.load(Ordering::Relaxed),
            peak_instances: c.peak.load(Ordering::Relaxed),
            last_start_error: self
                .last_start_error
                .lock()
                .ok()
                .and_then(|l| l.as_ref().map(|(e, _)| e.clone())),
        }
    }

    /// The faults to add to one invocation: its latency, and whether to fail it.
    fn fault(&self) -> (Duration, bool) {
        let f = self.faults.lock().map(|f| f.clone()).unwrap_or_default();
        let fail = f.error_rate > 0.0 && fastrand::f64() < f.error_rate;
        (Duration::from_millis(f.latency_ms), fail)
    }
}

/// A random-looking key (base64 of a sha256 of the time, the pid and `salt`).
fn random_key(salt: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let seed = format!(
        "{salt}/{}/{:?}/{}",
        std::process::id(),
        std::time::SystemTime::now(),
        fastrand::u64(..)
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(seed.as_bytes()))
}

/// An RFC 3339 time for metadata.
fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
