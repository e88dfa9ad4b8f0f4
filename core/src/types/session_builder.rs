//! [`SessionBuilder`]: a [`Session`] from the configuration, then what code sets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, LoadedConfig, Placement};
use crate::error::{Error, ErrorKind, Result};
use crate::raw::executor::Executor;
use crate::raw::factory::build_backend;
use crate::storage::Storage;
use crate::types::region::{Region, check_regions, regions_of};
use crate::types::session::Session;

/// The configuration narrowed to its one `[[regions]]` entry (whose `backend`, `storage` and
/// `storage_options` replace the profile's), after checking the keys about regions; a profile
/// with several regions is kept whole (each region is built from it).
fn narrow_to_the_region(loaded: LoadedConfig) -> Result<LoadedConfig> {
    loaded.failover_after()?;
    match loaded.config.regions.len() {
        1 => {
            let narrowed = loaded.for_region(0).unwrap_or(loaded);
            narrowed.region_weight()?;
            Ok(narrowed)
        }
        _ => Ok(loaded),
    }
}

/// Builds a [`Session`]: the configuration first, then what code sets.
#[derive(Default)]
pub struct SessionBuilder {
    config: Option<Config>,
    backend: Option<Arc<dyn Executor>>,
    storage: Option<Storage>,
    backend_name: Option<String>,
    storage_url: Option<String>,
    namespace: Option<String>,
    workers: Option<usize>,
    progress: Option<bool>,
    storage_options: Vec<(String, String)>,
    regions: Vec<Region>,
    placement: Option<Placement>,
    failover_after: Option<Duration>,
}

impl fmt::Debug for SessionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("backend_name", &self.backend_name)
            .field("storage_url", &self.storage_url)
            .finish_non_exhaustive()
    }
}

impl SessionBuilder {
    /// Uses this configuration instead of reading `Redwood.toml` and the environment.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Uses this backend instance (overrides the `backend` key).
    pub fn backend(mut self, backend: Arc<dyn Executor>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Uses the backend with this name (`local`, ...).
    pub fn backend_name(mut self, name: impl Into<String>) -> Self {
        self.backend_name = Some(name.into());
        self
    }

    /// Uses this storage instance (overrides the `storage` key).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Uses the storage at this URL (`file://...`, `memory://`).
    pub fn storage_url(mut self, url: impl Into<String>) -> Self {
        self.storage_url = Some(url.into());
        self
    }

    /// Sets a storage option (e.g. `connection_string` for `az://`); see the README.
    pub fn storage_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.storage_options.push((key.into(), value.into()));
        self
    }

    /// Writes under this prefix inside the storage.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Local backend: this many worker processes.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Adds a region (replacing the profile's `[[regions]]` and its backend): with two or more,
    /// each job's tasks are spread over them (see the README's "Several regions").
    pub fn region(mut self, region: Region) -> Self {
        self.regions.push(region);
        self
    }

    /// How tasks are spread over several regions (overrides `placement`).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// How long a region may fail before its tasks move to the others (overrides
    /// `failover_after`; at least 1 ms).
    pub fn failover_after(mut self, after: Duration) -> Self {
        self.failover_after = Some(after);
        self
    }

    /// Shows or hides progress bars.
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Builds the session.
    pub fn build(self) -> Result<Session> {
        if std::env::var_os(crate::raw::worker::WORKER_ENV).is_some() {
            // Without this, a program whose main is not a worker entry would start workers
            // that start workers, without end.
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "refusing to start a session inside a worker process: {}",
                    crate::raw::worker::MISSING_ENTRY_HINT
                ),
            )
            .with_operation("Session::build"));
        }
        let mut loaded = match self.config {
            Some(c) => LoadedConfig::from_config(c),
            None => LoadedConfig::load()?,
        };
        loaded = narrow_to_the_region(loaded)?;
        if let Some(v) = self.backend_name {
            loaded.config.backend = v;
            loaded.mark_set_in_code("backend");
        }
        if let Some(v) = self.storage_url {
            loaded.config.storage = v;
            loaded.mark_set_in_code("storage");
        }
        if let Some(v) = self.namespace {
            loaded.config.namespace = v;
            loaded.mark_set_in_code("namespace");
        }
        if self.workers.is_some() {
            loaded.config.workers = self.workers;
            loaded.mark_set_in_code("workers");
        }
        if self.progress.is_some() {
            loaded.config.progress = self.progress;
            loaded.mark_set_in_code("progress");
        }
        if !self.storage_options.is_empty() {
            loaded.config.storage_options.extend(self.storage_options);
            loaded.mark_set_in_code("storage_options");
        }
        if loaded.config.workers == Some(0) {
            return Err(loaded.error("workers", "0", "workers must be at least 1"));
        }
        let storage = match self.storage {
            Some(s) => s,
            None => Storage::open_with(&loaded.config.storage, &loaded.config.storage_options)
                .map_err(|e| {
                    loaded.error("storage", &loaded.config.storage, e.message().to_string())
                })?,
        };
        let storage = if loaded.config.namespace.is_empty() {
            storage
        } else {
            storage.with_root(&loaded.config.namespace)
        };
        let regions = if !self.regions.is_empty() {
            if self.backend.is_some() {
                return Err(Error::new(
                    ErrorKind::Config,
                    "SessionBuilder: set either `backend` or `region`s, not both",
                ));
            }
            self.regions
        } else if let Some(backend) = self.backend {
            vec![Region::new(
                region_name(&loaded, backend.name()),
                backend,
                storage.clone(),
            )]
        } else if loaded.config.regions.len() >= 2 {
            regions_of(&loaded, &storage)?
        } else {
            let backend = build_backend(&loaded)?;
            vec![Region::new(
                region_name(&loaded, backend.name()),
                backend,
                storage.clone(),
            )]
        };
        check_regions(&regions)?;
        let failover_after = match self.failover_after {
            Some(d) if d.is_zero() => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "SessionBuilder::failover_after: must be above 0",
                ));
            }
            Some(d) => d,
            None => loaded.failover_after()?,
        };
        let progress = loaded.config.progress.unwrap_or(true);
        tracing::debug!(
            backend = regions[0].executor().name(),
            regions = regions.len(),
            storage = storage.url(),
            "session ready"
        );
        let placement = self.placement.unwrap_or_else(|| loaded.placement());
        Ok(Session::new(
            regions,
            placement,
            failover_after,
            storage,
            progress,
        ))
    }
}

/// The name of a session's only region: its `[[regions]]` name, else the backend's.
fn region_name(loaded: &LoadedConfig, backend: &str) -> String {
    loaded
        .region()
        .map(|r| r.name.clone())
        .unwrap_or_else(|| backend.to_string())
}
