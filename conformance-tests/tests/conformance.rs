//! The conformance runner: every case against every configured backend and store.
//!
//! - `REDWOOD_TEST_BACKEND`: comma-separated backends among `local` and `azure-batch`
//!   (default: both). `azure-batch` runs against `redwood-emulator`'s Batch API, started here,
//!   whose nodes are local folders and processes.
//! - `REDWOOD_TEST_STORAGE`: comma-separated stores among `file`, `memory`, `azurite` and
//!   `azurite-faults` (default: all of them for `local`; `azurite` for `azure-batch`, whose
//!   nodes need a store they can reach by URL). `azurite` starts a real Azurite (see `redwood-emulator`);
//!   `azurite-faults` reaches the same Azurite through a proxy that injects 503s, 500s and
//!   connection resets into 10% of the requests.
//!
//! Each store gets a fresh random namespace, removed after the run.

use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use redwood::Session;
use redwood_conformance::{Ctx, all_cases, cases::child_main};
use redwood_emulator::azurite::Azurite;
use redwood_emulator::batch::{BatchAccount, BatchEmulator};
use redwood_emulator::fault_proxy::{FaultConfig, FaultProxy};

/// The share of storage requests that fail in the `azurite-faults` store.
const FAULT_RATE: f64 = 0.10;

/// A store the suite runs on: its URL, options for the session, env for child processes.
struct Store {
    name: String,
    url: String,
    options: Vec<(String, String)>,
    child_env: Vec<(String, String)>,
}

