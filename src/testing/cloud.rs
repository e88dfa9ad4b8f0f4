//! [`TestCloud`]: the emulators one test needs, and sessions on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redwood_core::{Error, ErrorKind, Region, Result, Session, SessionBuilder, Storage};
use redwood_emulator::azurite::{Account, Azurite};
use redwood_emulator::batch::outage::{Compute, Outage};
use redwood_emulator::batch::{BatchAccount, BatchEmulator};
use redwood_emulator::fault_proxy::{FaultConfig, FaultProxy};
use redwood_emulator::functions::{FunctionsHost, FunctionsHostOptions};

/// The session kinds [`TestCloud::session`] knows.
const KINDS: &str =
    "local, azure-batch, azure-batch-warm, azure-functions, local-regions, azure-batch-regions";
/// How long the warm workers of an `azure-batch-warm` session wait for work.
const WARM_IDLE: Duration = Duration::from_secs(20);

/// The two regions: the home one and a second with its own storage account and Batch account.
const HOME: &str = "west";
const SECOND: &str = "east";

/// The emulated Batch accounts (keys for tests only).
const BATCH_ACCOUNTS: [(&str, &str); 2] = [
    (HOME, "dGVzdGNsb3VkLXdlc3Qta2V5LWZvci10ZXN0cy1vbmx5"),
    (SECOND, "dGVzdGNsb3VkLWVhc3Qta2V5LWZvci10ZXN0cy1vbmx5"),
];

/// The Functions app's queue.
const FUNCTIONS_QUEUE: &str = "testcloud-tasks";
/// The longest task the Functions app runs.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(120);
/// How soon a failing region's work moves to the other.
const FAILOVER_AFTER: Duration = Duration::from_secs(3);

/// A region's store: an Azurite account reached through a proxy that can fail requests.
struct RegionStore {
    url: String,
    connection_string: String,
    proxy: Arc<FaultProxy>,
}

/// Emulators for one test: a real Azurite (two storage accounts), the Batch emulator (two
/// accounts, `west` and `east`), optionally the Functions host, each region's storage behind a
/// proxy that can fail requests or go down. Dropping it stops them all and removes their files.
pub struct TestCloud {
    azurite: Azurite,
    stores: [RegionStore; 2],
    batch: BatchEmulator,
    functions: Option<FunctionsHost>,
    scratch: tempfile::TempDir,
    sessions: AtomicU64,
}

impl std::fmt::Debug for TestCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCloud")
            .field("azurite", &self.azurite.blob_base())
            .field("functions", &self.functions.is_some())
            .finish_non_exhaustive()
    }
}

/// What [`TestCloud`] starts.
#[derive(Debug, Clone, Default)]
pub struct TestCloudBuilder {
    functions: bool,
}

impl TestCloudBuilder {
    /// Also start an Azure Functions host running this binary as its custom handler (for
    /// `azure-functions` sessions).
    pub fn functions(mut self, on: bool) -> Self {
        self.functions = on;
        self
    }

    /// Starts the emulators.
    pub async fn start(self) -> Result<TestCloud> {
        let failed = |what: &str, e: String| {
            Error::new(ErrorKind::Backend, format!("cannot start {what}: {e}"))
                .with_operation("TestCloud::start")
        };
        let azurite = Azurite::start().await.map_err(|e| failed("Azurite", e.0))?;
        let scratch = tempfile::Builder::new()
            .prefix("redwood-testcloud-")
            .tempdir()
            .map_err(|e| failed("a scratch folder", e.to_string()))?;
        let accounts = azurite.accounts().to_vec();
        let (Some(home), Some(second)) = (accounts.first(), accounts.get(1)) else {
            return Err(failed(
                "two regions",
                "this Azurite serves one storage account (REDWOOD_AZURITE names one); regions \
                 need two"
                    .into(),
            ));
        };
        let stores = [
            region_store(&azurite, home, "testcloud").await?,
            region_store(&azurite, second, "testcloud-east").await?,
        ];
        let batch = BatchEmulator::start(
            BATCH_ACCOUNTS
                .iter()
                .map(|(name, key)| BatchAccount {
                    name: (*name).into(),
                    key: (*key).into(),
                    bearer_token: None,
                })
                .collect(),
        )
        .await
        .map_err(|e| failed("the Batch emulator", e.to_string()))?;
        for ((name, _), store) in BATCH_ACCOUNTS.iter().zip(&stores) {
            batch
                .put_storage_behind(name, store.proxy.clone())
                .map_err(|e| failed("the Batch emulator", e))?;
        }
        let functions = if self.functions {
            Some(start_functions(&scratch, &azurite, home).await?)
        } else {
            None
        };
        tracing::info!(azurite = %azurite.blob_base(), how = azurite.how(), "test cloud started");
        Ok(TestCloud {
            azurite,
            stores,
            batch,
            functions,
            scratch,
            sessions: AtomicU64::new(0),
        })
    }
}

