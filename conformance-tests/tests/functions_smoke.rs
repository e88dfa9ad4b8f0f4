//! The smoke test on a real Function App: the `pi` job (64 Monte Carlo tasks) and one `call`
//! on the `azure-functions` backend, with Azure Blob storage. It runs when these are set, and
//! is reported ignored (saying why) otherwise:
//!
//! - `REDWOOD_AZURE_FUNCTIONS_QUEUE` (the app's task queue) and
//!   `REDWOOD_AZURE_FUNCTIONS_QUEUE_CONNECTION_STRING` (its storage account);
//! - `REDWOOD_AZURE_STORAGE` (`az://container/prefix`) and
//!   `REDWOOD_AZURE_STORAGE_CONNECTION_STRING`;
//! - optional: `REDWOOD_AZURE_FUNCTIONS_TIMEOUT` (the app's `functionTimeout`, default 5m);
//!   `REDWOOD_AZURE_FUNCTIONS_URL` and `REDWOOD_AZURE_FUNCTIONS_KEY` to send small launches
//!   through the app's HTTP trigger (`invoke = "http"`).
//!
//! The app must run this test binary: write its folder with
//! `REDWOOD_WORKER=functions-app REDWOOD_FUNCTIONS_APP=fnapp REDWOOD_FUNCTIONS_QUEUE=<queue>
//! target/debug/deps/functions_smoke-<hash>` and deploy it as the README says (a Linux plan;
//! build on a glibc no newer than the plan's, or for `x86_64-unknown-linux-musl`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use redwood::Session;
use redwood::azure::{AzureFunctionsBackend, FunctionsSettings, Invoke};
use redwood_conformance::functions::hits;

const REQUIRED: [&str; 4] = [
    "REDWOOD_AZURE_FUNCTIONS_QUEUE",
    "REDWOOD_AZURE_FUNCTIONS_QUEUE_CONNECTION_STRING",
    "REDWOOD_AZURE_STORAGE",
    "REDWOOD_AZURE_STORAGE_CONNECTION_STRING",
];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn pi_on_functions() -> Result<(), Failed> {
    let fail = |e: redwood::Error| Failed::from(e.to_string());
    let mut settings = FunctionsSettings::new(
        env("REDWOOD_AZURE_FUNCTIONS_QUEUE").unwrap_or_default(),
        env("REDWOOD_AZURE_FUNCTIONS_QUEUE_CONNECTION_STRING").unwrap_or_default(),
    );
    if let Some(text) = env("REDWOOD_AZURE_FUNCTIONS_TIMEOUT") {
        settings.function_timeout = humantime::parse_duration(&text)
            .map_err(|e| format!("REDWOOD_AZURE_FUNCTIONS_TIMEOUT `{text}`: {e}"))?;
    } else {
        settings.function_timeout = Duration::from_secs(300);
    }
    if let Some(url) = env("REDWOOD_AZURE_FUNCTIONS_URL") {
        settings.invoke = Invoke::Http {
            url,
            key: env("REDWOOD_AZURE_FUNCTIONS_KEY"),
        };
    }
    let backend = AzureFunctionsBackend::new(settings).map_err(fail)?;
    let rw = Session::builder()
        .backend(Arc::new(backend))
        .storage_url(env("REDWOOD_AZURE_STORAGE").unwrap_or_default())
        .storage_option(
            "connection_string",
            env("REDWOOD_AZURE_STORAGE_CONNECTION_STRING").unwrap_or_default(),
        )
        .build()
        .map_err(fail)?;
    const TASKS: u64 = 64;
    const SAMPLES: u64 = 2_000_000;
    let result = async {
        let one = rw.call(hits, (1_000, 7)).await?;
        let job = rw.map(hits, (0..TASKS).map(|i| (SAMPLES, i))).await?;
        Ok::<_, redwood::Error>((one, job.reduce(0u64, |a, b| a + b).await?))
    }
    .await;
    let cleanup = rw.cleanup().await;
    let (one, total) = result.map_err(fail)?;
    cleanup.map_err(fail)?;
    if one > 1_000 {
        return Err(format!("a call counted {one} hits of 1000 samples").into());
    }
    let pi = 4.0 * total as f64 / (TASKS * SAMPLES) as f64;
    eprintln!("pi ≈ {pi:.6} on Azure Functions");
    if (pi - std::f64::consts::PI).abs() > 0.01 {
        return Err(format!("pi came out as {pi}").into());
    }
    Ok(())
}

fn main() -> ExitCode {
    redwood::worker_entry();
    let args = Arguments::from_args();
    let missing: Vec<&str> = REQUIRED.into_iter().filter(|v| env(v).is_none()).collect();
    let trial = Trial::test("azure-functions::azure::pi_on_functions", || {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| Failed::from(e.to_string()))?;
        runtime.block_on(pi_on_functions())
    });
    let trial = if missing.is_empty() {
        trial
    } else {
        eprintln!(
            "skipping the real-Azure Functions smoke test: set {} to run it",
            missing.join(", ")
        );
        trial.with_ignored_flag(true)
    };
    libtest_mimic::run(&args, vec![trial]).exit_code()
}
