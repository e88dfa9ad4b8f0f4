//! Serving the objects running tasks ask for (broadcast values, result references, blobs):
//! one download per object however many workers ask for it at once. Small objects go down the
//! worker's pipe; large ones are written once to a shared-memory file that each worker reads,
//! instead of being copied through every pipe.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use object_store::ObjectStoreExt;
use redwood_core::Storage;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

/// Objects at least this large are handed over through a shared-memory file.
const SHARED_ABOVE: usize = 1 << 20;
/// File names start with this, then the client's pid.
const FILE_PREFIX: &str = "redwood-fetch-";

type Key = (String, Option<(u64, u64)>);
type Download = Shared<BoxFuture<'static, Result<Payload, String>>>;
/// Shared files a worker was told to read and has not released, by (worker, fetch id).
type Held = HashMap<(u32, u64), Arc<SharedFile>>;

/// A fetched object, as a worker will get it.
#[derive(Clone, Debug)]
pub(crate) enum Payload {
    /// Sent down the pipe after the answer's header.
    Inline(Bytes),
    /// Written to a file the worker reads; deleted when the last holder lets go.
    File(Arc<SharedFile>),
}

/// A file in shared memory holding one fetched object.
#[derive(Debug)]
pub(crate) struct SharedFile {
    pub(crate) path: PathBuf,
    pub(crate) len: u64,
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Downloads objects for workers; concurrent requests for the same object share one download.
#[derive(Clone)]
pub(crate) struct Fetcher {
    in_flight: Arc<Mutex<HashMap<Key, Download>>>,
    held: Arc<Mutex<Held>>,
    dir: Arc<PathBuf>,
    next_file: Arc<AtomicU64>,
}

impl Fetcher {
    /// A fetcher writing shared files to `/dev/shm` (or the temp folder), after removing the
    /// files of clients that died without cleaning up.
    pub(crate) fn new() -> Self {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        sweep_stale_files(&dir);
        Fetcher {
            in_flight: Default::default(),
            held: Default::default(),
            dir: Arc::new(dir),
            next_file: Default::default(),
        }
    }

    /// The object (or byte range) at `key`, read once for everyone asking at the same time.
    pub(crate) async fn fetch(
        &self,
        storage: Storage,
        key: String,
        range: Option<(u64, u64)>,
    ) -> Result<Payload, String> {
        let id = (key.clone(), range);
        let download = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let fetcher = self.clone();
            map.entry(id.clone())
                .or_insert_with(|| fetcher.download(storage, key, range).boxed().shared())
                .clone()
        };
        let result = download.await;
        // Done: later requests read it again rather than keep large objects around.
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        result
    }

    async fn download(
        self,
        storage: Storage,
        key: String,
        range: Option<(u64, u64)>,
    ) -> Result<Payload, String> {
        let path = object_store::path::Path::from(key.as_str());
        let span = tracing::debug_span!("worker.fetch", key, ?range);
        let failed = |e: &dyn std::fmt::Display| format!("cannot read {key}: {e}");
        async {
            if let Some((start, end)) = range {
                let bytes = storage.get_range(&path, start..end).await;
                return self.hand_over(bytes.map_err(|e| failed(&e))?, &key).await;
            }
            // Streamed into the shared file as it arrives (memory is touched once); a transient
            // failure starts the object again, by the store's retry policy.
            let read = || self.stream_once(&storage, &path);
            let payload = storage
                .retry_policy()
                .run("worker.fetch", read)
                .await
                .map_err(|e| failed(&e))?;
            Ok(payload)
        }
        .instrument(span)
        .await
    }

    /// One attempt at reading a whole object: inline when small, else into a shared file.
    async fn stream_once(
        &self,
        storage: &Storage,
        path: &object_store::path::Path,
    ) -> redwood_core::Result<Payload> {
        let read_error = |e| storage.error("store.get", path, e);
        let got = storage.store().get(path).await.map_err(read_error)?;
        if (got.meta.size as usize) < SHARED_ABOVE {
            return Ok(Payload::Inline(got.bytes().await.map_err(read_error)?));
        }
        let file = self.new_file(got.meta.size);
        let local = |e: std::io::Error| {
            redwood_core::Error::new(
                redwood_core::ErrorKind::Backend,
                shared_error(path.as_ref(), &file, &e),
            )
        };
        let mut out = tokio::fs::File::from_std(create_private(&file.path).map_err(local)?);
        let mut chunks = got.into_stream();
        let mut written = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(read_error)?;
            out.write_all(&chunk).await.map_err(local)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(local)?;
        if written != file.len {
            return Err(redwood_core::Error::new(
                redwood_core::ErrorKind::Storage,
                format!("got {written} bytes of {}", file.len),
            )
            .set_retryable(true));
        }
        Ok(Payload::File(Arc::new(file)))
    }

