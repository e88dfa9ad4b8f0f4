//! The smoke test on real Azure: the `pi` job (64 Monte Carlo tasks) on an Azure Batch pool,
//! with Azure Blob storage. It runs when these are set, and is reported ignored (saying why)
//! otherwise:
//!
//! - `REDWOOD_AZURE_BATCH_URL` (`https://acct.westeurope.batch.azure.com`), and
//!   `REDWOOD_AZURE_BATCH_KEY` or, to sign in with Entra ID, `REDWOOD_AZURE_BATCH_AUTH`
//!   (`azure-cli`, `client-secret`, `managed-identity`, `workload-identity`, `auto`), plus
//!   `REDWOOD_AZURE_BATCH_ACCOUNT` when the URL does not say;
//! - `REDWOOD_AZURE_STORAGE` (`az://container/prefix`) and
//!   `REDWOOD_AZURE_STORAGE_CONNECTION_STRING`;
//! - optional: `REDWOOD_AZURE_POOL` (default `redwood-smoke`, created with one
//!   `Standard_D2s_v3` node and deleted afterwards unless `REDWOOD_AZURE_KEEP_POOL=1`),
//!   `REDWOOD_AZURE_VM_SIZE`.
//!
//! The nodes run this test binary, so it must run on the pool's Ubuntu 22.04 image: build on
//! a glibc no newer than 2.35, or for `x86_64-unknown-linux-musl`.

use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use redwood::Session;
use redwood::azure::PoolConfig;
use redwood::azure::{AzureBatchBackendBuilder, CredentialKind};
use redwood_conformance::functions::hits;

const REQUIRED: [&str; 3] = [
    "REDWOOD_AZURE_BATCH_URL",
    "REDWOOD_AZURE_STORAGE",
    "REDWOOD_AZURE_STORAGE_CONNECTION_STRING",
];

/// One of these says how to sign Batch requests.
const AUTH: [&str; 2] = ["REDWOOD_AZURE_BATCH_KEY", "REDWOOD_AZURE_BATCH_AUTH"];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn pi_on_azure() -> Result<(), Failed> {
    let fail = |e: redwood::Error| Failed::from(e.to_string());
    let url = env("REDWOOD_AZURE_BATCH_URL").unwrap_or_default();
    let account = env("REDWOOD_AZURE_BATCH_ACCOUNT").unwrap_or_else(|| {
        url.trim_start_matches("https://")
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string()
    });
    let pool = PoolConfig {
        id: env("REDWOOD_AZURE_POOL").unwrap_or_else(|| "redwood-smoke".into()),
        vm_size: env("REDWOOD_AZURE_VM_SIZE").unwrap_or_else(|| "Standard_D2s_v3".into()),
        dedicated: 1,
        keep: env("REDWOOD_AZURE_KEEP_POOL").is_some(),
        ..Default::default()
    };
    let builder = match env("REDWOOD_AZURE_BATCH_KEY") {
        Some(key) => AzureBatchBackendBuilder::new(&url, account, key),
        None => {
            let auth = env("REDWOOD_AZURE_BATCH_AUTH").unwrap_or_else(|| "auto".into());
            let credential = CredentialKind::parse(&auth)
                .and_then(|kind| kind.build())
                .map_err(fail)?;
            AzureBatchBackendBuilder::with_credential(&url, account, credential)
        }
    };
    let backend = builder.pool(pool).build().map_err(fail)?;
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
        let job = rw.map(hits, (0..TASKS).map(|i| (SAMPLES, i))).await?;
        job.reduce(0u64, |a, b| a + b).await
    }
    .await;
    let cleanup = rw.cleanup().await;
    let total = result.map_err(fail)?;
    cleanup.map_err(fail)?;
    let pi = 4.0 * total as f64 / (TASKS * SAMPLES) as f64;
    eprintln!("pi ≈ {pi:.6} on Azure Batch");
    if (pi - std::f64::consts::PI).abs() > 0.01 {
        return Err(format!("pi came out as {pi}").into());
    }
    Ok(())
}

fn main() -> ExitCode {
    redwood::worker_entry();
    let args = Arguments::from_args();
    let mut missing: Vec<&str> = REQUIRED.into_iter().filter(|v| env(v).is_none()).collect();
    if AUTH.iter().all(|v| env(v).is_none()) {
        missing.push("REDWOOD_AZURE_BATCH_KEY or REDWOOD_AZURE_BATCH_AUTH");
    }
    let trial = Trial::test("azure-batch::azure::pi_on_azure", || {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| Failed::from(e.to_string()))?;
        runtime.block_on(pi_on_azure())
    });
    let trial = if missing.is_empty() {
        trial
    } else {
        eprintln!(
            "skipping the real-Azure smoke test: set {} to run it",
            missing.join(", ")
        );
        trial.with_ignored_flag(true)
    };
    libtest_mimic::run(&args, vec![trial]).exit_code()
}