/// A region's store: `account` of Azurite behind a proxy of its own.
async fn region_store(
    azurite: &Azurite,
    account: &Account,
    container: &str,
) -> Result<RegionStore> {
    let proxy = FaultProxy::start(azurite.blob_base(), FaultConfig::default())
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                format!("cannot start a storage proxy: {e}"),
            )
        })?;
    Ok(RegionStore {
        url: format!("az://{container}/redwood"),
        connection_string: azurite.connection_string_via(account, &proxy.url()),
        proxy: Arc::new(proxy),
    })
}

/// Writes the Functions app of this binary and starts a host for it.
async fn start_functions(
    scratch: &tempfile::TempDir,
    azurite: &Azurite,
    account: &Account,
) -> Result<FunctionsHost> {
    let app = scratch.path().join("functions-app");
    let executable = std::env::current_exe().map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!("cannot find this test binary: {e}"),
        )
    })?;
    let options = crate::azure::AppOptions {
        queue: FUNCTIONS_QUEUE.into(),
        function_timeout: FUNCTION_TIMEOUT,
        executable: Some(executable),
        ..Default::default()
    };
    crate::azure::write_app(&app, &options)?;
    let mut host = FunctionsHostOptions::new(&app)
        .setting("AzureWebJobsStorage", azurite.connection_string(account))
        .setting("REDWOOD_WORKERS", "4");
    host.max_instances = 2;
    FunctionsHost::start(host).await.map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!("cannot start the Functions host: {e}"),
        )
    })
}

impl TestCloud {
    /// Azurite and the Batch emulator (what most tests need).
    pub async fn start() -> Result<TestCloud> {
        TestCloud::builder().start().await
    }

    /// Chooses what to start (the Functions host, too).
    pub fn builder() -> TestCloudBuilder {
        TestCloudBuilder::default()
    }

    /// A session on `kind`, in a namespace of its own: `local` (a local process pool),
    /// `azure-batch` (the Batch emulator; its nodes are local processes), `azure-batch-warm`
    /// (the same on warm workers that take tasks from a queue in Azurite), `azure-functions`
    /// (needs [`TestCloudBuilder::functions`]), or two regions `west` and `east`:
    /// `local-regions`, `azure-batch-regions`. Its storage is Azurite, through the proxy
    /// [`TestCloud::faults`] and [`TestCloud::take_region_down`] act on.
    pub fn session(&self, kind: &str) -> Result<Session> {
        self.session_builder(kind)?.build()
    }

    /// [`TestCloud::session`], as a builder to change more (workers, retries, progress).
    pub fn session_builder(&self, kind: &str) -> Result<SessionBuilder> {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("test-{n}");
        let home = &self.stores[0];
        let builder = Session::builder()
            .storage_url(&home.url)
            .storage_option("connection_string", &home.connection_string)
            .namespace(&namespace)
            .progress(false);
        match kind {
            "local" => Ok(builder.backend_name("local")),
            "azure-batch" => Ok(builder.backend(Arc::new(self.batch_backend(HOME)?.build()?))),
            "azure-batch-warm" => {
                let backend = self.batch_backend(HOME)?.warm_workers(WARM_IDLE).build()?;
                Ok(builder.backend(Arc::new(backend)))
            }
            "azure-functions" => Ok(builder.backend(Arc::new(self.functions_backend()?))),
            "local-regions" | "azure-batch-regions" => {
                let mut builder = builder.failover_after(FAILOVER_AFTER);
                for (i, (name, _)) in BATCH_ACCOUNTS.iter().enumerate() {
                    let store = &self.stores[i];
                    let options = [(
                        "connection_string".to_string(),
                        store.connection_string.clone(),
                    )]
                    .into();
                    let storage = Storage::open_with(&store.url, &options)?.with_root(&namespace);
                    let executor: Arc<dyn crate::raw::executor::Executor> =
                        if kind == "local-regions" {
                            Arc::new(crate::local::LocalBackend::builder().workers(2).build()?)
                        } else {
                            Arc::new(self.batch_backend(name)?.build()?)
                        };
                    builder = builder.region(Region::new(*name, executor, storage));
                }
                Ok(builder)
            }
            other => Err(Error::new(
                ErrorKind::Config,
                format!("no session kind `{other}` in a TestCloud (known: {KINDS})"),
            )
            .with_operation("TestCloud::session")),
        }
    }

