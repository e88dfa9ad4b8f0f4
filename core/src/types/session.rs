//! [`Session`]: the entry point. It owns a compute backend and a storage, and turns calls of
//! remote functions into jobs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::codec;
use crate::config::Placement;
use crate::driver::inputs::Inputs;
use crate::driver::{DriveRequest, drive};
use crate::error::{Error, ErrorKind, Result};
use crate::raw::backend::{CleanupRequest, JobSpec};
use crate::raw::binary::current_binary_hash;
use crate::raw::call_record::pack_call_record;
use crate::raw::executor::Executor;
use crate::raw::manifest::JobManifest;
use crate::storage::Storage;
use crate::types::blob::Blob;
use crate::types::broadcast::Broadcast;
use crate::types::data_refs::{self, TaskData};
use crate::types::job::Job;
use crate::types::lease::Lease;
use crate::types::options::TaskOptions;
use crate::types::pending;
use crate::types::region::Region;
use crate::types::remote::{IntoArgs, RemoteFn};
use crate::types::result_ref::{ResultRef, decode_stored_result, read_location};
use crate::types::session_builder::SessionBuilder;
use crate::types::task::Task;

/// A connection to a compute backend and a storage. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where tasks run: one region, or several that share each job.
    regions: Vec<Region>,
    placement: Placement,
    failover_after: Duration,
    /// The home store: job records, outcomes, broadcast values and uploads.
    storage: Storage,
    progress: bool,
    /// Bounds the job records `call` stores in the background.
    background_writes: Arc<tokio::sync::Semaphore>,
    /// What this session stored, for [`Session::cleanup`].
    made: std::sync::Mutex<Made>,
}

/// The jobs and broadcast values a session stored or attached to.
#[derive(Debug, Default)]
struct Made {
    jobs: std::collections::BTreeSet<String>,
    broadcasts: std::collections::BTreeSet<String>,
}

/// How many single-call job records may be stored in the background at once; past that,
/// `call` waits, so a loop of calls cannot pile up unbounded work.
const BACKGROUND_WRITES: usize = 64;

/// How long [`Session::close`] waits for record writes.
const CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits (at most `limit`) until the records of every session's finished jobs are stored; what
/// `#[redwood::main]` does when the program's main returns. Returns how many were left.
pub async fn flush_all_records(limit: std::time::Duration) -> usize {
    pending::wait_written(None, limit).await
}

/// Broadcast values larger than this are encoded and uploaded in parts (see `broadcast`).
const STREAM_BROADCAST_ABOVE: u64 = 32 << 20;

/// A job to submit: its encoded arguments, the stored data they read, its options.
struct Submission {
    args: Vec<Vec<u8>>,
    data: TaskData,
    options: TaskOptions,
    durability: Durability,
}

/// How a job's inputs are stored relative to running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Store the manifest and inputs, then submit; outcomes are stored before reported.
    /// `map` does this: its job id can be attached to.
    Attachable,
    /// Submit at once and store everything in the background. `call` does this: its job has
    /// no handle to attach with, so nobody can observe the difference but the latency.
    Fast,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("backend", &self.backend().name())
            .field("storage", &self.inner.storage)
            .field("regions", &self.inner.regions.len())
            .finish()
    }
}

/// What [`Session::cleanup`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Stored objects deleted (jobs, results, broadcast values).
    pub objects_deleted: usize,
    /// What the backend released, in words.
    pub released: Vec<String>,
}

impl Session {
    /// A session on `regions` (at least one) with `storage` as its home store.
    pub(crate) fn new(
        regions: Vec<Region>,
        placement: Placement,
        failover_after: Duration,
        storage: Storage,
        progress: bool,
    ) -> Session {
        Session {
            inner: Arc::new(Inner {
                regions,
                placement,
                failover_after,
                storage,
                progress,
                background_writes: Arc::new(tokio::sync::Semaphore::new(BACKGROUND_WRITES)),
                made: Default::default(),
            }),
        }
    }

    /// A session from `Redwood.toml` (profile `REDWOOD_PROFILE`) and `REDWOOD_*` variables;
    /// with neither, the local backend on `file://.redwood`.
    pub fn from_config() -> Result<Session> {
        Session::builder().build()
    }

    /// A builder that starts from the configuration and lets code override it.
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// The compute backend (of the first region, when there are several).
    pub fn backend(&self) -> &Arc<dyn Executor> {
        self.inner.regions[0].executor()
    }

