//! Backends by name: each backend crate registers a [`BackendFactory`] at link time, and
//! `Session::from_config` picks one by the `backend` key.

use std::sync::Arc;

use crate::config::LoadedConfig;
use crate::error::Result;
use crate::raw::executor::Executor;

/// Builds a backend from the configuration.
pub type BuildFn = fn(&LoadedConfig) -> Result<Arc<dyn Executor>>;

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

/// Every backend Redwood has, and the feature of the `redwood` crate that links it in.
const BACKEND_FEATURES: &[(&str, &str)] = &[("local", "local"), ("azure-batch", "azure")];

/// Builds the backend the configuration names; an unknown name lists the known ones, and a
/// backend this build lacks names the feature that adds it.
pub fn build_backend(config: &LoadedConfig) -> Result<Arc<dyn Executor>> {
    let name = config.config.backend.as_str();
    match inventory::iter::<BackendFactory>
        .into_iter()
        .find(|f| f.name == name)
    {
        Some(factory) => (factory.build)(config),
        None if let Some((_, feature)) = BACKEND_FEATURES.iter().find(|(n, _)| *n == name) => {
            Err(config.error(
                "backend",
                name,
                format!(
                    "backend `{name}` is not in this build: enable the `{feature}` feature of \
                     the `redwood` crate (`cargo run --features {feature}`, or \
                     `redwood = {{ version = \"…\", features = [\"{feature}\"] }}` in Cargo.toml)"
                ),
            ))
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LoadedConfig};

    fn error_for(backend: &str) -> String {
        let config = LoadedConfig::from_config(Config {
            backend: backend.into(),
            ..Config::default()
        });
        match build_backend(&config) {
            Ok(_) => panic!("backend `{backend}` was built"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_backend_missing_from_the_build_names_its_feature() {
        // redwood-core alone links no backend.
        let text = error_for("azure-batch");
        assert!(text.contains("enable the `azure` feature"), "{text}");
        let text = error_for("lokal");
        assert!(text.contains("unknown backend `lokal`"), "{text}");
    }
}
