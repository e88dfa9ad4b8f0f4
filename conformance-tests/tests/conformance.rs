//! The conformance runner: every case against every configured backend and store.
//!
//! - `REDWOOD_TEST_BACKEND`: comma-separated set-ups among `local`, `azure-batch`,
//!   `azure-batch-packed` (7 tasks per Batch task), `local-regions`, `azure-batch-regions`, `azure-functions` and `azure-functions-http`
//!   (default: all). `azure-batch` runs against `redwood-emulator`'s Batch API, started here,
//!   whose nodes are local folders and processes; the `-regions` set-ups have two regions each
//!   (two local pools, or two emulated Batch accounts), region `east` with its own Azurite
//!   account that outage cases take down; the `azure-functions` set-ups run against the
//!   emulator's Functions host, the `-http` one sending small launches to its HTTP trigger.
//! - `REDWOOD_TEST_STORAGE`: comma-separated stores among `file`, `memory`, `azurite`,
//!   `azurite-faults`, `s3`, `s3-faults` and `gcs` (default: all of them for `local`; `azurite`
//!   for `azure-batch`, whose nodes need a store they can reach by URL). `azurite` starts a
//!   real Azurite, `s3` a real S3 emulator (moto) and `gcs` fake-gcs-server (in Docker, or at
//!   `REDWOOD_GCS_ENDPOINT`; skipped, saying why, where neither can be had; see
//!   `redwood-emulator`); the `-faults` stores reach the same service through a proxy that
//!   injects 503s, 500s and connection resets into 10% of the requests.
//!
//! Each store gets a fresh random namespace, removed after the run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use redwood::Session;
use redwood_conformance::watchdog::Watchdog;
use redwood_conformance::{Ctx, all_cases, cases::child_main};

mod fixtures;
use fixtures::{Home, Services, Store};

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
    let code = match run(runtime.clone()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    };
    // A task stuck in a blocking call must not keep the binary alive once the cases are done.
    if let Ok(runtime) = Arc::try_unwrap(runtime) {
        runtime.shutdown_timeout(Duration::from_secs(10));
    }
    code
}

/// The longest the whole suite may run (on a 2-core machine it takes about ten minutes).
const SUITE_LIMIT: Duration = Duration::from_secs(40 * 60);