    /// Hands over bytes already in memory: inline if small, else through a shared file.
    async fn hand_over(&self, bytes: Bytes, key: &str) -> Result<Payload, String> {
        if bytes.len() < SHARED_ABOVE {
            return Ok(Payload::Inline(bytes));
        }
        let file = self.new_file(bytes.len() as u64);
        let target = file.path.clone();
        let write = move || {
            use std::io::Write;
            create_private(&target)?.write_all(&bytes)
        };
        match tokio::task::spawn_blocking(write).await {
            Ok(Ok(())) => Ok(Payload::File(Arc::new(file))),
            Ok(Err(e)) => Err(shared_error(key, &file, &e)),
            Err(e) => Err(shared_error(key, &file, &e)),
        }
    }

    /// A new shared file's name: this process's pid (for the sweep), a counter and a random
    /// part, so no other user can guess it beforehand.
    fn new_file(&self, len: u64) -> SharedFile {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let random = fastrand::u64(..);
        SharedFile {
            path: self.dir.join(format!(
                "{FILE_PREFIX}{}-{n}-{random:016x}",
                std::process::id()
            )),
            len,
        }
    }

    /// Keeps a shared file until worker `worker` releases fetch `id`.
    pub(crate) fn hold(&self, worker: u32, id: u64, file: Arc<SharedFile>) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((worker, id), file);
    }

    /// Worker `worker` read fetch `id`.
    pub(crate) fn release(&self, worker: u32, id: u64) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(worker, id));
    }

    /// Worker `worker` is gone: whatever it held is released.
    pub(crate) fn release_worker(&self, worker: u32) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(w, _), _| *w != worker);
    }
}

/// Creates a shared file that must not exist yet, readable and writable by this user only.
fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn shared_error(key: &str, file: &SharedFile, e: &dyn std::fmt::Display) -> String {
    format!(
        "cannot write a shared copy of {key} to {}: {e}",
        file.path.display()
    )
}

/// Removes the shared files of client processes that no longer run.
fn sweep_stale_files(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(FILE_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(file = %entry.path().display(), "removing a stale shared fetch file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_objects_go_through_one_shared_file_that_is_removed() {
        // Reads take 50 ms, so the two requests below overlap for certain (with an instant
        // store the first could finish before the second asks, and rightly read again).
        let slow = object_store::throttle::ThrottledStore::new(
            object_store::memory::InMemory::new(),
            object_store::throttle::ThrottleConfig {
                wait_get_per_call: std::time::Duration::from_millis(50),
                ..Default::default()
            },
        );
        let storage = Storage::from_store(Arc::new(slow), "memory://fetch-test", "", false);
        let key = storage.layout().broadcast("big");
        storage
            .put(&key, vec![7u8; SHARED_ABOVE + 1])
            .await
            .unwrap();
        let small = storage.layout().broadcast("small");
        storage.put(&small, vec![1u8; 10]).await.unwrap();

        let f = Fetcher::new();
        let (a, b) = tokio::join!(
            f.fetch(storage.clone(), key.to_string(), None),
            f.fetch(storage.clone(), key.to_string(), None)
        );
        let (Payload::File(a), Payload::File(b)) = (a.unwrap(), b.unwrap()) else {
            panic!("a large object must go through a file");
        };
        assert!(Arc::ptr_eq(&a, &b), "two downloads for one object");
        assert_eq!(std::fs::read(&a.path).unwrap().len(), SHARED_ABOVE + 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the shared file is readable by others");
        let path = a.path.clone();
        f.hold(1, 10, a);
        f.hold(2, 10, b);
        f.release(1, 10);
        assert!(path.exists(), "deleted while worker 2 still holds it");
        f.release_worker(2);
        assert!(!path.exists(), "not deleted after the last release");

        match f.fetch(storage, small.to_string(), None).await.unwrap() {
            Payload::Inline(bytes) => assert_eq!(bytes.len(), 10),
            Payload::File(_) => panic!("a small object must go inline"),
        }
    }
}
