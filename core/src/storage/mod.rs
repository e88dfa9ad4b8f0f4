//! Object storage: opening a store from a URL, and the key layout every reader and writer shares
//! (DESIGN §3). All access goes through `Arc<dyn ObjectStore>`.

pub mod scheme;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tracing::Instrument;

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::retry::RetryPolicy;

/// What a signed URL lets its holder do (as object_store's `Signer` grants one method on one
/// key); each store maps it to its own permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Read the object, or every object of the container.
    pub read: bool,
    /// Write (create or replace) the object.
    pub write: bool,
    /// List the container.
    pub list: bool,
}

impl Access {
    /// Read only.
    pub const READ: Access = Access {
        read: true,
        write: false,
        list: false,
    };
    /// Write only (one key, for a worker's outcome).
    pub const WRITE: Access = Access {
        read: false,
        write: true,
        list: false,
    };
    /// Read and list (a container).
    pub const READ_LIST: Access = Access {
        read: true,
        write: false,
        list: true,
    };
}

/// The bucket or container a store writes to: creating it when missing (object_store cannot),
/// and signing URLs into it for readers that have no credentials (cloud workers).
#[async_trait::async_trait]
pub trait Container: Send + Sync + fmt::Debug {
    /// The container's name.
    fn name(&self) -> &str;
    /// Creates it; succeeds when it already exists.
    async fn create(&self) -> Result<()>;
    /// A URL to the container (`blob: None`) or one object in it, carrying a signature that
    /// grants `access` until `expiry`.
    fn signed_url(
        &self,
        blob: Option<&str>,
        access: Access,
        expiry: std::time::SystemTime,
    ) -> Result<String>;
    /// Whether `e` (from the store) means the container itself is missing, which a read treats
    /// as "no such object" (default: only object_store's `NotFound`).
    fn is_missing(&self, e: &object_store::Error) -> bool {
        matches!(e, object_store::Error::NotFound { .. })
    }
    /// Where `e` says the container itself is missing and it is not one Redwood makes (an S3
    /// or GCS bucket): the error saying how to make it, which a listing answers instead of
    /// "nothing there" (default: none).
    fn missing_error(&self, e: &object_store::Error) -> Option<Error> {
        let _ = e;
        None
    }
    /// The container as `Any`, so that the store crate that made it can reach what it alone
    /// knows (the Azure one: the account's queue service); default: not offered.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
    /// Whether deleting many objects should use the store's bulk delete (default true).
    fn bulk_delete(&self) -> bool {
        true
    }
    /// Deletes objects one request each, several at once (where bulk delete is not used);
    /// objects already gone are fine.
    async fn delete_each(&self, blobs: Vec<String>) -> Result<()> {
        let _ = blobs;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "container `{}` cannot delete objects one by one",
                self.name()
            ),
        ))
    }
}

/// Keys handed to one bulk delete round.
const DELETE_CHUNK: usize = 4096;

/// An object store plus the root prefix Redwood writes under.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// Tells this store apart from every other (see [`Storage::identity`]).
    identity: String,
    root: Path,
    shared_between_processes: bool,
    container: Option<Arc<dyn Container>>,
    retry: RetryPolicy,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("url", &self.url)
            .field("root", &self.root.as_ref())
            .finish()
    }
}

/// Objects larger than this are uploaded in parts.
const MULTIPART_ABOVE: usize = 32 << 20;
/// The size of one part.
const MULTIPART_PART: usize = 16 << 20;
/// Parts in flight at once.
const MULTIPART_CONCURRENCY: usize = 8;

