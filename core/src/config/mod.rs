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
const ENV_KEYS: &[&str] = &[
    "backend",
    "storage",
    "namespace",
    "workers",
    "progress",
    "placement",
    "failover_after",
];

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
    /// The regions to run in (`azure-batch` uses the first). Each backend reads its own keys
    /// of a region.
    #[serde(default)]
    pub regions: Vec<RegionSection>,
    /// How tasks are spread over several regions (default `capacity`).
    #[serde(default)]
    pub placement: Option<Placement>,
    /// How long a region may fail before it is marked down and its tasks move (humantime,
    /// default `30s`).
    #[serde(default)]
    pub failover_after: Option<String>,
}

/// How the job driver spreads tasks over several regions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Where there is free room (slots not busy, scaled by each region's weight).
    #[default]
    Capacity,
    /// Weighted turns.
    RoundRobin,
}

/// The suffix of a region's own environment variables: its name in upper case, every character
/// but ASCII letters and digits as `_` (`west-europe` → `WEST_EUROPE`); `None` for no name.
pub fn env_suffix(region: &str) -> Option<String> {
    (!region.is_empty()).then(|| {
        region
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    })
}

/// The default of `failover_after`.
pub const DEFAULT_FAILOVER_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// One `[[regions]]` entry: its name, the keys every backend shares, and the rest of its keys,
/// which the region's backend reads with [`LoadedConfig::region_settings`] (checking them against
/// its own settings). `Debug` shows the keys, not their values (they may hold account keys).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionSection {
    /// A name for messages (`westeurope`).
    #[serde(default)]
    pub name: String,
    /// The region's backend kind (`local`, `azure-batch`); default: the profile's `backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The region's own store (`az://…`); default: the profile's `storage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Options of the region's store (as the profile's `storage_options`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub storage_options: std::collections::BTreeMap<String, String>,
    /// The region's share of the work relative to the others (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The region's other keys, as written.
    #[serde(flatten)]
    pub settings: std::collections::BTreeMap<String, figment::value::Value>,
}