    /// Makes `rate` (0 to 1) of the storage requests of both regions fail (503s, 500s and cut
    /// connections, as the fault proxy injects them); 0 stops it.
    pub fn faults(&self, rate: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("a fault rate is between 0 and 1, not {rate}"),
            ));
        }
        for store in &self.stores {
            store.proxy.set_rate(rate);
        }
        Ok(())
    }

    /// Takes region `west` or `east` down: its storage answers 503 to everything and its
    /// Batch account refuses every call, until [`TestCloud::bring_region_up`].
    pub fn take_region_down(&self, region: &str) -> Result<()> {
        self.switch_region(region, true)
    }

    /// Brings a region taken down back.
    pub fn bring_region_up(&self, region: &str) -> Result<()> {
        self.switch_region(region, false)
    }

    fn switch_region(&self, region: &str, down: bool) -> Result<()> {
        let i = BATCH_ACCOUNTS
            .iter()
            .position(|(name, _)| *name == region)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("no region `{region}` in a TestCloud (it has `{HOME}` and `{SECOND}`)"),
                )
            })?;
        self.stores[i].proxy.set_fixed_status(down.then_some(503));
        let compute = if down { Compute::Refuse } else { Compute::Up };
        self.batch
            .set_outage(
                region,
                Outage {
                    compute: Some(compute),
                    storage: None,
                },
            )
            .map_err(|e| Error::new(ErrorKind::Backend, e))
    }

    /// The home store's URL (`az://…`) and its `connection_string`, to open it yourself.
    pub fn storage(&self) -> (&str, &str) {
        (&self.stores[0].url, &self.stores[0].connection_string)
    }

    /// The `REDWOOD_BATCH_URL`, `REDWOOD_BATCH_ACCOUNT` and `REDWOOD_BATCH_KEY` of region
    /// `west`'s or `east`'s Batch account, for a second process (a child program, the
    /// `redwood` tool) to reach it with `backend = "azure-batch"`.
    pub fn batch_env(&self, region: &str) -> Result<Vec<(String, String)>> {
        let (name, key) = BATCH_ACCOUNTS
            .iter()
            .find(|(name, _)| *name == region)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("no region `{region}` in a TestCloud (it has `{HOME}` and `{SECOND}`)"),
                )
            })?;
        let url = self
            .batch
            .url(name)
            .ok_or_else(|| Error::new(ErrorKind::Backend, "the Batch emulator has no endpoint"))?;
        Ok(vec![
            ("REDWOOD_BATCH_URL".into(), url),
            ("REDWOOD_BATCH_ACCOUNT".into(), (*name).into()),
            ("REDWOOD_BATCH_KEY".into(), (*key).into()),
        ])
    }

    /// Takes a node of region `region`'s pool away, as when Azure reclaims a spot node: its
    /// running tasks end without an outcome. The node is one that runs a task (waiting up to
    /// 30 s for one to; then the first node). Returns the node's id.
    pub async fn lose_node(&self, region: &str) -> Result<String> {
        let env = self.batch_env(region)?;
        let client =
            crate::azure::BatchClientBuilder::new(&env[0].1, &env[1].1, &env[2].1).build()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let node = loop {
            let nodes = client
                .list("list_nodes", "/pools/redwood/nodes", &[])
                .await?;
            let busy = nodes
                .iter()
                .find(|n| n["runningTasksCount"].as_u64().unwrap_or(0) > 0);
            let pick = busy.or_else(|| {
                (std::time::Instant::now() >= deadline)
                    .then(|| nodes.first())
                    .flatten()
            });
            if let Some(id) = pick.and_then(|n| n["id"].as_str()) {
                break id.to_string();
            }
            if nodes.is_empty() {
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!("region `{region}`'s pool has no node to lose"),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        client
            .post(
                "emulator_admin",
                &format!("/_emulator/pools/redwood/nodes/{node}/remove"),
                &serde_json::json!({}),
            )
            .await?;
        Ok(node)
    }

    /// The Azurite behind the stores.
    pub fn azurite(&self) -> &Azurite {
        &self.azurite
    }

    /// The Batch emulator.
    pub fn batch(&self) -> &BatchEmulator {
        &self.batch
    }

    /// A folder that lives as long as this cloud.
    pub fn scratch(&self) -> &std::path::Path {
        self.scratch.path()
    }

    fn batch_backend(&self, account: &str) -> Result<crate::azure::AzureBatchBackendBuilder> {
        let (name, key) = BATCH_ACCOUNTS
            .iter()
            .find(|(name, _)| *name == account)
            .ok_or_else(|| {
                Error::new(ErrorKind::Config, format!("no Batch account `{account}`"))
            })?;
        let url = self
            .batch
            .url(name)
            .ok_or_else(|| Error::new(ErrorKind::Backend, "the Batch emulator has no endpoint"))?;
        let pool = crate::azure::PoolConfig {
            dedicated: 2,
            task_slots_per_node: 4,
            ..Default::default()
        };
        Ok(
            crate::azure::AzureBatchBackendBuilder::new(&url, *name, *key)
                .pool(pool)
                .poll_interval(Duration::from_millis(100))
                .progress(false),
        )
    }

    fn functions_backend(&self) -> Result<crate::azure::AzureFunctionsBackend> {
        if self.functions.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                "this TestCloud has no Functions host: start it with \
                 TestCloud::builder().functions(true).start()",
            ));
        }
        let connection = self.azurite.connection_string(&self.azurite.accounts()[0]);
        let mut settings = crate::azure::FunctionsSettings::new(FUNCTIONS_QUEUE, &connection);
        settings.function_timeout = FUNCTION_TIMEOUT;
        settings.poll_interval = Duration::from_millis(50);
        crate::azure::AzureFunctionsBackend::new(settings)
    }
}