/// Collects encoded bytes into parts and hands each full part to the uploader.
struct PartWriter {
    part: Vec<u8>,
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl PartWriter {
    fn send_rest(&mut self) {
        if !self.part.is_empty() {
            let _ = self.tx.send(std::mem::take(&mut self.part));
        }
    }
}

impl std::io::Write for PartWriter {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let room = MULTIPART_PART - self.part.len();
            let take = room.min(buf.len());
            self.part.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.part.len() == MULTIPART_PART {
                let full = std::mem::replace(&mut self.part, Vec::with_capacity(MULTIPART_PART));
                self.tx
                    .send(full)
                    .map_err(|_| std::io::Error::other("the upload stopped"))?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Named in-memory stores of this process, so two sessions on `memory://name` see the same data.
fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

impl Storage {
    /// Opens the store a URL names: `file://<folder>` (relative to the working directory, or
    /// absolute as `file:///abs`), `memory://[name]` (this process only), or a scheme another
    /// crate registers ([`scheme::StorageScheme`]; `az://<container>/<prefix>` with the `azure`
    /// feature).
    pub fn open(url: &str) -> Result<Storage> {
        Storage::open_with(url, &BTreeMap::new())
    }

    /// [`Storage::open`] with options for the store (credentials, endpoint; see the README).
    pub fn open_with(url: &str, options: &BTreeMap<String, String>) -> Result<Storage> {
        let scheme_name = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        if !matches!(scheme_name, "file" | "memory") {
            if let Some(registered) = scheme::find(scheme_name) {
                return (registered.open)(url, options);
            }
            let why = match scheme::feature_for(scheme_name) {
                None if scheme_name.is_empty() => format!(
                    "`{url}` is not a storage URL: write file://{url} for a folder, or one of {}",
                    scheme::known().join(", ")
                ),
                Some(feature) => format!(
                    "this build has no `{scheme_name}://` storage: enable the `{feature}` feature \
                     of the redwood crate"
                ),
                None => format!(
                    "unsupported storage scheme `{scheme_name}`: this build knows {}",
                    scheme::known().join(", ")
                ),
            };
            return Err(Error::new(ErrorKind::Config, why).with_context("storage", url));
        }
        if !options.is_empty() {
            let keys: Vec<&str> = options.keys().map(String::as_str).collect();
            return Err(Error::new(
                ErrorKind::Config,
                format!("storage options {keys:?} are not for {scheme_name}:// storage"),
            )
            .with_context("storage", url));
        }
        let bad = |why: String| {
            Error::new(ErrorKind::Config, why)
                .with_operation("Storage::open")
                .with_context("storage", url)
        };
        if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(bad(
                    "a file:// URL needs a folder, e.g. file://.redwood".into()
                ));
            }
            let folder = std::path::absolute(rest)
                .map_err(|e| bad(format!("cannot resolve folder `{rest}`: {e}")))?;
            std::fs::create_dir_all(&folder).map_err(|e| {
                bad(format!(
                    "cannot create storage folder {}: {e}",
                    folder.display()
                ))
            })?;
            // A delete also removes the folders it leaves empty (a job's folders, after
            // `cleanup`), up to the storage folder itself.
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&folder)
                .map_err(|e| {
                    bad(format!(
                        "cannot open storage folder {}: {e}",
                        folder.display()
                    ))
                })?
                .with_automatic_cleanup(true);
            Ok(Storage {
                store: Arc::new(fs),
                url: url.to_string(),
                identity: format!("file://{}", folder.display()),
                root: Path::default(),
                shared_between_processes: true,
                container: None,
                retry: RetryPolicy::STORAGE,
            })
        } else if let Some(name) = url.strip_prefix("memory://") {
            let store = memory_stores()
                .lock()
                .map_err(|_| bad("memory store registry is poisoned".into()))?
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(InMemory::new()))
                .clone();
            Ok(Storage {
                store,
                url: url.to_string(),
                identity: url.to_string(),
                root: Path::default(),
                shared_between_processes: false,
                container: None,
                retry: RetryPolicy::STORAGE,
            })
        } else {
            Err(bad(format!(
                "unsupported storage scheme `{scheme_name}`: this build knows {}",
                scheme::known().join(", ")
            )))
        }
    }

    /// The same storage with a container that creates itself when missing and signs URLs
    /// (for a store crate's `open`).
    pub fn with_container(mut self, container: Arc<dyn Container>) -> Storage {
        self.container = Some(container);
        self
    }

    /// Wraps any object store; `root` is the prefix Redwood writes under.
    pub fn from_store(
        store: Arc<dyn ObjectStore>,
        url: impl Into<String>,
        root: &str,
        shared_between_processes: bool,
    ) -> Storage {
        let url = url.into();
        Storage {
            store,
            identity: url.clone(),
            url,
            root: Path::from(root),
            shared_between_processes,
            container: None,
            retry: RetryPolicy::STORAGE,
        }
    }

    /// The policy of the retries `Storage` makes itself ([`RetryPolicy::STORAGE`]): of whole
    /// operations that failed with a transient error the store's client did not retry already.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The same store with a different root prefix (a namespace inside it).
    pub fn with_root(&self, root: &str) -> Storage {
        Storage {
            root: Path::from(root),
            ..self.clone()
        }
    }

    /// The underlying object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The URL this storage was opened from (secrets removed).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What tells this store apart from every other, whatever URL opened it: the folder of a
    /// `file://` store, the URL of a `memory://` one, the account endpoint and container of an
    /// `az://` one (two accounts may both have a container `redwood`). Handles (`Blob`,
    /// `Broadcast`, result locations) name their store by it. Never holds a secret.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// A short tag naming this store and namespace (its identity and root) that executors put
    /// on what they make for its jobs, so that `redwood cleanup` can tell its leftovers from
    /// another home's. Holds no secret, and no name either (a hash).
    pub fn home_tag(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(self.identity.as_bytes())
            .chain_update([0u8])
            .chain_update(self.layout().jobs().as_ref().as_bytes())
            .finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The same storage with another identity (for a store crate's `open`; see
    /// [`Storage::identity`]).
    pub fn with_identity(mut self, identity: impl Into<String>) -> Storage {
        self.identity = identity.into();
        self
    }

    /// A signed URL to the container or to one object (`key` relative to the store), granting
    /// `access` for `valid_for`. Only stores with a container and a key to sign with can.
    pub fn signed_url(
        &self,
        key: Option<&Path>,
        access: Access,
        valid_for: std::time::Duration,
    ) -> Result<String> {
        let container = self.container.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "storage {} cannot sign URLs (az://, s3:// and gs:// can)",
                    self.url
                ),
            )
        })?;
        let expiry = std::time::SystemTime::now() + valid_for;
        container.signed_url(key.map(|k| k.as_ref()), access, expiry)
    }

    /// The container this storage writes to, when it has one (`az://`, `s3://`, `gs://`).
    pub fn container(&self) -> Option<&Arc<dyn Container>> {
        self.container.as_ref()
    }

    /// Whether another process can read what this process writes (false for `memory://`).
    pub fn is_shared_between_processes(&self) -> bool {
        self.shared_between_processes
    }

    /// The key layout under this storage's root.
    pub fn layout(&self) -> Layout {
        Layout {
            root: self.root.clone(),
        }
    }

    /// Writes an object (atomically: readers see the old object or the whole new one). A
    /// missing container is created once and the write tried again.
    pub async fn put(&self, key: &Path, bytes: impl Into<Bytes>) -> Result<()> {
        let bytes: Bytes = bytes.into();
        match self.put_once(key, bytes.clone()).await {
            Err(e) if e.kind() == ErrorKind::NotFound && self.container.is_some() => {
                if let Some(container) = &self.container {
                    tracing::info!(container = container.name(), "creating missing container");
                    container.create().await?;
                }
                self.put_once(key, bytes).await
            }
            other => other,
        }
    }

    /// One write, its transient failures retried.
    async fn put_once(&self, key: &Path, bytes: Bytes) -> Result<()> {
        let span = tracing::debug_span!("store.put", key = %key, len = bytes.len());
        self.retry
            .run("store.put", || async {
                let result = if bytes.len() > MULTIPART_ABOVE {
                    self.put_multipart(key, bytes.clone()).await
                } else {
                    self.store
                        .put(key, PutPayload::from_bytes(bytes.clone()))
                        .await
                        .map(|_| ())
                };
                result.map_err(|e| self.error("store.put", key, e))
            })
            .instrument(span)
            .await
    }

    /// Writes the stored form of a value (see [`codec::encode_versioned_to`]) without building it
    /// in memory: it is encoded into parts on a helper thread while earlier parts upload.
    /// Needs a multi-threaded Tokio runtime; elsewhere it encodes into one buffer first.
    pub async fn put_versioned<T: serde::Serialize + Sync + ?Sized>(
        &self,
        key: &Path,
        value: &T,
    ) -> Result<()> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi_thread {
            return self.put(key, codec::encode_versioned(value)?).await;
        }
        let streamed = || {
            self.retry
                .run("store.put", || async { self.stream_once(key, value) })
        };
        match streamed().await {
            Err(e) if e.kind() == ErrorKind::NotFound && self.container.is_some() => {
                if let Some(container) = &self.container {
                    container.create().await?;
                }
                streamed().await
            }
            other => other,
        }
    }

    fn stream_once<T: serde::Serialize + Sync + ?Sized>(
        &self,
        key: &Path,
        value: &T,
    ) -> Result<()> {
        let handle = tokio::runtime::Handle::current();
        let store = self.store.clone();
        let span = tracing::debug_span!("store.put_streaming", key = %key);
        let _entered = span.enter();
        tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
                let encoder = scope.spawn(move || {
                    let mut parts = PartWriter {
                        part: Vec::with_capacity(MULTIPART_PART),
                        tx,
                    };
                    let written = codec::encode_versioned_to(value, &mut parts);
                    parts.send_rest();
                    written
                });
                // This thread may block: `block_in_place` handed its runtime work elsewhere.
                let uploaded = handle.block_on(async move {
                    let rx = rx; // dropped on return, so the encoder stops if the upload fails
                    let upload = store.put_multipart(key).await?;
                    let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
                    while let Ok(part) = rx.recv() {
                        writer.wait_for_capacity(MULTIPART_CONCURRENCY).await?;
                        writer.put(Bytes::from(part));
                    }
                    writer.finish().await.map(|_| ())
                });
                let encoded = encoder.join().unwrap_or_else(|_| {
                    Err(Error::new(ErrorKind::Codec, "the encoder thread panicked"))
                });
                uploaded.map_err(|e| self.error("store.put", key, e))?;
                encoded.map(|_| ())
            })
        })
    }

    /// Uploads a large object in parts, several at once.
    async fn put_multipart(&self, key: &Path, bytes: Bytes) -> object_store::Result<()> {
        let upload = self.store.put_multipart(key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + MULTIPART_PART).min(bytes.len());
            writer.wait_for_capacity(MULTIPART_CONCURRENCY).await?;
            writer.put(bytes.slice(at..end));
            at = end;
        }
        writer.finish().await.map(|_| ())
    }

    /// A storage error naming this store, the operation and the key, transient or not as the
    /// retry policy sees it (for code that reads through [`Storage::store`] directly).
    pub fn error(&self, operation: &'static str, key: &Path, e: object_store::Error) -> Error {
        Error::storage(operation, key.as_ref(), e).with_context("storage", &self.url)
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &Path) -> Result<bool> {
        let span = tracing::debug_span!("store.head", key = %key);
        self.retry
            .run("store.head", || async {
                match self.store.head(key).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) if self.container.as_ref().is_some_and(|c| c.is_missing(&e)) => {
                        Ok(false)
                    }
                    Err(e) => Err(self.error("store.head", key, e)),
                }
            })
            .instrument(span)
            .await
    }

    /// Writes an object unless one exists, in one conditional request (object_store's
    /// `PutMode::Create`), so a concurrent writer is never overwritten; returns whether it
    /// wrote. An object already there that holds exactly these bytes counts as written: an
    /// earlier try of this request may have been stored and its answer lost (give each writer
    /// distinct bytes where that matters).
    pub async fn put_if_absent(&self, key: &Path, bytes: impl Into<Bytes>) -> Result<bool> {
        let bytes: Bytes = bytes.into();
        let create = || {
            let span = tracing::debug_span!("store.put_if_absent", key = %key, len = bytes.len());
            self.retry
                .run("store.put_if_absent", || async {
                    let options = object_store::PutOptions {
                        mode: object_store::PutMode::Create,
                        ..Default::default()
                    };
                    let payload = PutPayload::from_bytes(bytes.clone());
                    match self.store.put_opts(key, payload, options).await {
                        Ok(_) => Ok(true),
                        // Someone's object is there; ours if an earlier try of this very
                        // request was stored but its answer was lost.
                        Err(
                            object_store::Error::AlreadyExists { .. }
                            | object_store::Error::Precondition { .. },
                        ) => Ok(self.get(key).await? == bytes),
                        Err(e) => Err(self.error("store.put_if_absent", key, e)),
                    }
                })
                .instrument(span)
        };
        match create().await {
            Err(e) if e.kind() == ErrorKind::NotFound && self.container.is_some() => {
                if let Some(container) = &self.container {
                    container.create().await?;
                }
                create().await
            }
            other => other,
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &Path) -> Result<Bytes> {
        let span = tracing::debug_span!("store.get", key = %key);
        self.retry
            .run("store.get", || async {
                let read = async { self.store.get(key).await?.bytes().await };
                read.await.map_err(|e| self.error("store.get", key, e))
            })
            .instrument(span)
            .await
    }

    /// The sha256 (lower-case hex) and length of an object, read as a stream (never whole in
    /// memory), or `None` when there is no such object.
    pub async fn sha256(&self, key: &Path) -> Result<Option<(String, u64)>> {
        use sha2::{Digest, Sha256};
        let span = tracing::debug_span!("store.sha256", key = %key);
        self.retry
            .run("store.get", || async {
                let read = async {
                    let mut stream = self.store.get(key).await?.into_stream();
                    let (mut hash, mut len) = (Sha256::new(), 0u64);
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk?;
                        len += chunk.len() as u64;
                        hash.update(&chunk);
                    }
                    Ok((crate::raw::binary::hex(&hash.finalize()), len))
                };
                match read.await {
                    Ok(found) => Ok(Some(found)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) if self.container.as_ref().is_some_and(|c| c.is_missing(&e)) => Ok(None),
                    Err(e) => Err(self.error("store.get", key, e)),
                }
            })
            .instrument(span)
            .await
    }

    /// Reads a byte range of an object.
    pub async fn get_range(&self, key: &Path, range: std::ops::Range<u64>) -> Result<Bytes> {
        let span = tracing::debug_span!("store.get_range", key = %key, ?range);
        self.retry
            .run("store.get_range", || async {
                self.store
                    .get_range(key, range.clone())
                    .await
                    .map_err(|e| self.error("store.get_range", key, e))
            })
            .instrument(span)
            .await
    }

    /// Lists the keys under a prefix, sorted.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<Path>> {
        Ok(self
            .list_meta(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Lists the keys under a prefix with their sizes, sorted by key.
    pub async fn list_meta(&self, prefix: &Path) -> Result<Vec<(Path, u64)>> {
        let span = tracing::debug_span!("store.list", prefix = %prefix);
        let mut metas = self
            .retry
            .run("store.list", || async {
                let listed: std::result::Result<Vec<(Path, u64)>, _> = self
                    .store
                    .list(Some(prefix))
                    .map_ok(|meta| (meta.location, meta.size))
                    .try_collect()
                    .await;
                match listed {
                    Ok(m) => Ok(m),
                    Err(e)
                        if let Some(clear) =
                            self.container.as_ref().and_then(|c| c.missing_error(&e)) =>
                    {
                        Err(clear.with_context("storage", &self.url))
                    }
                    // A container that does not exist yet holds nothing. (object_store reports
                    // Azure's list of a missing container as a generic error carrying
                    // `ContainerNotFound`.)
                    Err(e) if self.container.as_ref().is_some_and(|c| c.is_missing(&e)) => {
                        Ok(Vec::new())
                    }
                    Err(e) => Err(self.error("store.list", prefix, e)),
                }
            })
            .instrument(span)
            .await?;
        metas.sort();
        Ok(metas)
    }

    /// Deletes one object; one already gone is fine.
    pub async fn delete(&self, key: &Path) -> Result<()> {
        let span = tracing::debug_span!("store.delete", key = %key);
        self.retry
            .run("store.delete", || async {
                match self.store.delete(key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(self.error("store.delete", key, e)),
                }
            })
            .instrument(span)
            .await
    }

    /// Deletes every object under a prefix; returns how many it deleted.
    pub async fn delete_prefix(&self, prefix: &Path) -> Result<usize> {
        let keys = self.list(prefix).await?;
        let n = keys.len();
        if let Some(container) = self.container.as_ref().filter(|c| !c.bulk_delete()) {
            let blobs = keys.iter().map(|k| k.to_string()).collect();
            container
                .delete_each(blobs)
                .await
                .map_err(|e| e.with_context("prefix", prefix.as_ref()))?;
            return Ok(n);
        }
        // In bulk: Azure deletes 256 blobs a request, other stores concurrently. The keys a
        // round failed to delete go into the next round, as the retry policy allows.
        let span = tracing::debug_span!("store.delete_prefix", prefix = %prefix, keys = n);
        for chunk in keys.chunks(DELETE_CHUNK) {
            self.retry
                .run("store.delete", || self.delete_round(chunk, prefix))
                .instrument(span.clone())
                .await?;
        }
        Ok(n)
    }

    /// One bulk delete of `keys`; objects already gone count as deleted, so a round that
    /// failed can be run again whole.
    async fn delete_round(&self, keys: &[Path], prefix: &Path) -> Result<()> {
        let owned: Vec<Path> = keys.to_vec(); // the stream must own its keys
        let stream = futures::stream::iter(owned.into_iter().map(Ok)).boxed();
        let results: Vec<object_store::Result<Path>> =
            self.store.delete_stream(stream).collect().await;
        let mut failed = 0usize;
        let mut last = None;
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    failed += 1;
                    last = Some(e);
                }
            }
        }
        match last {
            None => Ok(()),
            Some(e) => Err(self
                .error("store.delete", prefix, e)
                .with_context("not deleted", failed)),
        }
    }
}

