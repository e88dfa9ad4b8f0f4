//! Configuration with figment: defaults → `Redwood.toml` (profile from `REDWOOD_PROFILE`) →
//! `REDWOOD_*` environment → the builder. Errors name the key, the value and where it came from.

use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Profile};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

mod file_check;
use file_check::config_error;

/// The environment variable that selects the profile.
pub const PROFILE_ENV: &str = "REDWOOD_PROFILE";
/// The environment variable that names the config file (default: `Redwood.toml`, searched in
/// the working directory and its parents).
pub const CONFIG_FILE_ENV: &str = "REDWOOD_CONFIG";

/// The keys `REDWOOD_*` environment variables may set.
const ENV_KEYS: &[&str] = &["backend", "storage", "namespace", "workers", "progress"];

/// Redwood's configuration: which backend, which storage, and their settings. `Debug` hides
/// the values of `storage_options` (they hold keys and SAS tokens).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The compute backend: `local` (default).
    pub backend: String,
    /// The storage URL: `file://<folder>` (default `file://.redwood`) or `memory://`.
    pub storage: String,
    /// A prefix inside the storage, so several programs can share one store.
    #[serde(default)]
    pub namespace: String,
    /// Local backend: how many worker processes (default: the number of cores).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Show progress bars on long waits when stderr is a terminal (default: true).
    #[serde(default)]
    pub progress: Option<bool>,
    /// Options of the store: for `az://`, `connection_string`, or `account`, `key` / `sas`,
    /// `endpoint`, and object_store's `azure_*` keys.
    #[serde(default)]
    pub storage_options: std::collections::BTreeMap<String, String>,
    /// Cloud backends: the regions to run in (`azure-batch` uses the first). Each backend
    /// reads its own keys of a region.
    #[serde(default)]
    pub regions: Vec<RegionSection>,
}

/// One `[[regions]]` entry: its name, and the rest of its keys, which the region's backend
/// reads with [`LoadedConfig::section`] (checking them against its own settings). `Debug` shows
/// the keys, not their values (they may hold account keys).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionSection {
    /// A name for messages (`westeurope`).
    #[serde(default)]
    pub name: String,
    /// The region's other keys, as written.
    #[serde(flatten)]
    pub settings: std::collections::BTreeMap<String, figment::value::Value>,
}

impl std::fmt::Debug for RegionSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.settings.keys().map(String::as_str).collect();
        f.debug_struct("RegionSection")
            .field("name", &self.name)
            .field("keys", &keys)
            .finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: Vec<&str> = self.storage_options.keys().map(String::as_str).collect();
        f.debug_struct("Config")
            .field("backend", &self.backend)
            .field("storage", &self.storage)
            .field("namespace", &self.namespace)
            .field("workers", &self.workers)
            .field("progress", &self.progress)
            .field("regions", &self.regions)
            .field(
                "storage_options",
                &format_args!("{options:?} (values redacted)"),
            )
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: "local".into(),
            storage: "file://.redwood".into(),
            namespace: String::new(),
            workers: None,
            progress: None,
            storage_options: Default::default(),
            regions: Vec::new(),
        }
    }
}

/// What is suspicious in the config file `file` for `profile` (misspelt sections, keys written
/// as sections, unknown keys in other profiles), in words; loading logs these as warnings.
/// An error for what loading refuses (a key outside any profile, a file that cannot be read).
pub fn file_warnings(file: &std::path::Path, profile: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!(
                "cannot read the configuration file `{}`: {e}",
                file.display()
            ),
        )
    })?;
    file_check::check(file, &text, profile)
}

/// A loaded configuration and the record of where each value came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The values.
    pub config: Config,
    figment: Figment,
    /// How to name values that came from code rather than a file or the environment.
    code_origin: &'static str,
    /// Keys a builder set after loading.
    set_in_code: Vec<&'static str>,
}

impl LoadedConfig {
    /// Loads from the defaults, the config file, the selected profile and the environment.
    pub fn load() -> Result<LoadedConfig> {
        let named = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
        if let Some(path) = &named
            && !path.is_file()
        {
            let why = if path.is_dir() {
                "is a folder, not a file"
            } else {
                "does not exist"
            };
            return Err(Error::new(
                ErrorKind::Config,
                format!("the configuration file `{}` {why}", path.display()),
            )
            .with_context("from", CONFIG_FILE_ENV));
        }
        let file = named.unwrap_or_else(|| PathBuf::from("Redwood.toml"));
        let profile = std::env::var(PROFILE_ENV).unwrap_or_else(|_| "default".into());
        Self::load_from(Some(file), &profile, true)
    }

