//! The `azure-functions` executor: a job's attempts travel as queue messages, many tasks per
//! message, to the function app's `redwood-task` function (the same program, as a custom
//! handler); the handler stores each message's outcomes as one segment of the job's
//! `results/`; the executor learns of them by listing that prefix (no per-task polling), and
//! of messages that failed every delivery from the app's poison queue.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use futures::StreamExt;
use redwood_core::config::LoadedConfig;
use redwood_core::raw::backend::{Capabilities, CleanupReply, CleanupRequest, JobSpec};
use redwood_core::raw::executor::{Attempt, Executor, ExecutorJob, Health, OpenRequest, Opened};
use redwood_core::raw::factory::BackendFactory;
use redwood_core::storage::Access;
use redwood_core::{Error, ErrorKind, Result, Storage};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OnceCell};
use tracing::Instrument;

use super::call::{Answer, Caller};
use super::config::{FunctionsSettings, Invoke};
use super::message::{GroupTask, TaskMessage, VERSION, segment_name};
use super::watch::{Watch, read_group, watch};
use crate::queue::{MAX_MESSAGE_TEXT, Queue, QueueService};
use crate::task_times::TaskTimes;

/// The backend's name in configuration.
pub const NAME: &str = "azure-functions";
/// Arguments up to this size travel inline in the message; larger ones are read from the
/// job's input.
const INLINE_ARGS: usize = 512;
/// How long past `functionTimeout` a call's backup stays hidden.
const CALL_GRACE: Duration = Duration::from_secs(60);
/// The longest a queue message can stay hidden (7 days).
const MAX_HIDDEN: Duration = Duration::from_secs(7 * 24 * 3600);
/// How many messages one launch sends at once; with `invoke = "http"`, a launch of at most
/// this many groups is sent as calls.
const SENDS_AT_ONCE: usize = 16;

/// Runs tasks on an Azure Functions app (or the emulator's Functions host) through a queue.
pub struct AzureFunctionsBackend {
    settings: FunctionsSettings,
    queue: Arc<Queue>,
    poison: Arc<Queue>,
    created: OnceCell<()>,
    /// Calls `redwood-call` (`invoke = "http"`).
    caller: Option<Arc<Caller>>,
    /// The task times of each function, learnt from stored groups.
    task_times: Arc<std::sync::Mutex<HashMap<String, Arc<TaskTimes>>>>,
}

impl fmt::Debug for AzureFunctionsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureFunctionsBackend")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a group's record (`jobs/<job>/groups/<name>`) says: for a client that attaches.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupRecord {
    attempt: u32,
    tasks: Vec<u64>,
}

impl AzureFunctionsBackend {
    /// A backend sending to the queue `settings` name.
    pub fn new(settings: FunctionsSettings) -> Result<AzureFunctionsBackend> {
        let service = QueueService::from_connection_string(&settings.connection_string)
            .map_err(|e| e.with_context("backend", NAME))?;
        AzureFunctionsBackend::on_service(settings, &service)
    }