/// The storage layout (DESIGN §3): where each kind of object lives under the root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: Path,
}

impl Layout {
    fn key(&self, parts: &[&str]) -> Path {
        let mut path = self.root.clone();
        for part in parts {
            path = path.clone().join(*part);
        }
        path
    }

    /// `<root>/bin/<sha256>`: an uploaded executable.
    pub fn binary(&self, sha256: &str) -> Path {
        self.key(&["bin", sha256])
    }

    /// `<root>/bcast/<sha256>`: a broadcast value.
    pub fn broadcast(&self, sha256: &str) -> Path {
        self.key(&["bcast", sha256])
    }

    /// `<root>/bcast/`: the prefix of every broadcast value.
    pub fn broadcasts(&self) -> Path {
        self.key(&["bcast"])
    }

    /// `<root>/data/<name>`: an input object a program uploaded.
    pub fn data(&self, name: &str) -> Path {
        let mut path = self.key(&["data"]);
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    /// `<root>/jobs/`: the prefix of every job.
    pub fn jobs(&self) -> Path {
        self.key(&["jobs"])
    }

    /// `<root>/jobs/<job>/`: the prefix of one job.
    pub fn job(&self, job: &str) -> Path {
        self.key(&["jobs", job])
    }

    /// `<root>/jobs/<job>/job.json`: the job manifest.
    pub fn manifest(&self, job: &str) -> Path {
        self.key(&["jobs", job, "job.json"])
    }

    /// `<root>/jobs/<job>/call`: a single call's record in one object (manifest, input and
    /// outcome, packed).
    pub fn call_record(&self, job: &str) -> Path {
        self.key(&["jobs", job, "call"])
    }

    /// `<root>/jobs/<job>/input`: the job's task inputs, packed.
    pub fn input(&self, job: &str) -> Path {
        self.key(&["jobs", job, "input"])
    }

    /// `<root>/jobs/<job>/tasks/<task>/log`: the stderr tail of a task's last attempt.
    pub fn task_log(&self, job: &str, task: u64) -> Path {
        self.key(&["jobs", job, "tasks", &task.to_string(), "log"])
    }

    /// `<root>/jobs/<job>/tasks/`: the prefix of every per-task object of a job.
    pub fn tasks(&self, job: &str) -> Path {
        self.key(&["jobs", job, "tasks"])
    }

    /// `<root>/jobs/<job>/results/<name>`: stored outcomes, packed (entries keyed by task
    /// index). The job driver writes many per object (`<writer>-<n>`); a worker that stores
    /// its own outcome writes one (`t<task>-a<attempt>`). Each writer picks names no other
    /// writer uses, so nothing stored is ever overwritten.
    pub fn result_segment(&self, job: &str, name: &str) -> Path {
        self.key(&["jobs", job, "results", name])
    }

    /// `<root>/jobs/<job>/results/t<task>-a<attempt>`: the outcome a worker stores itself.
    pub fn attempt_result(&self, job: &str, task: u64, attempt: u32) -> Path {
        self.result_segment(job, &format!("t{task}-a{attempt}"))
    }

    /// `<root>/jobs/<job>/results/`: the prefix of a job's stored outcomes.
    pub fn result_segments(&self, job: &str) -> Path {
        self.key(&["jobs", job, "results"])
    }

    /// `<root>/jobs/<job>/groups/`: the groups of tasks a queue-driven executor sent as one
    /// message each (`<name>`: the group's tasks and attempt; `<name>.note`: why a delivery
    /// of it failed).
    pub fn groups(&self, job: &str) -> Path {
        self.key(&["jobs", job, "groups"])
    }

    /// `<root>/jobs/<job>/groups/<name>`: one group (see [`Layout::groups`]).
    pub fn group(&self, job: &str, name: &str) -> Path {
        self.key(&["jobs", job, "groups", name])
    }

    /// `<root>/jobs/<job>/cancelled`: exists once the job was cancelled, for workers that
    /// check storage before they run a task.
    pub fn cancelled(&self, job: &str) -> Path {
        self.key(&["jobs", job, "cancelled"])
    }

    /// `<root>/jobs/<job>/lease/`: the leases of the clients that ran the job.
    pub fn leases(&self, job: &str) -> Path {
        self.key(&["jobs", job, "lease"])
    }

    /// `<root>/jobs/<job>/lease/<generation>`: one client's lease on running the job.
    pub fn lease(&self, job: &str, generation: u64) -> Path {
        self.key(&["jobs", job, "lease", &format!("{generation:06}")])
    }

    /// `<root>/jobs/<job>/events/`: the prefix of the job's attempt records (for stats and
    /// the timeline), appended while it runs.
    pub fn events(&self, job: &str) -> Path {
        self.key(&["jobs", job, "events"])
    }

    /// `<root>/jobs/<job>/events/<name>`: one batch of attempt records.
    pub fn event_segment(&self, job: &str, name: &str) -> Path {
        self.key(&["jobs", job, "events", name])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_store_is_known_by_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let relative = std::path::absolute(dir.path()).unwrap();
        let s = Storage::open(&format!("file://{}", relative.display())).unwrap();
        assert_eq!(s.identity(), format!("file://{}", relative.display()));
        assert_eq!(
            Storage::open("memory://id-test").unwrap().identity(),
            "memory://id-test"
        );
    }

    #[test]
    fn layout_matches_the_design() {
        let s = Storage::open("memory://layout-test")
            .unwrap()
            .with_root("ns");
        let l = s.layout();
        assert_eq!(l.manifest("j1").as_ref(), "ns/jobs/j1/job.json");
        assert_eq!(l.input("j1").as_ref(), "ns/jobs/j1/input");
        assert_eq!(
            l.attempt_result("j1", 3, 2).as_ref(),
            "ns/jobs/j1/results/t3-a2"
        );
        assert_eq!(l.task_log("j1", 3).as_ref(), "ns/jobs/j1/tasks/3/log");
        assert_eq!(
            l.event_segment("j1", "w-1").as_ref(),
            "ns/jobs/j1/events/w-1"
        );
        assert_eq!(l.broadcast("ab").as_ref(), "ns/bcast/ab");
        assert_eq!(
            l.result_segment("j1", "w-2").as_ref(),
            "ns/jobs/j1/results/w-2"
        );
    }

    #[test]
    fn unknown_scheme_names_the_url() {
        let err = Storage::open("ftp://x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("ftp://x"), "{err}");
        assert!(err.to_string().contains("`ftp`"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_values_stream_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
        let value: Vec<u64> = (0..(6 << 20)).collect(); // 48 MiB of u64: several parts
        let key = s.layout().broadcast("streamed");
        s.put_versioned(&key, &value).await.unwrap();
        let back: Vec<u64> = codec::decode_versioned(&s.get(&key).await.unwrap()).unwrap();
        assert_eq!(back, value);
        let (_, len) = codec::versioned_sha256(&value).unwrap();
        assert_eq!(s.get(&key).await.unwrap().len() as u64, len);
    }

    #[tokio::test]
    async fn file_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("store").display());
        let s = Storage::open(&url).unwrap();
        let key = s.layout().manifest("j");
        s.put(&key, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(s.get(&key).await.unwrap(), Bytes::from_static(b"{}"));
        assert!(!s.put_if_absent(&key, Bytes::new()).await.unwrap());
        assert_eq!(s.list(&s.layout().jobs()).await.unwrap().len(), 1);
        assert_eq!(s.delete_prefix(&s.layout().jobs()).await.unwrap(), 1);
        let missing = s.get(&key).await.unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
    }
}