    /// Loads from an optional file and profile; `env` says whether `REDWOOD_*` variables apply.
    pub fn load_from(file: Option<PathBuf>, profile: &str, env: bool) -> Result<LoadedConfig> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let mut file_shown = String::from("(no file)");
        if let Some(file) = &file {
            file_shown = file.display().to_string();
            if let Ok(text) = std::fs::read_to_string(file) {
                for warning in file_check::check(file, &text, profile)? {
                    tracing::warn!("{warning}");
                }
            }
            figment = figment.merge(Toml::file(file).nested());
        }
        if env {
            figment = figment.merge(Env::prefixed("REDWOOD_").only(ENV_KEYS).global());
        }
        let profile = Profile::new(profile);
        if profile != Profile::Default && !figment.profiles().any(|p| p == profile) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("profile `{profile}` is not defined in {file_shown}"),
            )
            .with_context("from", PROFILE_ENV));
        }
        let figment = figment.select(profile);
        let config: Config = figment.extract().map_err(config_error)?;
        Ok(LoadedConfig {
            config,
            figment,
            code_origin: "the built-in defaults",
            set_in_code: Vec::new(),
        })
    }

    /// A loaded config from plain values (for builders and tests).
    pub fn from_config(config: Config) -> LoadedConfig {
        let figment = Figment::from(Serialized::defaults(&config));
        LoadedConfig {
            config,
            figment,
            code_origin: "the configuration given in code",
            set_in_code: Vec::new(),
        }
    }

    /// Where the value of `key` came from, e.g. "`Redwood.toml` TOML file" or "`REDWOOD_`
    /// environment variable(s)".
    pub fn origin(&self, key: &str) -> String {
        if self.set_in_code.contains(&key) {
            return "the session builder".into();
        }
        let profile = self.figment.profile().to_string();
        let Some(meta) = self.figment.find_metadata(key) else {
            return self.code_origin.into();
        };
        match &meta.source {
            Some(figment::Source::Code(_)) => self.code_origin.into(),
            Some(source) => format!("{} {source} (profile `{profile}`)", meta.name),
            None => format!("{} (profile `{profile}`)", meta.name),
        }
    }

    /// The value at `key` (`regions`, say) as a backend's own settings type, with errors that
    /// name the key and where its value came from, like every other config error.
    pub fn section<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        self.figment.extract_inner(key).map_err(|mut e| {
            // figment appends the section's key to the path; name it first.
            if e.path.last().is_some_and(|last| last == key) {
                e.path.pop();
                e.path.insert(0, key.to_string());
            }
            config_error(e)
        })
    }

    /// Records that code set `key` after loading (for [`LoadedConfig::origin`]).
    pub fn mark_set_in_code(&mut self, key: &'static str) {
        self.set_in_code.push(key);
    }

    /// An error about `key`'s value, naming where it came from.
    pub fn error(&self, key: &'static str, value: &str, why: impl std::fmt::Display) -> Error {
        Error::new(ErrorKind::Config, why.to_string())
            .with_context("key", key)
            .with_context("value", format!("`{value}`"))
            .with_context("from", self.origin(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("Redwood.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_when_nothing_is_said() {
        let c = LoadedConfig::load_from(None, "default", false).unwrap();
        assert_eq!(c.config, Config::default());
        assert_eq!(c.origin("backend"), "the built-in defaults");
    }

    #[test]
    fn profile_overrides_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "[default]\nstorage = \"memory://\"\nworkers = 3\n[fast]\nworkers = 8\n",
        );
        let c = LoadedConfig::load_from(Some(file.clone()), "fast", false).unwrap();
        assert_eq!(c.config.workers, Some(8));
        assert_eq!(c.config.storage, "memory://");
        assert!(
            c.origin("workers").contains("Redwood.toml"),
            "{}",
            c.origin("workers")
        );
        assert!(c.origin("workers").contains("`fast`"));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "[default]\nworkerz = 3\n");
        let err = LoadedConfig::load_from(Some(file), "default", false).unwrap_err();
        let s = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(s.contains("workerz") && s.contains("Redwood.toml"), "{s}");
    }

    #[test]
    fn wrong_type_names_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "[default]\nworkers = \"many\"\n");
        let s = LoadedConfig::load_from(Some(file), "default", false)
            .unwrap_err()
            .to_string();
        assert!(s.contains("workers") && s.contains("many"), "{s}");
    }

    #[test]
    fn missing_profile_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "[default]\nworkers = 1\n");
        let s = LoadedConfig::load_from(Some(file), "azure", false)
            .unwrap_err()
            .to_string();
        assert!(s.contains("profile `azure`"), "{s}");
    }
}