    /// The regions tasks run in: one, unless the profile lists several `[[regions]]` or the
    /// builder was given them.
    pub fn regions(&self) -> &[Region] {
        &self.inner.regions
    }

    /// The home storage: job records, outcomes, broadcast values and uploads (each region's
    /// workers use their region's store, which the session fills as tasks need).
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    pub(crate) fn progress_enabled(&self) -> bool {
        self.inner.progress
    }

    /// This session's identity among the sessions of the process (shared by its clones).
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Waits until the records of this session's finished jobs are stored: each `call` stores
    /// its job record, and each job its events record, in the background once it ends. A
    /// program that returns from `#[tokio::main]` right after its last result would lose
    /// them (the runtime drops background work), so it ends with `rw.close().await`;
    /// `#[redwood::main]` does this for every session on its own. Deletes nothing and keeps
    /// the session usable; jobs still running are not waited for. A `Timeout` error when
    /// records are still being written after 30 s.
    pub async fn close(&self) -> Result<()> {
        match pending::wait_written(Some(self.id()), CLOSE_LIMIT).await {
            0 => Ok(()),
            left => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{left} job record(s) were still being written after {CLOSE_LIMIT:?}; \
                     they may be missing from {}",
                    self.inner.storage.url()
                ),
            )
            .with_operation("Session::close")),
        }
    }

    /// Runs `f(args)` as one remote task. The returned [`Task`] is a future of the result; the
    /// task is submitted at once, whether or not the future is polled.
    pub fn call<F, Args, Out, I>(&self, f: RemoteFn<F, Args, Out>, args: I) -> Task<Out>
    where
        Args: Serialize + Send + 'static,
        Out: DeserializeOwned + Send + 'static,
        I: IntoArgs<Args>,
        F: Send + Sync + 'static,
    {
        self.call_with(f, args, TaskOptions::default())
    }

    /// [`Session::call`] with options (retries, timeout).
    pub fn call_with<F, Args, Out, I>(
        &self,
        f: RemoteFn<F, Args, Out>,
        args: I,
        options: TaskOptions,
    ) -> Task<Out>
    where
        Args: Serialize + Send + 'static,
        Out: DeserializeOwned + Send + 'static,
        I: IntoArgs<Args>,
        F: Send + Sync + 'static,
    {
        let (encoded, refs) = data_refs::recording(|| codec::encode(&args.into_args()));
        let session = self.clone();
        let (id, signature) = (f.id(), f.signature());
        Task::spawn(async move {
            let call = Submission {
                args: vec![encoded?],
                data: TaskData::collect(vec![refs]),
                options,
                durability: Durability::Fast,
            };
            let job = session.submit::<Out>(id, signature, call).await?;
            job.into_single().await
        })
    }

    /// Runs `f` once per item, in parallel. Returns once every task is submitted; the [`Job`]
    /// then streams, collects or reduces the results.
    pub async fn map<F, Args, Out, It>(
        &self,
        f: RemoteFn<F, Args, Out>,
        items: It,
    ) -> Result<Job<Out>>
    where
        Args: Serialize,
        Out: DeserializeOwned + Send + 'static,
        It: IntoIterator,
        It::Item: IntoArgs<Args>,
    {
        self.map_with(f, items, TaskOptions::default()).await
    }

    /// [`Session::map`] with options (retries, timeout, concurrency limit).
    pub async fn map_with<F, Args, Out, It>(
        &self,
        f: RemoteFn<F, Args, Out>,
        items: It,
        options: TaskOptions,
    ) -> Result<Job<Out>>
    where
        Args: Serialize,
        Out: DeserializeOwned + Send + 'static,
        It: IntoIterator,
        It::Item: IntoArgs<Args>,
    {
        let mut refs = Vec::new();
        let args = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let (encoded, noted) = data_refs::recording(|| codec::encode(&item.into_args()));
                refs.push(noted);
                encoded.map_err(|e| e.with_context("function", f.id()).with_context("task", i))
            })
            .collect::<Result<Vec<_>>>()?;
        let map = Submission {
            args,
            data: TaskData::collect(refs),
            options,
            durability: Durability::Attachable,
        };
        self.submit(f.id(), f.signature(), map).await
    }

    async fn submit<Out>(
        &self,
        function: &'static str,
        signature: u64,
        submission: Submission,
    ) -> Result<Job<Out>>
    where
        Out: DeserializeOwned + Send + 'static,
    {
        let Submission {
            args,
            data,
            options,
            durability,
        } = submission;
        crate::raw::registry::check_unique(function)?;
        let spec = Arc::new(JobSpec {
            id: new_job_id(function),
            function: function.to_string(),
            signature,
            binary: current_binary_hash()?.to_string(),
            task_count: args.len() as u64,
            options,
        });
        self.remember_job(&spec.id);
        let span = tracing::info_span!("map", job = %spec.id, function, tasks = spec.task_count);
        async {
            let regions = self.regions_for(&spec.options)?;
            let mut inputs_from_storage = false;
            for region in &regions {
                let executor = region.executor();
                let capabilities = executor.capabilities();
                capabilities.check(executor.name(), &spec, &args)?;
                inputs_from_storage |= capabilities.inputs_from_storage;
            }
            let inputs = Arc::new(Inputs::pack(&args));
            drop(args);
            let data = Arc::new(data);
            // Fast: the record is stored once the job ends, so its disk work (a new inode costs
            // real CPU on some file systems) never competes with the call it records; inputs
            // the executor's workers read from storage are stored first all the same.
            // An attachable job's runner holds a lease while it runs, so an `attach` elsewhere
            // does not run its tasks a second time.
            let (deferred_record, lease) = match durability {
                Durability::Attachable => {
                    self.write_job::<Out>(&spec, &data, Some(inputs.bytes())).await?;
                    let lease = Lease::take_new(&self.inner.storage, &spec.id).await?;
                    (None, Some(lease))
                }
                Durability::Fast => {
                    let permit = self.background_permit().await?;
                    if inputs_from_storage && inputs.len() > 0 {
                        let key = self.inner.storage.layout().input(&spec.id);
                        self.inner.storage.put(&key, inputs.bytes().clone()).await?;
                    }
                    (Some(permit), None)
                }
            };
            let driving = drive(DriveRequest {
                spec: spec.clone(),
                storage: self.inner.storage.clone(),
                regions: self.lanes(),
                placement: self.inner.placement,
                failover_after: self.inner.failover_after,
                inputs: inputs.clone(),
                data: data.clone(),
                todo: (0..spec.task_count).map(|i| (i, 0)).collect(),
                follow: false,
                durable: durability == Durability::Attachable,
                keep: self.keeps(&spec.id),
            })
            .await
            .map_err(|e| e.with_context("job", &spec.id))?;
            let job = Job::start(self.clone(), spec.clone(), driving, Vec::new(), lease);
            if let Some(permit) = deferred_record {
                let pending = pending::register(self.id(), job.finished_probe());
                let (session, spec, job) = (self.clone(), spec.clone(), job.clone());
                tokio::spawn(async move {
                    job.wait_finished().await;
                    if let Err(e) = session.write_call_record::<Out>(&spec, &data, &inputs, &job).await {
                        tracing::warn!(job = %spec.id, error = %e, "could not store the call's record");
                    }
                    drop((permit, pending));
                });
            }
            Ok(job)
        }
        .instrument(span)
        .await
    }

    /// The regions a job with `options` may run in: all, or the one it is pinned to.
    pub(crate) fn regions_for(&self, options: &TaskOptions) -> Result<Vec<Region>> {
        let Some(name) = &options.region else {
            return Ok(self.inner.regions.clone());
        };
        match self.inner.regions.iter().find(|r| r.name() == name) {
            Some(_) => Ok(self.inner.regions.clone()),
            None => {
                let known: Vec<&str> = self.inner.regions.iter().map(Region::name).collect();
                Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "TaskOptions::region(\"{name}\"): the session has no region `{name}` \
                         (it has: {})",
                        known.join(", ")
                    ),
                ))
            }
        }
    }

    /// The regions, as the job driver takes them.
    pub(crate) fn lanes(&self) -> Vec<Region> {
        self.inner.regions.clone()
    }

    /// How tasks are spread over regions, and how long a failing region is given.
    pub(crate) fn placement(&self) -> (Placement, Duration) {
        (self.inner.placement, self.inner.failover_after)
    }

    /// A permit to store one job record in the background; waits while too many are under way.
    async fn background_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.inner
            .background_writes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::new(ErrorKind::Unexpected, "the session is closed"))
    }

    /// Stores a finished call's record in one object.
    async fn write_call_record<Out>(
        &self,
        spec: &JobSpec,
        data: &TaskData,
        inputs: &Inputs,
        job: &Job<Out>,
    ) -> Result<()>
    where
        Out: DeserializeOwned + Send + 'static,
    {
        let storage = &self.inner.storage;
        let manifest = self.manifest::<Out>(spec, data);
        let outcome = job.outcome_of(0).await?;
        let record = pack_call_record(&manifest, inputs.bytes(), &outcome)?;
        storage
            .put(&storage.layout().call_record(&spec.id), record)
            .await
    }

    /// The manifest of a job of this session whose results are `Out`.
    fn manifest<Out>(&self, spec: &JobSpec, data: &TaskData) -> JobManifest {
        let mut manifest = JobManifest::new(spec, self.backend().name(), self.inner.storage.url())
            .with_result_type(std::any::type_name::<Out>());
        manifest.data = data.clone();
        manifest
    }

    /// Stores the manifest of a job whose results are `Out` and, unless `None` (already
    /// stored), the packed inputs, concurrently.
    async fn write_job<Out>(
        &self,
        spec: &JobSpec,
        data: &TaskData,
        inputs: Option<&Bytes>,
    ) -> Result<()> {
        let storage = &self.inner.storage;
        let layout = storage.layout();
        let manifest = self.manifest::<Out>(spec, data);
        let manifest_key = layout.manifest(&spec.id);
        let write_inputs = async {
            match inputs {
                Some(bytes) => storage.put(&layout.input(&spec.id), bytes.clone()).await,
                None => Ok(()),
            }
        };
        futures::try_join!(
            storage.put(&manifest_key, manifest.to_json()?),
            write_inputs
        )?;
        Ok(())
    }

    /// Stores a value once (content-addressed: the same value is uploaded once) and returns a
    /// handle that tasks read with [`Broadcast::get`].
    ///
    /// The value is encoded twice and never held whole in memory: once to compute its sha256
    /// (its key), then into parts that upload while the rest is encoded.
    pub async fn broadcast<T: Serialize + Sync>(&self, value: &T) -> Result<Broadcast<T>> {
        let storage = &self.inner.storage;
        let (sha, len) = codec::versioned_sha256(value)?;
        let key = storage.layout().broadcast(&sha);
        let span = tracing::info_span!("broadcast", key = %key, len);
        async {
            // Content-addressed, so an object already there is reused, once its bytes are
            // checked: a corrupt one would give wrong results for ever.
            match storage.sha256(&key).await? {
                Some(found) if found == (sha.clone(), len) => {
                    tracing::debug!(key = %key, "broadcast already stored (sha256 checked)");
                }
                found => {
                    if found.is_some() {
                        tracing::warn!(key = %key, "the stored broadcast value is corrupt (its sha256 differs); rewriting it");
                    }
                    if len > STREAM_BROADCAST_ABOVE {
                        storage.put_versioned(&key, value).await?;
                    } else {
                        storage.put(&key, codec::encode_versioned(value)?).await?;
                    }
                }
            }
            self.made().broadcasts.insert(key.to_string());
            Ok(Broadcast::new(self.inner.storage.identity().to_string(), key.to_string(), sha, len))
        }
        .instrument(span)
        .await
    }

    /// Stores input data under `data/<name>` and returns a handle tasks can read.
    pub async fn upload(&self, name: &str, bytes: impl Into<Bytes>) -> Result<Blob> {
        let bytes: Bytes = bytes.into();
        let key = self.inner.storage.layout().data(name);
        let len = bytes.len() as u64;
        self.inner.storage.put(&key, bytes).await?;
        Ok(Blob::new(
            self.inner.storage.identity().to_string(),
            key.to_string(),
            len,
        ))
    }

    /// The objects stored under `data/<prefix>`, sorted by key.
    pub async fn blobs(&self, prefix: &str) -> Result<Vec<Blob>> {
        let storage = &self.inner.storage;
        let metas = storage.list_meta(&storage.layout().data(prefix)).await?;
        Ok(metas
            .into_iter()
            .map(|(key, len)| {
                Blob::new(
                    self.inner.storage.identity().to_string(),
                    key.to_string(),
                    len,
                )
            })
            .collect())
    }

    /// Reads a blob on the client.
    pub async fn fetch_blob(&self, blob: &Blob) -> Result<Bytes> {
        self.inner
            .storage
            .get(&object_store::path::Path::from(blob.key()))
            .await
    }

    /// Reads the value a [`ResultRef`] points to, on the client.
    pub async fn fetch_ref<T: DeserializeOwned>(&self, result: &ResultRef<T>) -> Result<T> {
        let bytes = read_location(&self.inner.storage, result.location()).await?;
        decode_stored_result(&bytes)
    }

    /// Reads a broadcast value on the client.
    pub async fn fetch_broadcast<T: DeserializeOwned>(&self, value: &Broadcast<T>) -> Result<T> {
        let key = object_store::path::Path::from(value.key());
        codec::decode_versioned(&self.inner.storage.get(&key).await?)
    }

    /// Deletes what this session stored — the jobs it submitted or attached to, the broadcast
    /// values it stored or reused — and releases what the backend holds (workers, Batch jobs, a
    /// pool it created). Other sessions' jobs in the same storage stay; see
    /// [`Session::cleanup_all`]. Waits for the job records `call` still stores in the
    /// background. Jobs still running in this process keep their in-memory results.
    pub async fn cleanup(&self) -> Result<CleanupReport> {
        self.flush_records().await;
        let (jobs, broadcasts) = {
            let made = self.made();
            (made.jobs.clone(), made.broadcasts.clone())
        };
        let storage = &self.inner.storage;
        let layout = storage.layout();
        let mut objects_deleted = 0;
        for job in &jobs {
            objects_deleted += storage.delete_prefix(&layout.job(job)).await?;
        }
        for key in &broadcasts {
            storage
                .delete(&object_store::path::Path::from(key.as_str()))
                .await?;
            objects_deleted += 1;
        }
        {
            let mut made = self.made();
            made.jobs.retain(|j| !jobs.contains(j));
            made.broadcasts.retain(|b| !broadcasts.contains(b));
        }
        self.release_backend(objects_deleted).await
    }

    /// Deletes every stored job and broadcast value in this session's storage namespace, also
    /// other sessions' (not `data/`), and releases what the backend holds.
    pub async fn cleanup_all(&self) -> Result<CleanupReport> {
        self.flush_records().await;
        let storage = &self.inner.storage;
        let layout = storage.layout();
        let mut objects_deleted = storage.delete_prefix(&layout.jobs()).await?;
        objects_deleted += storage.delete_prefix(&layout.broadcasts()).await?;
        *self.made() = Made::default();
        self.release_backend(objects_deleted).await
    }

    async fn release_backend(&self, objects_deleted: usize) -> Result<CleanupReport> {
        let mut released = Vec::new();
        for region in &self.inner.regions {
            let reply = region
                .executor()
                .release(CleanupRequest::default())
                .await
                .map_err(|e| e.with_context("region", region.name()))?;
            released.extend(reply.released);
        }
        Ok(CleanupReport {
            objects_deleted,
            released,
        })
    }

    /// Waits (at most 30 s) until the job records `call` stores in the background are written
    /// (a call whose task still runs keeps its record from being written until it ends), and
    /// the events records of finished jobs, so a cleanup after them leaves nothing behind.
    async fn flush_records(&self) {
        let all = BACKGROUND_WRITES as u32;
        let wait = self.inner.background_writes.acquire_many(all);
        if tokio::time::timeout(CLOSE_LIMIT, wait).await.is_err() {
            tracing::warn!("calls still running: their job records are stored when they end");
        }
        pending::wait_written(Some(self.id()), CLOSE_LIMIT).await;
    }

    /// Whether this session still keeps `job` (submitted or attached, and not cleaned up), as
    /// a test the job driver can hold: a job cleaned up while it ran stores nothing more.
    pub(crate) fn keeps(&self, job: &str) -> crate::driver::Keep {
        let (session, job) = (Arc::downgrade(&self.inner), job.to_string());
        Arc::new(move || {
            session
                .upgrade()
                .is_none_or(|inner| inner.made.lock().map_or(true, |m| m.jobs.contains(&job)))
        })
    }

    fn made(&self) -> std::sync::MutexGuard<'_, Made> {
        self.inner.made.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a job this session stored or attached to, for [`Session::cleanup`].
    pub(crate) fn remember_job(&self, job: &str) {
        self.made().jobs.insert(job.to_string());
    }
}

/// A job id: the function's short name and 12 random hex digits.
fn new_job_id(function: &str) -> String {
    let name = function.rsplit("::").next().unwrap_or(function);
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(24)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{name}-{}", &random[..12])
}