impl std::fmt::Debug for RegionSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.settings.keys().map(String::as_str).collect();
        let options: Vec<&str> = self.storage_options.keys().map(String::as_str).collect();
        f.debug_struct("RegionSection")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("storage", &self.storage)
            .field(
                "storage_options",
                &format_args!("{options:?} (values redacted)"),
            )
            .field("weight", &self.weight)
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
            .field("placement", &self.placement)
            .field("failover_after", &self.failover_after)
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
            placement: None,
            failover_after: None,
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
    /// The `[[regions]]` entry this configuration is narrowed to (see
    /// [`LoadedConfig::for_region`]).
    region: Option<usize>,
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
            region: None,
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
            region: None,
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

    /// This configuration narrowed to its `index`th `[[regions]]` entry: the region's backend
    /// kind, storage and storage options replace the profile's where the region sets them, and
    /// [`LoadedConfig::region_settings`] reads that entry. `None` when there is no such entry.
    pub fn for_region(&self, index: usize) -> Option<LoadedConfig> {
        let region = self.config.regions.get(index)?;
        let mut narrowed = self.clone();
        narrowed.region = Some(index);
        if let Some(backend) = &region.backend {
            narrowed.config.backend = backend.clone();
        }
        if let Some(storage) = &region.storage {
            narrowed.config.storage = storage.clone();
            narrowed.config.storage_options = region.storage_options.clone();
        } else if !region.storage_options.is_empty() {
            narrowed.config.storage_options = region.storage_options.clone();
        }
        Some(narrowed)
    }

    /// The `[[regions]]` entry this configuration reads: the one it was narrowed to, else the
    /// first, else none.
    pub fn region(&self) -> Option<&RegionSection> {
        self.config.regions.get(self.region.unwrap_or(0))
    }

    /// The region's backend-specific keys (its `name` and every key but the shared `backend`,
    /// `storage`, `storage_options` and `weight`) as a backend's settings type `T`; with no
    /// region, `T` from no keys at all (its defaults). Errors name the region, the key and
    /// where the region came from.
    pub fn region_settings<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let mut keys = figment::value::Dict::new();
        if let Some(region) = self.region() {
            keys.insert("name".into(), region.name.clone().into());
            // The shared keys are fields of `RegionSection`, so `settings` never holds them.
            keys.extend(region.settings.clone());
        }
        Figment::from(Serialized::defaults(keys))
            .extract()
            .map_err(|e| {
                let name = self.region().map_or("", |r| r.name.as_str());
                let why = config_error(e);
                Error::new(
                    ErrorKind::Config,
                    format!("region `{name}`: {}", why.message()),
                )
                .with_context("key", "regions")
                .with_context("from", self.origin("regions"))
            })
    }

    /// A region's weight (`weight`, default 1; 0 is refused).
    pub fn region_weight(&self) -> Result<u32> {
        match self.region().and_then(|r| r.weight) {
            None => Ok(1),
            Some(0) => Err(self.error(
                "regions",
                "weight = 0",
                "a region's weight must be at least 1",
            )),
            Some(w) => Ok(w),
        }
    }

    /// How tasks are spread over several regions.
    pub fn placement(&self) -> Placement {
        self.config.placement.unwrap_or_default()
    }

    /// How long a region may fail before it is marked down (`failover_after`, default 30 s).
    pub fn failover_after(&self) -> Result<std::time::Duration> {
        match &self.config.failover_after {
            None => Ok(DEFAULT_FAILOVER_AFTER),
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if d.is_zero() => Err(self.error(
                    "failover_after",
                    text,
                    "`failover_after` must be longer than zero",
                )),
                Ok(d) => Ok(d),
                Err(e) => Err(self.error(
                    "failover_after",
                    text,
                    format!(
                        "`failover_after` is not a duration ({e}); write e.g. \"30s\" or \"2m\""
                    ),
                )),
            },
        }
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

    #[test]
    fn a_region_narrows_backend_and_storage() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "[default]\nstorage = \"memory://home\"\nplacement = \"round-robin\"\n\
             [[default.regions]]\nname = \"west\"\nbackend = \"azure-batch\"\n\
             storage = \"az://c\"\nstorage_options = { account = \"a\" }\nweight = 2\n\
             pool = { id = \"p\" }\n",
        );
        let c = LoadedConfig::load_from(Some(file), "default", false).unwrap();
        assert_eq!(c.placement(), Placement::RoundRobin);
        assert_eq!(c.failover_after().unwrap(), DEFAULT_FAILOVER_AFTER);
        let west = c.for_region(0).unwrap();
        assert_eq!(west.config.backend, "azure-batch");
        assert_eq!(west.config.storage, "az://c");
        assert_eq!(west.config.storage_options["account"], "a");
        assert_eq!(west.region_weight().unwrap(), 2);
        assert!(c.for_region(1).is_none());
        // The backend's own keys, without the shared ones.
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Own {
            name: String,
            pool: std::collections::BTreeMap<String, String>,
        }
        let own: Own = west.region_settings().unwrap();
        assert_eq!((own.name.as_str(), own.pool["id"].as_str()), ("west", "p"));
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Other {
            #[allow(dead_code)]
            name: String,
        }
        let e = west.region_settings::<Other>().unwrap_err().to_string();
        assert!(
            e.contains("region `west`") && e.contains("`pool`") && e.contains("Redwood.toml"),
            "{e}"
        );
    }

    #[test]
    fn bad_region_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "[default]\nplacement = \"nearest\"\n");
        let e = LoadedConfig::load_from(Some(file), "default", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("placement") && e.contains("nearest"), "{e}");
        let file = write(
            &dir,
            "[default]\nfailover_after = \"soon\"\n[[default.regions]]\nname = \"w\"\nweight = 0\n",
        );
        let c = LoadedConfig::load_from(Some(file), "default", false).unwrap();
        let e = c.failover_after().unwrap_err().to_string();
        assert!(e.contains("failover_after") && e.contains("soon"), "{e}");
        let e = c
            .for_region(0)
            .unwrap()
            .region_weight()
            .unwrap_err()
            .to_string();
        assert!(e.contains("weight"), "{e}");
        // Storage options of a region are not shown by Debug.
        let region = RegionSection {
            storage_options: [("key".to_string(), "s3cret".to_string())].into(),
            ..RegionSection::default()
        };
        let shown = format!("{region:?}");
        assert!(
            shown.contains("key") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn region_environment_suffixes() {
        assert_eq!(env_suffix("west-europe").as_deref(), Some("WEST_EUROPE"));
        assert_eq!(env_suffix("eu2").as_deref(), Some("EU2"));
        assert_eq!(env_suffix(""), None);
    }
}
