//! [`LocalBackend`]: its builder and its [`Executor`] implementation.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redwood_core::config::LoadedConfig;
use redwood_core::raw::backend::{Capabilities, CleanupReply, CleanupRequest};
use redwood_core::raw::executor::{Attempt, Executor, ExecutorJob, Health, OpenRequest, Opened};
use redwood_core::raw::factory::BackendFactory;
use redwood_core::{Error, ErrorKind, Result};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::pool::{Command, PoolHandle, start_pool};

/// The backend's name in configuration.
pub const NAME: &str = "local";

/// Runs tasks on a pool of warm worker processes on this machine: the program's own executable
/// started in worker mode, fed over pipes. Started on the first submit, stopped on `cleanup` or
/// when dropped.
#[derive(Debug)]
pub struct LocalBackend {
    workers: usize,
    exe: PathBuf,
    pool: Mutex<Option<PoolHandle>>,
}

impl LocalBackend {
    /// A builder with the defaults: one worker per core, this executable.
    pub fn builder() -> LocalBackendBuilder {
        LocalBackendBuilder::default()
    }

    /// How many worker processes the pool keeps.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Starts the worker processes now (otherwise they start with the first job), so a first
    /// task does not wait for them.
    pub fn warm(&self) -> Result<()> {
        self.pool().map(|_| ())
    }

    fn pool(&self) -> Result<PoolHandle> {
        let mut guard = self
            .pool
            .lock()
            .map_err(|_| Error::new(ErrorKind::Unexpected, "local pool lock poisoned"))?;
        if let Some(handle) = guard.as_ref().filter(|h| !h.commands.is_closed()) {
            return Ok(handle.clone());
        }
        let handle = start_pool(self.exe.clone(), self.workers);
        *guard = Some(handle.clone());
        Ok(handle)
    }

    fn send(&self, command: Command) -> Result<()> {
        self.pool()?.commands.send(command).map_err(|_| {
            Error::new(
                ErrorKind::Backend,
                "the local worker pool stopped unexpectedly",
            )
        })
    }
}

/// Builds a [`LocalBackend`].
#[derive(Debug, Default, Clone)]
pub struct LocalBackendBuilder {
    workers: Option<usize>,
    exe: Option<PathBuf>,
}

impl LocalBackendBuilder {
    /// Reads `REDWOOD_WORKERS` from the environment.
    pub fn from_env() -> Result<Self> {
        let mut b = Self::default();
        if let Ok(v) = std::env::var("REDWOOD_WORKERS") {
            let n = v.parse::<usize>().map_err(|_| {
                Error::new(ErrorKind::Config, "REDWOOD_WORKERS must be a whole number")
                    .with_context("value", format!("`{v}`"))
            })?;
            b.workers = Some(n);
        }
        Ok(b)
    }

    /// Keeps `n` worker processes (default: the number of cores).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Starts workers from this executable instead of the running one. It must be built from
    /// the same code (the worker checks the binary hash).
    pub fn executable(mut self, path: impl Into<PathBuf>) -> Self {
        self.exe = Some(path.into());
        self
    }

    /// Builds the backend; workers start on the first submit.
    pub fn build(self) -> Result<LocalBackend> {
        let workers = match self.workers {
            Some(0) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "the local backend needs at least 1 worker",
                ));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        };
        let exe = match self.exe {
            Some(p) => p,
            None => std::env::current_exe().map_err(|e| {
                Error::new(ErrorKind::Backend, "cannot locate the running executable")
                    .with_source(e)
            })?,
        };
        Ok(LocalBackend {
            workers,
            exe,
            pool: Mutex::new(None),
        })
    }
}

/// One job's attempts on the pool.
struct LocalJob {
    job: Arc<str>,
    pool: PoolHandle,
}

impl LocalJob {
    fn send(&self, command: Command) -> Result<()> {
        self.pool.commands.send(command).map_err(|_| {
            Error::new(
                ErrorKind::Backend,
                "the local worker pool stopped (cleaned up) while the job ran",
            )
        })
    }
}