fn run(runtime: Arc<tokio::runtime::Runtime>) -> Result<ExitCode, String> {
    let args = Arguments::from_args();
    let watchdog = Watchdog::start(SUITE_LIMIT);
    let exe = fixtures::this_exe()?;
    let mut services = Services::new(runtime.clone())?;
    let mut backends = fixtures::backends();
    let store_fixtures = fixtures::stores();
    let known = |names: Vec<&'static str>| names.join(", ");
    let wanted_backends = std::env::var("REDWOOD_TEST_BACKEND")
        .unwrap_or_else(|_| known(backends.iter().map(|b| b.name()).collect()));
    let wanted_stores = std::env::var("REDWOOD_TEST_STORAGE").ok();
    let pid = std::process::id();

    // Which backend runs on which store; each pair has its own store (and so its own
    // Azurite: see `Services`).
    let mut pairs: Vec<(usize, Store)> = Vec::new();
    for name in wanted_backends
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let b = backends
            .iter()
            .position(|b| b.name() == name)
            .ok_or_else(|| {
                let names = known(backends.iter().map(|b| b.name()).collect());
                format!("unknown REDWOOD_TEST_BACKEND entry `{name}` (known: {names})")
            })?;
        let wanted = wanted_stores
            .clone()
            .unwrap_or_else(|| backends[b].default_stores().into());
        for store in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let s = store_fixtures
                .iter()
                .position(|f| f.name() == store)
                .ok_or_else(|| {
                    let names = known(store_fixtures.iter().map(|f| f.name()).collect());
                    format!("unknown REDWOOD_TEST_STORAGE entry `{store}` (known: {names})")
                })?;
            let store = store_fixtures[s].open(&mut services, backends[b].name())?;
            pairs.push((b, store));
        }
    }

    let mut trials = Vec::new();
    let mut sessions = Vec::new();
    for (b, store) in &pairs {
        let backend = &mut backends[*b];
        let name = backend.name();
        if let Some(why) = &store.unavailable {
            eprintln!("skipping every {name}::{} case: {why}", store.name);
            for case in all_cases() {
                let trial_name = format!("{name}::{}::{}", store.name, case.name);
                trials.push(Trial::test(trial_name, || Ok(())).with_ignored_flag(true));
            }
            continue;
        }
        let namespace = format!("conformance-{pid}-{name}");
        let url = backend.store_url(store);
        let mut builder = Session::builder()
            .storage_url(&url)
            .namespace(&namespace)
            .progress(false);
        for (k, v) in &store.options {
            builder = builder.storage_option(k, v);
        }
        let home = Home {
            setup: name,
            store,
            url: &url,
            namespace: &namespace,
        };
        let (builder, backend_env) = backend.configure(&mut services, &home, builder)?;
        let outages = backend.outages();
        // Outage cases take a region down: they run alone in their set-up.
        let exclusive = Arc::new(std::sync::RwLock::new(()));
        let session = {
            let _guard = runtime.enter();
            builder
                .build()
                .map_err(|e| format!("cannot build a `{name}` session on {}: {e}", store.url))?
        };
        let deletes = backend.deletes_stored_jobs() && !store.vanishes;
        sessions.push((deletes, session.clone()));
        let mut child_env = store.child_env.clone();
        child_env.extend(backend_env);
        for case in all_cases() {
            let trial_name = format!("{name}::{}::{}", store.name, case.name);
            let skip = case.skip_reason(&session, outages.as_ref());
            let ctx = Ctx {
                session: session.clone(),
                storage_url: url.clone(),
                namespace: namespace.clone(),
                exe: exe.clone(),
                child_env: child_env.clone(),
                outages: outages.clone(),
            };
            let rt = runtime.clone();
            let run = case.run;
            let alone = case.needs.outages;
            let exclusive = exclusive.clone();
            let dog = watchdog.clone();
            let trial = Trial::test(trial_name.clone(), move || {
                let _turn = if alone {
                    Err(exclusive.write().unwrap_or_else(|p| p.into_inner()))
                } else {
                    Ok(exclusive.read().unwrap_or_else(|p| p.into_inner()))
                };
                rt.block_on(dog.case(&trial_name, run(ctx)))
                    .map_err(Failed::from)
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
    for (deletes_stored_jobs, session) in sessions {
        if !cleaned_up(
            &runtime,
            &watchdog,
            &session,
            deletes_stored_jobs,
            args.list,
        ) {
            code = ExitCode::FAILURE;
        }
    }
    if let Some(stats) = services.fault_stats() {
        eprintln!(
            "fault proxy: {} forwarded, {} 503s, {} 500s, {} resets",
            stats.forwarded, stats.unavailable, stats.internal, stats.resets
        );
        if stats.faults() == 0 && !args.list {
            eprintln!("the fault proxy injected nothing: the -faults runs proved nothing");
            code = ExitCode::FAILURE;
        }
    }
    services.stop();
    Ok(code)
}

/// Deletes what the suite stored (or, for a backend that says so, releases the backend only)
/// and reports whether that worked.
fn cleaned_up(
    runtime: &tokio::runtime::Runtime,
    watchdog: &Watchdog,
    session: &Session,
    deletes_stored_jobs: bool,
    listing: bool,
) -> bool {
    let storage = session.storage().clone();
    if !deletes_stored_jobs {
        let what = format!("cleanup of the `{}` backend", session.backend().name());
        let released = runtime.block_on(
            watchdog.step(
                &what,
                session
                    .backend()
                    .release(redwood::raw::backend::CleanupRequest::default()),
            ),
        );
        if let Err(e) = released.and_then(|r| r.map_err(|e| e.to_string())) {
            eprintln!(
                "cleanup of the `{}` backend failed: {e}",
                session.backend().name()
            );
            return false;
        }
        return true;
    }
    let what = format!("cleanup of {}", storage.url());
    let left = runtime
        .block_on(watchdog.step(&what, async {
            session.cleanup_all().await?;
            storage.list(&storage.layout().jobs()).await
        }))
        .and_then(|left| left.map_err(|e| e.to_string()));
    match left {
        Ok(left) if left.is_empty() || listing => true,
        Ok(left) => {
            eprintln!(
                "cleanup of {} left {} job objects",
                storage.url(),
                left.len()
            );
            false
        }
        Err(e) => {
            eprintln!("cleanup of {} failed: {e}", storage.url());
            false
        }
    }
}
