//! The conformance runner: every case against every configured backend and store.
//!
//! - `REDWOOD_TEST_BACKEND`: the backend (default `local`).
//! - `REDWOOD_TEST_STORAGE`: comma-separated stores among `file`, `memory` and `azurite`
//!   (default all three). `azurite` starts a real Azurite (see `redwood-emulator`).
//!
//! Each store gets a fresh random namespace, removed after the run.

use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use redwood::Session;
use redwood_conformance::{Ctx, all_cases, cases::child_main};
use redwood_emulator::azurite::Azurite;

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
    let backend = std::env::var("REDWOOD_TEST_BACKEND").unwrap_or_else(|_| "local".into());
    let wanted =
        std::env::var("REDWOOD_TEST_STORAGE").unwrap_or_else(|_| "file,memory,azurite".into());
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
    let mut stores = Vec::new();
    for name in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
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
            "azurite" => {
                let started = runtime.block_on(Azurite::start());
                let az = match started {
                    Ok(az) => az,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                };
                eprintln!("Azurite ({}) at {}", az.how(), az.blob_base());
                let conn = az.connection_string(&az.accounts()[0]);
                azurite = Some(az);
                Store {
                    name: name.into(),
                    url: format!("az://conformance-{pid}/suite"),
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
    for store in stores {
        let namespace = format!("conformance-{pid}");
        let session = {
            let _guard = runtime.enter();
            let mut builder = Session::builder()
                .backend_name(&backend)
                .storage_url(&store.url)
                .namespace(&namespace)
                .progress(false);
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
        sessions.push(session.clone());
        for case in all_cases() {
            let name = format!("{backend}::{}::{}", store.name, case.name);
            let skip = case.skip_reason(&session);
            let ctx = Ctx {
                session: session.clone(),
                storage_url: store.url.clone(),
                namespace: namespace.clone(),
                exe: exe.clone(),
                child_env: store.child_env.clone(),
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
    for session in sessions {
        if let Err(e) = runtime.block_on(session.cleanup()) {
            eprintln!("cleanup of {} failed: {e}", session.storage().url());
        }
    }
    if let Some(az) = azurite {
        runtime.block_on(az.stop());
    }
    conclusion.exit_code()
}