#[async_trait]
impl ExecutorJob for LocalJob {
    async fn launch(&self, attempts: Vec<Attempt>) -> Result<()> {
        self.send(Command::Launch {
            job: self.job.clone(),
            attempts,
        })
    }

    async fn stop(&self) -> Result<()> {
        self.send(Command::Stop {
            job: self.job.clone(),
        })
    }

    async fn close(&self) {
        let _ = self.send(Command::Close {
            job: self.job.clone(),
        });
    }
}

#[async_trait]
impl Executor for LocalBackend {
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
        c.survives_client = false;
        c.max_payload = Some(crate::protocol::MAX_FRAME as u64 - 4096);
        // Enough queued per worker to keep its pipe full; the driver holds the rest.
        c.max_launched = Some((self.workers as u64).saturating_mul(1024).max(4096));
        c.slots = Some(self.workers as u64);
        c
    }

    async fn open(&self, request: OpenRequest) -> Result<Opened> {
        let span = tracing::debug_span!("local.open", job = %request.job.id);
        async {
            let (ends, receiver) = futures::channel::mpsc::unbounded();
            let job: Arc<str> = Arc::from(request.job.id.as_str());
            self.send(Command::Open {
                spec: request.job,
                storage: request.storage,
                ends,
            })?;
            let handle = LocalJob {
                job,
                pool: self.pool()?,
            };
            Ok(Opened::new(Box::new(handle), Box::pin(receiver)))
        }
        .instrument(span)
        .await
    }

    async fn health(&self) -> Health {
        // Workers are this machine's processes: the pool is healthy while its program exists.
        match std::fs::metadata(&self.exe) {
            Ok(m) if m.is_file() => Health::Healthy,
            Ok(_) => Health::Unhealthy(format!("{} is not a file", self.exe.display())),
            Err(e) => Health::Unhealthy(format!(
                "the worker program {} cannot be read: {e}",
                self.exe.display()
            )),
        }
    }

    async fn release(&self, request: CleanupRequest) -> Result<CleanupReply> {
        // The workers are this session's alone; nothing outlives it to look for.
        if request.dry_run {
            return Ok(CleanupReply::default());
        }
        let handle = self
            .pool
            .lock()
            .map_err(|_| Error::new(ErrorKind::Unexpected, "local pool lock poisoned"))?
            .take();
        let mut out = CleanupReply::default();
        if let Some(handle) = handle {
            let (reply, rx) = oneshot::channel();
            if handle.commands.send(Command::Shutdown { reply }).is_ok() {
                let n = rx.await.unwrap_or(0);
                out.released.push(format!("{n} local worker processes"));
            }
        }
        Ok(out)
    }
}

/// A `[[regions]]` entry's own keys for the local backend.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalRegion {
    #[allow(dead_code)]
    name: String,
    /// Worker processes of this region (else the profile's `workers`).
    workers: Option<usize>,
}

fn build_from_config(config: &LoadedConfig) -> Result<Arc<dyn Executor>> {
    let mut builder = LocalBackend::builder();
    let region: Option<LocalRegion> = match config.region() {
        Some(_) => Some(config.region_settings()?),
        None => None,
    };
    if let Some(n) = region.and_then(|r| r.workers).or(config.config.workers) {
        if n == 0 {
            return Err(config.error("workers", "0", "workers must be at least 1"));
        }
        builder = builder.workers(n);
    }
    Ok(Arc::new(builder.build()?))
}

inventory::submit! {
    BackendFactory { name: NAME, build: build_from_config }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_says_when_the_program_is_gone() {
        let ok = LocalBackend::builder().workers(1).build().unwrap();
        assert_eq!(ok.health().await, Health::Healthy);
        let gone = LocalBackend::builder()
            .workers(1)
            .executable("/nonexistent/redwood-worker")
            .build()
            .unwrap();
        match gone.health().await {
            Health::Unhealthy(why) => assert!(why.contains("/nonexistent/redwood-worker"), "{why}"),
            Health::Healthy => panic!("a missing program is healthy"),
        }
    }
}
