//! The settings of an `azure-batch` region (`[[regions]]` in `Redwood.toml`): the Batch account,
//! how to sign in, and the pool its tasks run on. Core keeps a region's keys as written
//! ([`RegionSection`]); this backend reads them into these types, refusing unknown keys.

use redwood_core::config::{LoadedConfig, RegionSection};
use redwood_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

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
    /// Tasks per Batch task: `auto` (the default: sized from the pool's slots and measured task
    /// times), or a number (`1`: one Batch task per Redwood task). Also `REDWOOD_BATCH_PACK`.
    #[serde(default)]
    pub pack: Option<String>,
    /// How tasks reach the nodes: `per-task` (the default: one Batch task per task or pack)
    /// or `warm` (long-lived workers, one per node, take groups of tasks from a queue in the
    /// storage account; see the README). Also `REDWOOD_BATCH_WORKERS`.
    #[serde(default)]
    pub workers: Option<String>,
    /// How long a warm worker waits for work before it exits (humantime, default `2m`). Also
    /// `REDWOOD_BATCH_WARM_IDLE`.
    #[serde(default)]
    pub warm_idle: Option<String>,
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
            .field("pack", &self.pack)
            .field("workers", &self.workers)
            .field("warm_idle", &self.warm_idle)
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

/// The configuration's region (the `[[regions]]` entry it is narrowed to, else the first) as an
/// `azure-batch` region; with none, the defaults (the account from the environment).
pub fn region(config: &LoadedConfig) -> Result<RegionConfig> {
    config.region_settings()
}

impl TryFrom<RegionConfig> for RegionSection {
    type Error = Error;

    /// A region set in code, as the configuration holds it.
    fn try_from(region: RegionConfig) -> Result<RegionSection> {
        let value = figment::value::Value::serialize(&region).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "cannot express region `{}` as configuration: {e}",
                    region.name
                ),
            )
        })?;
        let mut settings = value
            .into_dict()
            .unwrap_or_default()
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>();
        settings.remove("name");
        Ok(RegionSection {
            name: region.name,
            settings,
            ..RegionSection::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_keys_are_checked_with_their_origin() {
        let dir = std::env::temp_dir().join(format!("redwood-region-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("Redwood.toml");
        std::fs::write(
            &file,
            "[default]\nbackend = \"azure-batch\"\n[[default.regions]]\nname = \"west\"\n\
             pol = { id = \"p\" }\n",
        )
        .unwrap();
        let loaded = LoadedConfig::load_from(Some(file.clone()), "default", false).unwrap();
        assert_eq!(loaded.config.regions[0].name, "west");
        let text = region(&loaded).unwrap_err().to_string();
        assert!(
            text.contains("unknown key `pol` (did you mean `pool`?)")
                && text.contains("Redwood.toml"),
            "{text}"
        );
        // Debug shows a region's keys, never their values.
        std::fs::write(
            &file,
            "[default]\n[[default.regions]]\nbatch_key = \"s3cret\"\n",
        )
        .unwrap();
        let loaded = LoadedConfig::load_from(Some(file), "default", false).unwrap();
        let shown = format!("{:?}", loaded.config);
        assert!(
            shown.contains("batch_key") && !shown.contains("s3cret"),
            "{shown}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_region_set_in_code_reads_back_the_same() {
        let region = RegionConfig {
            name: "west".into(),
            batch_url: Some("https://acct.westeurope.batch.azure.com".into()),
            pool: PoolConfig {
                id: "p".into(),
                dedicated: 3,
                ..PoolConfig::default()
            },
            ..RegionConfig::default()
        };
        let config = redwood_core::Config {
            regions: vec![region.clone().try_into().unwrap()],
            ..redwood_core::Config::default()
        };
        let loaded = LoadedConfig::from_config(config);
        assert_eq!(super::region(&loaded).unwrap(), region);
    }
}
