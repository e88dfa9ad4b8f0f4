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
    /// Cloud backends: the regions to run in (`azure-batch` uses the first).
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
}

/// One region of a cloud backend: a Batch account and the pool its tasks run on.
///
/// `batch_url`, `batch_account` and `batch_key` fall back to `REDWOOD_BATCH_URL`,
/// `REDWOOD_BATCH_ACCOUNT` and `REDWOOD_BATCH_KEY`; the account name defaults to the first
/// label of the URL's host. Without a key, Microsoft Entra ID credentials are used. `Debug`
/// hides the key.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// A name for messages (`westeurope`).
    #[serde(default)]
    pub name: String,
    /// The Batch account URL (`https://acct.westeurope.batch.azure.com`).
    #[serde(default)]
    pub batch_url: Option<String>,
    /// The Batch account name.
    #[serde(default)]
    pub batch_account: Option<String>,
    /// The Batch account's shared key (base64).
    #[serde(default)]
    pub batch_key: Option<String>,
    /// How Batch requests are signed: `shared-key` (the default when a key is set), or a
    /// Microsoft Entra ID credential: `client-secret`, `managed-identity`, `workload-identity`,
    /// `azure-cli`, `developer-tools`, `auto` (the default without a key).
    #[serde(default)]
    pub batch_auth: Option<String>,
    /// The pool tasks run on.
    #[serde(default)]
    pub pool: PoolConfig,
    /// How often to list finished tasks (humantime, default `1s`).
    #[serde(default)]
    pub poll_interval: Option<String>,
    /// How long the signed URLs given to tasks stay valid (humantime, default `2days`).
    #[serde(default)]
    pub sas_valid_for: Option<String>,
    /// The executable nodes run, when this one cannot run on the pool's OS (a static
    /// `x86_64-unknown-linux-musl` build of the same program). Default: this executable.
    #[serde(default)]
    pub executable: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RegionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionConfig")
            .field("name", &self.name)
            .field("batch_url", &self.batch_url)
            .field("batch_account", &self.batch_account)
            .field("batch_key", &self.batch_key.as_ref().map(|_| "<redacted>"))
            .field("batch_auth", &self.batch_auth)
            .field("pool", &self.pool)
            .field("poll_interval", &self.poll_interval)
            .field("sas_valid_for", &self.sas_valid_for)
            .field("executable", &self.executable)
            .finish()
    }
}

/// A Batch pool: reused when one with this id exists, else created with these settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The pool id (default `redwood`).
    #[serde(default = "default_pool_id")]
    pub id: String,
    /// The VM size (default `Standard_D2s_v3`).
    #[serde(default = "default_vm_size")]
    pub vm_size: String,
    /// The marketplace image (default Ubuntu 22.04).
    #[serde(default)]
    pub image: Option<ImageConfig>,
    /// Dedicated nodes (default 1).
    #[serde(default = "default_dedicated")]
    pub dedicated: u32,
    /// Spot (low-priority) nodes.
    #[serde(default)]
    pub spot: u32,
    /// Tasks one node runs at a time (default 1).
    #[serde(default = "default_slots")]
    pub task_slots_per_node: u32,
    /// An autoscale formula; when set, `dedicated` and `spot` are ignored.
    #[serde(default)]
    pub autoscale_formula: Option<String>,
    /// A command line each node runs when it joins the pool.
    #[serde(default)]
    pub start_task: Option<String>,
    /// A container image tasks run in.
    #[serde(default)]
    pub container_image: Option<String>,
    /// Inter-node communication (needed by MPI tasks).
    #[serde(default)]
    pub inter_node_communication: bool,
    /// The MPI launcher that starts an MPI task's ranks on the primary node; `{np}` is the
    /// number of ranks, `{ppn}` ranks per node, `$AZ_BATCH_HOST_LIST` the nodes (default
    /// `mpirun -n {np} -ppn {ppn} -hosts $AZ_BATCH_HOST_LIST`, Intel MPI and MPICH syntax).
    #[serde(default = "default_mpi_launcher")]
    pub mpi_launcher: String,
    /// Keep a pool Redwood created when the session cleans up (default: delete it).
    #[serde(default)]
    pub keep: bool,
    /// How long to wait for nodes (humantime, default `20m`).
    #[serde(default)]
    pub allocation_timeout: Option<String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            id: default_pool_id(),
            vm_size: default_vm_size(),
            image: None,
            dedicated: default_dedicated(),
            spot: 0,
            task_slots_per_node: default_slots(),
            autoscale_formula: None,
            start_task: None,
            container_image: None,
            inter_node_communication: false,
            mpi_launcher: default_mpi_launcher(),
            keep: false,
            allocation_timeout: None,
        }
    }
}

fn default_pool_id() -> String {
    "redwood".into()
}
fn default_vm_size() -> String {
    "Standard_D2s_v3".into()
}
fn default_dedicated() -> u32 {
    1
}
fn default_slots() -> u32 {
    1
}
fn default_mpi_launcher() -> String {
    "mpirun -n {np} -ppn {ppn} -hosts $AZ_BATCH_HOST_LIST".into()
}

/// A marketplace VM image and the Batch node agent for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// The publisher (`canonical`).
    pub publisher: String,
    /// The offer (`0001-com-ubuntu-server-jammy`).
    pub offer: String,
    /// The SKU (`22_04-lts`).
    pub sku: String,
    /// The version (default `latest`).
    #[serde(default)]
    pub version: Option<String>,
    /// The node agent (`batch.node.ubuntu 22.04`).
    pub node_agent_sku_id: String,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            publisher: "canonical".into(),
            offer: "0001-com-ubuntu-server-jammy".into(),
            sku: "22_04-lts".into(),
            version: Some("latest".into()),
            node_agent_sku_id: "batch.node.ubuntu 22.04".into(),
        }
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
