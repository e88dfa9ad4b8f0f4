//! The conformance runner: every case against every configured backend and store.
//!
//! - `REDWOOD_TEST_BACKEND`: the backend (default `local`).
//! - `REDWOOD_TEST_STORAGE`: comma-separated stores among `file` and `memory` (default both).
//!
//! Each store gets a fresh random namespace, removed after the run.

use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use redwood::Session;
use redwood_conformance::{Ctx, all_cases, cases::child_main};

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
    let stores = std::env::var("REDWOOD_TEST_STORAGE").unwrap_or_else(|_| "file,memory".into());
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
    let mut trials = Vec::new();
    let mut sessions = Vec::new();
    for store in stores.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let storage_url = match store {
            "file" => format!("file://{}", scratch.path().join("store").display()),
            "memory" => "memory://conformance".to_string(),
            other => {
                eprintln!("unknown REDWOOD_TEST_STORAGE entry `{other}` (known: file, memory)");
                return ExitCode::FAILURE;
            }
        };
        let namespace = format!("conformance-{}", std::process::id());
        let session = {
            let _guard = runtime.enter();
            Session::builder()
                .backend_name(&backend)
                .storage_url(&storage_url)
                .namespace(&namespace)
                .progress(false)
                .build()
        };
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot build a `{backend}` session on {storage_url}: {e}");
                return ExitCode::FAILURE;
            }
        };
        sessions.push(session.clone());
        for case in all_cases() {
            let name = format!("{backend}::{store}::{}", case.name);
            let skip = case.skip_reason(&session);
            let ctx = Ctx {
                session: session.clone(),
                storage_url: storage_url.clone(),
                namespace: namespace.clone(),
                exe: exe.clone(),
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
    conclusion.exit_code()
}
