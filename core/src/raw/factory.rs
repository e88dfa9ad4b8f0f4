//! Backends by name: each backend crate registers a [`BackendFactory`] at link time, and
//! `Session::from_config` picks one by the `backend` key.

use std::sync::Arc;

use crate::config::LoadedConfig;
use crate::error::Result;
use crate::raw::backend::ComputeBackend;

/// Builds a backend from the configuration.
pub type BuildFn = fn(&LoadedConfig) -> Result<Arc<dyn ComputeBackend>>;

/// A backend that can be chosen by name in the configuration.
#[derive(Debug)]
pub struct BackendFactory {
    /// The name used in `backend = "..."`.
    pub name: &'static str,
    /// Builds the backend.
    pub build: BuildFn,
}

inventory::collect!(BackendFactory);

/// The names of the backends linked into this binary, sorted.
pub fn backend_names() -> Vec<&'static str> {
    let mut names: Vec<_> = inventory::iter::<BackendFactory>
        .into_iter()
        .map(|f| f.name)
        .collect();
    names.sort_unstable();
    names
}

/// Builds the backend the configuration names; an unknown name lists the known ones.
pub fn build_backend(config: &LoadedConfig) -> Result<Arc<dyn ComputeBackend>> {
    let name = config.config.backend.as_str();
    match inventory::iter::<BackendFactory>
        .into_iter()
        .find(|f| f.name == name)
    {
        Some(factory) => (factory.build)(config),
        None => {
            let known = backend_names();
            let known = if known.is_empty() {
                "none: enable a backend feature of the `redwood` crate".to_string()
            } else {
                known.join(", ")
            };
            Err(config.error(
                "backend",
                name,
                format!("unknown backend `{name}` (this build knows: {known})"),
            ))
        }
    }
}
