//! [`Region`]: one place a session runs tasks — a compute backend with its own store — and
//! how a profile's `[[regions]]` become them.

use std::fmt;
use std::sync::Arc;

use crate::config::LoadedConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::executor::Executor;
use crate::raw::factory::build_backend;
use crate::storage::Storage;

/// The most regions one session spans.
pub const MAX_REGIONS: usize = 255;

/// One region of a session: where its tasks run (an executor) and the store its workers read
/// and write. A session with several regions spreads each job's tasks over them, copies the
/// data a task reads into its region's store, and moves tasks away from a region that fails.
#[derive(Clone)]
pub struct Region {
    name: String,
    executor: Arc<dyn Executor>,
    storage: Storage,
    weight: u32,
}

impl Region {
    /// A region named `name` (what [`crate::TaskOptions::region`] pins to) running tasks on
    /// `executor`, whose workers use `storage`; weight 1.
    pub fn new(name: impl Into<String>, executor: Arc<dyn Executor>, storage: Storage) -> Self {
        Region {
            name: name.into(),
            executor,
            storage,
            weight: 1,
        }
    }

    /// Gives the region `weight` times the share of work of a region of weight 1 with the same
    /// capacity (0 is refused when the session is built).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its compute backend.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    /// The store its workers use.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Its weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("executor", &self.executor.name())
            .field("storage", &self.storage.url())
            .field("weight", &self.weight)
            .finish()
    }
}

/// The environment variable that holds a region's own Azure connection string.
fn connection_string_variable(region: &str) -> Option<String> {
    crate::config::env_suffix(region).map(|s| format!("AZURE_STORAGE_CONNECTION_STRING_{s}"))
}

/// The regions of a configuration with several `[[regions]]`: each one's backend built from
/// the profile narrowed to it, its store opened (under the profile's namespace). A region's
/// own `az://` store without `storage_options` takes `AZURE_STORAGE_CONNECTION_STRING_<NAME>`
/// when that is set.
pub(crate) fn regions_of(loaded: &LoadedConfig, home: &Storage) -> Result<Vec<Region>> {
    let count = loaded.config.regions.len();
    if count > MAX_REGIONS {
        return Err(loaded.error(
            "regions",
            &format!("{count} regions"),
            format!("a session spans at most {MAX_REGIONS} regions"),
        ));
    }
    let mut regions: Vec<Region> = Vec::with_capacity(count);
    for index in 0..count {
        let Some(narrowed) = loaded.for_region(index) else {
            continue;
        };
        let section = &loaded.config.regions[index];
        if regions.iter().any(|r| r.name == section.name) {
            return Err(loaded.error(
                "regions",
                &section.name,
                format!("two regions are named `{}`", section.name),
            ));
        }
        let weight = narrowed.region_weight()?;
        let storage = match &section.storage {
            None => home.clone(),
            Some(url) => {
                let mut options = narrowed.config.storage_options.clone();
                if options.is_empty()
                    && (url.starts_with("az://") || url.starts_with("azure://"))
                    && let Some(value) = connection_string_variable(&section.name)
                        .and_then(|v| std::env::var(v).ok())
                {
                    options.insert("connection_string".into(), value);
                }
                let storage = Storage::open_with(url, &options).map_err(|e| {
                    narrowed.error(
                        "regions",
                        url,
                        format!("region `{}`: {}", section.name, e.message()),
                    )
                })?;
                if loaded.config.namespace.is_empty() {
                    storage
                } else {
                    storage.with_root(&loaded.config.namespace)
                }
            }
        };
        let executor =
            build_backend(&narrowed).map_err(|e| e.with_context("region", &section.name))?;
        regions.push(Region::new(section.name.clone(), executor, storage).with_weight(weight));
    }
    Ok(regions)
}

/// Checks regions given in code: names unique and not empty, weights above 0, not too many.
pub(crate) fn check_regions(regions: &[Region]) -> Result<()> {
    if regions.len() > MAX_REGIONS {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{} regions: a session spans at most {MAX_REGIONS}",
                regions.len()
            ),
        ));
    }
    for (i, r) in regions.iter().enumerate() {
        if r.name.is_empty() {
            return Err(Error::new(ErrorKind::Config, "a region needs a name"));
        }
        if r.weight == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                format!("region `{}`: weight must be at least 1", r.name),
            ));
        }
        if regions[..i].iter().any(|o| o.name == r.name) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("two regions are named `{}`", r.name),
            ));
        }
    }
    Ok(())
}