fn main() -> ExitCode {
    redwood::worker_entry();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(role) = std::env::var("REDWOOD_CONFORMANCE_CHILD") {
        return match runtime.block_on(child_main(&role)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("child {role}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Arguments::from_args();
    let backends =
        std::env::var("REDWOOD_TEST_BACKEND").unwrap_or_else(|_| "local,azure-batch".into());
    let wanted_stores = std::env::var("REDWOOD_TEST_STORAGE").ok();
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot locate the test binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let scratch = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot make a scratch folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = std::process::id();
    let mut azurite: Option<Azurite> = None;
    let mut proxy: Option<FaultProxy> = None;
    let mut stores = Vec::new();
    let mut batch: Option<BatchEmulator> = None;
    let mut backend_stores: Vec<(String, String)> = Vec::new();
    for backend in backends.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let default_stores = match backend {
            "azure-batch" => "azurite",
            _ => "file,memory,azurite,azurite-faults",
        };
        let wanted = wanted_stores
            .clone()
            .unwrap_or_else(|| default_stores.into());
        for name in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            backend_stores.push((backend.to_string(), name.to_string()));
        }
    }
    let mut made: Vec<String> = Vec::new();
    for name in backend_stores.iter().map(|(_, s)| s.as_str()) {
        if made.iter().any(|m| m == name) {
            continue;
        }
        made.push(name.to_string());
        let store = match name {
            "file" => Store {
                name: name.into(),
                url: format!("file://{}", scratch.path().join("store").display()),
                options: vec![],
                child_env: vec![],
            },
            "memory" => Store {
                name: name.into(),
                url: "memory://conformance".into(),
                options: vec![],
                child_env: vec![],
            },
            "azurite" | "azurite-faults" => {
                if azurite.is_none() {
                    match runtime.block_on(Azurite::start()) {
                        Ok(az) => {
                            eprintln!("Azurite ({}) at {}", az.how(), az.blob_base());
                            azurite = Some(az);
                        }
                        Err(e) => {
                            eprintln!("{e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                let Some(az) = azurite.as_ref() else {
                    return ExitCode::FAILURE;
                };
                let account = &az.accounts()[0];
                let (conn, container) = if name == "azurite" {
                    (az.connection_string(account), format!("conformance-{pid}"))
                } else {
                    let config = FaultConfig {
                        rate: FAULT_RATE,
                        ..FaultConfig::default()
                    };
                    let started = runtime.block_on(FaultProxy::start(az.blob_base(), config));
                    let p = match started {
                        Ok(p) => p,
                        Err(e) => {
                            eprintln!("cannot start the fault proxy: {e}");
                            return ExitCode::FAILURE;
                        }
                    };
                    let conn = format!(
                        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={}/{}",
                        account.name,
                        account.key,
                        p.url(),
                        account.name
                    );
                    eprintln!(
                        "fault proxy at {} ({:.0}% faults)",
                        p.url(),
                        FAULT_RATE * 100.0
                    );
                    proxy = Some(p);
                    (conn, format!("faults-{pid}"))
                };
                Store {
                    name: name.into(),
                    url: format!("az://{container}/suite"),
                    options: vec![("connection_string".into(), conn.clone())],
                    child_env: vec![("AZURE_STORAGE_CONNECTION_STRING".into(), conn)],
                }
            }
            other => {
                eprintln!(
                    "unknown REDWOOD_TEST_STORAGE entry `{other}` (known: file, memory, azurite)"
                );
                return ExitCode::FAILURE;
            }
        };
        stores.push(store);
    }

    let mut trials = Vec::new();
    let mut sessions = Vec::new();
    for (backend, store_name) in &backend_stores {
        let Some(store) = stores.iter().find(|s| &s.name == store_name) else {
            continue;
        };
        let mut child_env = store.child_env.clone();
        let namespace = format!("conformance-{pid}-{backend}");
        // Batch tasks store one result object each: 10,000 of them make every Azurite call on
        // their container slow, so the azure-batch runs get a container of their own.
        let url = if backend == "azure-batch" {
            store.url.replacen("az://", "az://batch-", 1)
        } else {
            store.url.clone()
        };
        let session = {
            let _guard = runtime.enter();
            let mut builder = Session::builder()
                .storage_url(&url)
                .namespace(&namespace)
                .progress(false);
            if backend == "azure-batch" {
                if batch.is_none() {
                    match runtime.block_on(start_batch()) {
                        Ok(b) => batch = Some(b),
                        Err(e) => {
                            eprintln!("cannot start the Batch emulator: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                let Some(emulator) = batch.as_ref() else {
                    return ExitCode::FAILURE;
                };
                let url = emulator.url(BATCH_ACCOUNT).unwrap_or_default();
                child_env.extend([
                    ("REDWOOD_BATCH_URL".to_string(), url.clone()),
                    (
                        "REDWOOD_BATCH_ACCOUNT".to_string(),
                        BATCH_ACCOUNT.to_string(),
                    ),
                    ("REDWOOD_BATCH_KEY".to_string(), BATCH_KEY.to_string()),
                ]);
                match batch_backend(&url) {
                    Ok(b) => builder = builder.backend(b),
                    Err(e) => {
                        eprintln!("cannot build the azure-batch backend: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                builder = builder.backend_name(backend);
            }
            for (k, v) in &store.options {
                builder = builder.storage_option(k, v);
            }
            builder.build()
        };
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot build a `{backend}` session on {}: {e}", store.url);
                return ExitCode::FAILURE;
            }
        };
        sessions.push((backend.clone(), session.clone()));
        for case in all_cases() {
            let name = format!("{backend}::{}::{}", store.name, case.name);
            let skip = case.skip_reason(&session);
            let ctx = Ctx {
                session: session.clone(),
                storage_url: url.clone(),
                namespace: namespace.clone(),
                exe: exe.clone(),
                child_env: child_env.clone(),
            };
            let rt = runtime.clone();
            let run = case.run;
            let trial = Trial::test(name, move || {
                rt.block_on(run(ctx))
                    .map_err(|e| Failed::from(e.to_string()))
            });
            trials.push(match skip {
                Some(reason) => {
                    eprintln!("skipping {}: {reason}", trial.name());
                    trial.with_ignored_flag(true)
                }
                None => trial,
            });
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let mut code = conclusion.exit_code();
    for (backend, session) in sessions {
        let storage = session.storage().clone();
        if backend == "azure-batch" {
            // Deleting 10,000 result objects one by one takes Azurite many minutes (it deletes
            // ~15 a second once a container holds that many), and the container goes away with
            // Azurite: release the Batch jobs and the pool only.
            let released = runtime.block_on(
                session
                    .backend()
                    .cleanup(redwood::raw::backend::CleanupRequest::default()),
            );
            if let Err(e) = released {
                eprintln!("cleanup of the azure-batch backend failed: {e}");
                code = ExitCode::FAILURE;
            }
            continue;
        }
        let left = runtime.block_on(async {
            session.cleanup_all().await?;
            storage.list(&storage.layout().jobs()).await
        });
        match left {
            Ok(left) if left.is_empty() => {}
            Ok(left) if args.list => drop(left),
            Ok(left) => {
                eprintln!(
                    "cleanup of {} left {} job objects",
                    storage.url(),
                    left.len()
                );
                code = ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("cleanup of {} failed: {e}", storage.url());
                code = ExitCode::FAILURE;
            }
        }
    }
    if let Some(p) = proxy {
        let stats = p.stats();
        eprintln!(
            "fault proxy: {} forwarded, {} 503s, {} 500s, {} resets",
            stats.forwarded, stats.unavailable, stats.internal, stats.resets
        );
        if stats.faults() == 0 && !args.list {
            eprintln!("the fault proxy injected nothing: the azurite-faults runs proved nothing");
            code = ExitCode::FAILURE;
        }
    }
    if let Some(az) = azurite {
        runtime.block_on(az.stop());
    }
    drop(batch);
    code
}

/// The emulated Batch account the `azure-batch` runs use.
const BATCH_ACCOUNT: &str = "conformance";
const BATCH_KEY: &str = "Y29uZm9ybWFuY2Uta2V5LWZvci10ZXN0cy1vbmx5";

async fn start_batch() -> std::io::Result<BatchEmulator> {
    let emulator = BatchEmulator::start(vec![BatchAccount {
        name: BATCH_ACCOUNT.into(),
        key: BATCH_KEY.into(),
        bearer_token: None,
    }])
    .await?;
    eprintln!(
        "Batch emulator at {}",
        emulator.url(BATCH_ACCOUNT).unwrap_or_default()
    );
    Ok(emulator)
}

/// The backend on the emulator: a pool of 2 nodes with 8 task slots each, polled often.
fn batch_backend(url: &str) -> redwood::Result<Arc<dyn redwood::raw::backend::ComputeBackend>> {
    let pool = redwood::config::PoolConfig {
        dedicated: 2,
        task_slots_per_node: 8,
        ..Default::default()
    };
    let backend = redwood::azure::AzureBatchBackendBuilder::new(url, BATCH_ACCOUNT, BATCH_KEY)
        .pool(pool)
        .poll_interval(std::time::Duration::from_millis(100))
        .progress(false)
        .build()?;
    Ok(Arc::new(backend))
}