    /// A backend sending to the queue `settings` name in `service` (its connection string is
    /// not read).
    pub(crate) fn on_service(
        settings: FunctionsSettings,
        service: &QueueService,
    ) -> Result<AzureFunctionsBackend> {
        let queue = Arc::new(service.queue(&settings.queue)?);
        let poison = Arc::new(service.queue(&format!("{}-poison", settings.queue))?);
        let caller = match &settings.invoke {
            Invoke::Queue => None,
            Invoke::Http { url, key } => Some(Arc::new(Caller::new(
                url,
                key.clone(),
                settings.function_timeout,
            )?)),
        };
        Ok(AzureFunctionsBackend {
            settings,
            queue,
            poison,
            created: OnceCell::new(),
            caller,
            task_times: Arc::default(),
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &FunctionsSettings {
        &self.settings
    }

    /// The task times of `function` as learnt so far (shared by its jobs).
    fn task_time(&self, function: &str) -> Arc<TaskTimes> {
        match self.task_times.lock() {
            Ok(mut times) => times.entry(function.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// The attempts of a followed job that its groups say are still out: groups with a record
    /// and no stored segment.
    async fn running_groups(&self, storage: &Storage, job: &str) -> Result<HashMap<u64, u32>> {
        let layout = storage.layout();
        let stored: std::collections::HashSet<String> = storage
            .list(&layout.result_segments(job))
            .await?
            .into_iter()
            .filter_map(|k| k.filename().map(str::to_string))
            .collect();
        let mut out: HashMap<u64, u32> = HashMap::new();
        for key in storage.list(&layout.groups(job)).await? {
            let Some(name) = key.filename().map(str::to_string) else {
                continue;
            };
            if name.ends_with(".note") || stored.contains(&name) {
                continue;
            }
            let record: GroupRecord = match serde_json::from_slice(&storage.get(&key).await?) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%key, "a group record is not readable: {e}");
                    continue;
                }
            };
            for task in record.tasks {
                let a = out.entry(task).or_insert(record.attempt);
                *a = (*a).max(record.attempt);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Executor for AzureFunctionsBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::none();
        c.cancel = true;
        // A running group finishes (or reaches functionTimeout); only queued ones stop.
        c.cancel_running = false;
        c.timeout = true;
        c.retries = true;
        // The driver keeps a concurrency limit: the queue cannot.
        c.concurrency_limit = false;
        c.survives_client = true;
        c.inputs_from_storage = true;
        c.longest_task = Some(self.settings.function_timeout);
        c.slots = self.settings.slots;
        c
    }

    async fn open(&self, request: OpenRequest) -> Result<Opened> {
        let span = tracing::info_span!("functions.open", job = %request.job.id, follow = request.follow, queue = %self.settings.queue);
        async {
            let storage = request.storage.clone();
            crate::blob::require_blob_storage(&storage, NAME, "the function app")?;
            self.created.get_or_try_init(|| self.queue.create()).await?;
            let read_url = storage.signed_url(None, Access::READ, self.settings.sas_valid_for)?;
            let (container, read_sas) = read_url
                .split_once('?')
                .map(|(c, q)| (c.to_string(), q.to_string()))
                .unwrap_or((read_url.clone(), String::new()));
            let outstanding = if request.follow {
                self.running_groups(&storage, &request.job.id).await?
            } else {
                HashMap::new()
            };
            let running: Vec<(u64, u32)> = outstanding.iter().map(|(&t, &a)| (t, a)).collect();
            let (ends_tx, ends_rx) = futures::channel::mpsc::unbounded();
            let shared = Arc::new(Shared {
                spec: request.job.clone(),
                storage,
                queue: self.queue.clone(),
                caller: self.caller.clone(),
                settings: self.settings.clone(),
                container,
                read_sas,
                token: format!("{:08x}", fastrand::u32(..)),
                seq: AtomicU64::new(0),
                watch: Watch {
                    outstanding: std::sync::Mutex::new(outstanding),
                    ends: ends_tx,
                    done: AtomicBool::new(false),
                    wake: Notify::new(),
                    task_times: self.task_time(&request.job.function),
                    seen: std::sync::Mutex::default(),
                },
            });
            tokio::spawn(
                watch(shared.clone(), self.poison.clone()).instrument(tracing::Span::current()),
            );
            let job = FunctionsJob { shared };
            Ok(Opened::new(Box::new(job), Box::pin(ends_rx)).with_running(running))
        }
        .instrument(span)
        .await
    }

    async fn health(&self) -> Health {
        let span = tracing::debug_span!("functions.health", queue = %self.settings.queue);
        match self.queue.approximate_count().instrument(span).await {
            Ok(_) => Health::Healthy,
            Err(e) if e.kind() == ErrorKind::NotFound => Health::Healthy,
            Err(e) => Health::Unhealthy(format!("the task queue does not answer: {e}")),
        }
    }

    async fn release(&self, _request: CleanupRequest) -> Result<CleanupReply> {
        // The queue is the app's, shared by every client: nothing of this client's to release.
        Ok(CleanupReply::default())
    }
}

/// What a job's handle and its watcher share.
pub(super) struct Shared {
    pub(super) spec: Arc<JobSpec>,
    pub(super) storage: Storage,
    queue: Arc<Queue>,
    caller: Option<Arc<Caller>>,
    pub(super) settings: FunctionsSettings,
    container: String,
    read_sas: String,
    token: String,
    seq: AtomicU64,
    pub(super) watch: Watch,
}

struct FunctionsJob {
    shared: Arc<Shared>,
}

impl FunctionsJob {
    /// Sends a small launch's groups as calls, each in the background: a launch returns at
    /// once, and each call's answer ends its tasks.
    fn call(&self, caller: &Arc<Caller>, groups: Vec<(TaskMessage, String)>) {
        for (message, _) in groups {
            let shared = self.shared.clone();
            let caller = caller.clone();
            let span = tracing::Span::current();
            tokio::spawn(shared.call(caller, message).instrument(span));
        }
    }
}

#[async_trait]
impl ExecutorJob for FunctionsJob {
    async fn launch(&self, attempts: Vec<Attempt>) -> Result<()> {
        let s = &self.shared;
        let span =
            tracing::debug_span!("functions.launch", job = %s.spec.id, attempts = attempts.len());
        async {
            let mut by_attempt: BTreeMap<u32, Vec<Attempt>> = BTreeMap::new();
            for a in attempts {
                by_attempt.entry(a.attempt).or_default().push(a);
            }
            let mut groups = Vec::new();
            for (_, attempts) in by_attempt {
                let size = s.group_size(attempts.len());
                for chunk in attempts.chunks(size) {
                    groups.extend(s.messages(chunk)?);
                }
            }
            if let Ok(mut o) = s.watch.outstanding.lock() {
                for (m, _) in &groups {
                    for t in &m.tasks {
                        o.insert(t.task, m.attempt);
                    }
                }
            }
            s.watch.wake.notify_one();
            if let Some(caller) = s.caller.as_ref().filter(|_| groups.len() <= SENDS_AT_ONCE) {
                self.call(caller, groups);
                return Ok(());
            }
            let sent: Vec<(TaskMessage, Result<()>)> = futures::stream::iter(groups)
                .map(|(message, text)| async move {
                    let result = s.send(&message, &text).await;
                    (message, result)
                })
                .buffer_unordered(SENDS_AT_ONCE)
                .collect()
                .await;
            for (message, result) in sent {
                if let Err(e) = result {
                    // Never sent: the driver hears of each task as lost, and may retry it.
                    s.watch.end_group(
                        &message,
                        redwood_core::TaskErrorKind::Lost,
                        format!("its queue message could not be sent: {e}"),
                    );
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn stop(&self) -> Result<()> {
        let s = &self.shared;
        s.watch.done.store(true, Ordering::SeqCst);
        s.watch.wake.notify_one();
        // Deliveries check this before they run a group.
        s.storage
            .put(
                &s.storage.layout().cancelled(&s.spec.id),
                bytes::Bytes::new(),
            )
            .await
    }

    async fn close(&self) {
        self.shared.watch.done.store(true, Ordering::SeqCst);
        self.shared.watch.wake.notify_one();
    }
}

impl Shared {
    /// How many tasks of a launch of `n` go in one message: enough messages for the app's
    /// instances to share the work, a group's work (on its `group_workers`) kept short once
    /// task times are known, and a group within `functionTimeout` when tasks have a timeout.
    fn group_size(&self, n: usize) -> usize {
        let max = self.settings.group_size.max(1) as usize;
        let mut size = n.div_ceil(32).clamp(1, max);
        let typical = self.watch.task_times.typical_us();
        let budget = 250_000u64.saturating_mul(u64::from(self.settings.group_workers.max(1)));
        if let Some(fit) = budget.checked_div(typical) {
            size = size.min(usize::try_from(fit.max(1)).unwrap_or(usize::MAX));
        }
        if let Some(timeout) = self.spec.options.timeout.filter(|t| *t != Duration::MAX) {
            let fits =
                self.settings.function_timeout.as_millis() / (2 * timeout.as_millis().max(1));
            size = size.min(usize::try_from(fits).unwrap_or(usize::MAX).max(1));
        }
        size
    }

    /// The messages of a chunk of attempts (one, or more when one would be too large), each
    /// with its text as the queue takes it.
    fn messages(&self, chunk: &[Attempt]) -> Result<Vec<(TaskMessage, String)>> {
        let Some(first) = chunk.first() else {
            return Ok(Vec::new());
        };
        let layout = self.storage.layout();
        let job = &self.spec.id;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = segment_name(&self.token, seq, first.attempt);
        let segment = layout.result_segment(job, &name);
        let note = layout.group(job, &format!("{name}.note"));
        let valid = self.settings.sas_valid_for;
        let engine = base64::engine::general_purpose::STANDARD;
        let message = TaskMessage {
            v: VERSION,
            job: job.clone(),
            function: self.spec.function.clone(),
            signature: self.spec.signature,
            binary: self.spec.binary.clone(),
            container: self.container.clone(),
            read_sas: self.read_sas.clone(),
            input: layout.input(job).to_string(),
            stop: layout.cancelled(job).to_string(),
            timeout_ms: self
                .spec
                .options
                .timeout
                .filter(|t| *t != Duration::MAX)
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            attempt: first.attempt,
            tasks: chunk
                .iter()
                .map(|a| GroupTask {
                    task: a.task,
                    range: a.range,
                    args: (a.args.len() <= INLINE_ARGS).then(|| engine.encode(&a.args)),
                })
                .collect(),
            segment: segment.to_string(),
            result_url: self
                .storage
                .signed_url(Some(&segment), Access::WRITE, valid)?,
            note_url: self.storage.signed_url(Some(&note), Access::WRITE, valid)?,
            called: false,
        };
        let text = self.queue_text(&message)?;
        // Room for `"called":true` when the group may be sent as a call.
        let room = if self.caller.is_some() { 16 } else { 0 };
        if text.len() + room <= MAX_MESSAGE_TEXT || chunk.len() == 1 {
            return Ok(vec![(message, text)]);
        }
        let (a, b) = chunk.split_at(chunk.len() / 2);
        let mut out = self.messages(a)?;
        out.extend(self.messages(b)?);
        Ok(out)
    }

    /// A message's text as the queue takes it (JSON, base64 when the app says so).
    fn queue_text(&self, message: &TaskMessage) -> Result<String> {
        Ok(self.queue_encoded(encode(message)?))
    }

    /// A message's JSON as the queue takes it (base64 when the app says so).
    fn queue_encoded(&self, json: String) -> String {
        if self.settings.base64 {
            base64::engine::general_purpose::STANDARD.encode(&json)
        } else {
            json
        }
    }

    /// Records the group (for a client that attaches later), then puts its message.
    async fn send(&self, message: &TaskMessage, text: &str) -> Result<()> {
        self.queue.send(text, Duration::ZERO).await?;
        self.record(message).await;
        Ok(())
    }

    /// Writes the group's record, once its message is in the queue: a client that attaches
    /// waits for the groups with a record. (Written before the send, a client that died
    /// between the two would leave a record of a group that never runs, and an attach would
    /// wait for it forever; written after, a client that dies between the two leaves a group
    /// an attach does not wait for, and runs again: at least once, never lost.) A record that
    /// cannot be written is only a warning: the group is out and runs.
    async fn record(&self, message: &TaskMessage) {
        if let Err(e) = self.write_record(message).await {
            tracing::warn!(
                job = %self.spec.id,
                "cannot store a group's record (a client attaching later runs its tasks again): {e}"
            );
        }
    }

    async fn write_record(&self, message: &TaskMessage) -> Result<()> {
        let record = GroupRecord {
            attempt: message.attempt,
            tasks: message.tasks.iter().map(|t| t.task).collect(),
        };
        let record = serde_json::to_vec(&record)
            .map_err(|e| Error::new(ErrorKind::Codec, format!("cannot encode a group: {e}")))?;
        let name = message.segment_name();
        self.storage
            .put(&self.storage.layout().group(&self.spec.id, name), record)
            .await
    }

    /// Sends one group as a call and ends its tasks with the answer. Beside the call, the
    /// group goes to the queue as a backup, hidden for as long as the call may take: deleted
    /// once the call is answered, shown at once if the call fails, and run by the app on its
    /// own if this client dies mid-call (so the group is as durable as a queued one, and a
    /// client that attaches waits for it as for any other).
    async fn call(self: Arc<Self>, caller: Arc<Caller>, mut message: TaskMessage) {
        message.called = true;
        let hidden = self
            .settings
            .function_timeout
            .saturating_add(CALL_GRACE)
            .min(MAX_HIDDEN);
        let json = match encode(&message) {
            Ok(json) => json,
            Err(e) => {
                let why = e.to_string();
                return self
                    .watch
                    .end_group(&message, redwood_core::TaskErrorKind::Lost, why);
            }
        };
        let text = self.queue_encoded(json.clone());
        let backup = async {
            let sent = self.queue.send(&text, hidden).await?;
            self.record(&message).await;
            Ok::<_, Error>(sent)
        };
        let called = caller.call(json);
        let (backup, answer) = futures::join!(backup, called);
        let key = self
            .storage
            .layout()
            .result_segment(&self.spec.id, message.segment_name());
        let drop_backup = async |backup: &Result<crate::queue::Message>| {
            if let Ok(b) = backup
                && let Err(e) = self.queue.delete(b).await
            {
                // Its delivery finds the outcomes stored and runs nothing.
                tracing::debug!(job = %self.spec.id, "cannot delete a call's backup: {e}");
            }
        };
        match answer {
            Answer::Stored(Some(outcomes)) => {
                read_group(&self, &key, message.attempt, &outcomes);
                drop_backup(&backup).await;
            }
            // Stored, and not in the answer: read it now rather than at the next listing.
            Answer::Stored(None) => {
                match self.storage.get(&key).await {
                    Ok(outcomes) => {
                        read_group(&self, &key, message.attempt, &outcomes);
                    }
                    Err(_) => self.watch.wake.notify_one(),
                }
                drop_backup(&backup).await;
            }
            Answer::Refused(why) => {
                drop_backup(&backup).await;
                self.watch
                    .end_group(&message, redwood_core::TaskErrorKind::Refused, why);
            }
            Answer::Failed(why) => {
                tracing::debug!(job = %self.spec.id, "a call failed, its backup runs now: {why}");
                let shown = match &backup {
                    Ok(b) => self.queue.hide(b, Duration::ZERO).await.map(|_| ()),
                    Err(_) => match self.queue_text(&message) {
                        Ok(text) => self.send(&message, &text).await,
                        Err(e) => Err(e),
                    },
                };
                if let Err(e) = shown {
                    match backup {
                        // It shows itself when its time is up.
                        Ok(_) => tracing::warn!(
                            job = %self.spec.id,
                            "a failed call's backup could not be shown now ({e}); it runs within {hidden:?}"
                        ),
                        Err(_) => self.watch.end_group(
                            &message,
                            redwood_core::TaskErrorKind::Lost,
                            format!(
                                "its call failed ({why}) and its queue message could not be \
                                 sent: {e}"
                            ),
                        ),
                    }
                }
            }
        }
    }
}

fn build_from_config(config: &LoadedConfig) -> Result<Arc<dyn Executor>> {
    let settings = FunctionsSettings::from_config(config)?;
    Ok(Arc::new(AzureFunctionsBackend::new(settings)?))
}

inventory::submit! {
    BackendFactory { name: NAME, build: build_from_config }
}

/// A message as JSON (what the app's HTTP trigger takes, and the queue before its encoding).
fn encode(message: &TaskMessage) -> Result<String> {
    serde_json::to_string(message)
        .map_err(|e| Error::new(ErrorKind::Codec, format!("cannot encode a message: {e}")))
}
