//! `redwood-emulator`: a local Azure Batch service (one endpoint per account), an Azurite, and
//! (with `--functions`) a Functions host for a function app folder, for offline development.
//! Prints the endpoints and keys as environment lines to paste.

use std::process::ExitCode;

use base64::Engine;
use clap::Parser;
use redwood_emulator::azurite::Azurite;
use redwood_emulator::batch::{BatchAccount, BatchEmulator, BatchOptions};
use redwood_emulator::fault_proxy::{FaultConfig, FaultProxy};
use redwood_emulator::functions::{FunctionsHost, FunctionsHostOptions};
use sha2::Digest;

/// Runs a local Azure Batch service and an Azurite until Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "redwood-emulator", version, about)]
struct Args {
    /// A Batch account to emulate, as NAME or NAME=BASE64KEY (repeat for several accounts,
    /// e.g. one per region). Without a key, one is generated and printed.
    #[arg(
        long = "account",
        value_name = "NAME[=KEY]",
        default_value = "devbatch1"
    )]
    accounts: Vec<String>,

    /// Also accept `Authorization: Bearer TOKEN` for every account (for tests of the Entra ID
    /// path; real tokens are not validated).
    #[arg(long, value_name = "TOKEN")]
    bearer_token: Option<String>,

    /// Serve the Batch API over `https`, with a certificate made at start for 127.0.0.1 and
    /// localhost; its file is printed (and as REQUESTS_CA_BUNDLE, which Python's Azure SDKs
    /// read) for clients to trust. Azure SDKs send Entra ID tokens (--bearer-token) over
    /// `https` only.
    #[arg(long)]
    tls: bool,

    /// Do not start Azurite (storage comes from elsewhere).
    #[arg(long)]
    no_azurite: bool,

    /// Also run a Functions host for this function app folder (a custom handler's `host.json`
    /// and function folders; Redwood programs write theirs with
    /// `REDWOOD_WORKER=functions-app`). Its queues are in Azurite's first account unless
    /// `--functions-setting AzureWebJobsStorage=...` says otherwise.
    #[arg(long, value_name = "APP_DIR")]
    functions: Option<std::path::PathBuf>,

    /// An app setting of the function app, NAME=VALUE (repeat for several).
    #[arg(long = "functions-setting", value_name = "NAME=VALUE")]
    functions_settings: Vec<String>,

    /// The most instances of the function app at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    functions_instances: u32,
}

/// A random-looking account key for a session (sha256 of the time, pid and name).
fn generated_key(name: &str) -> String {
    let seed = format!(
        "{name}/{}/{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(seed.as_bytes()))
}

fn parse_account(spec: &str, bearer: &Option<String>) -> Result<BatchAccount, String> {
    let (name, key) = match spec.split_once('=') {
        Some((name, key)) => (name, key.to_string()),
        None => (spec, generated_key(spec)),
    };
    let valid_name = (3..=24).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !valid_name {
        return Err(format!(
            "--account `{name}`: a Batch account name has 3 to 24 lower-case letters and digits"
        ));
    }
    if base64::engine::general_purpose::STANDARD
        .decode(&key)
        .is_err()
    {
        return Err(format!("--account `{name}`: the key must be base64"));
    }
    Ok(BatchAccount {
        name: name.to_string(),
        key,
        bearer_token: bearer.clone(),
    })
}

/// Returns at Ctrl-C (SIGINT) or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let accounts: Result<Vec<_>, _> = args
        .accounts
        .iter()
        .map(|a| parse_account(a, &args.bearer_token))
        .collect();
    let accounts = match accounts {
        Ok(a) => a,
        Err(e) => {
            eprintln!("redwood-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    let options = BatchOptions { tls: args.tls };
    let batch = match BatchEmulator::start_with(accounts.clone(), options).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("redwood-emulator: cannot start the Batch API: {e}");
            return ExitCode::FAILURE;
        }
    };
    let azurite = if args.no_azurite {
        None
    } else {
        match Azurite::start().await {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("redwood-emulator: {e} (use --no-azurite to run without it)");
                return ExitCode::FAILURE;
            }
        }
    };
    println!("# redwood-emulator: paste these lines into your shell");
    if let Some(cert) = batch.tls_certificate() {
        // Python's azure-core (through requests) trusts what this names; other clients take
        // the file in their own way.
        println!("# the Batch API's TLS certificate: {}", cert.display());
        println!("REQUESTS_CA_BUNDLE={}", cert.display());
    }
    for (i, account) in accounts.iter().enumerate() {
        let url = batch.url(&account.name).unwrap_or_default();
        if i == 0 {
            // What the `azure-batch` backend reads when its region does not say.
            println!("REDWOOD_BATCH_URL={url}");
            println!("REDWOOD_BATCH_ACCOUNT={}", account.name);
            println!("REDWOOD_BATCH_KEY={}", account.key);
        }
        let upper = account.name.to_uppercase();
        println!("REDWOOD_BATCH_URL_{upper}={url}");
        println!("REDWOOD_BATCH_ACCOUNT_{upper}={}", account.name);
        println!("REDWOOD_BATCH_KEY_{upper}={}", account.key);
    }
    // Each Batch account (a region) gets its own Azurite account, reached through a proxy the
    // account's outage switch can turn to refusing (`POST /_emulator/outage`).
    let mut proxies = Vec::new();
    if let Some(az) = &azurite {
        for (i, account) in az.accounts().iter().enumerate() {
            let suffix = if i == 0 {
                String::new()
            } else {
                format!("_{}", i + 1)
            };
            println!(
                "AZURE_STORAGE_CONNECTION_STRING{suffix}=\"{}\"",
                az.connection_string(account)
            );
        }
        if accounts.len() > az.accounts().len() {
            eprintln!(
                "redwood-emulator: {} Batch accounts share {} storage accounts",
                accounts.len(),
                az.accounts().len()
            );
        }
        for (i, batch_account) in accounts.iter().enumerate() {
            let storage = &az.accounts()[i % az.accounts().len()];
            let proxy = match FaultProxy::start(az.blob_base(), FaultConfig::default()).await {
                Ok(p) => std::sync::Arc::new(p),
                Err(e) => {
                    eprintln!("redwood-emulator: cannot start a storage proxy: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = batch.put_storage_behind(&batch_account.name, proxy.clone()) {
                eprintln!("redwood-emulator: {e}");
                return ExitCode::FAILURE;
            }
            println!(
                "AZURE_STORAGE_CONNECTION_STRING_{}=\"{}\"",
                batch_account.name.to_uppercase(),
                az.connection_string_via(storage, &proxy.url())
            );
            proxies.push(proxy);
        }
    }
    let functions = match &args.functions {
        None => None,
        Some(dir) => {
            let mut options = FunctionsHostOptions::new(dir);
            options.max_instances = args.functions_instances;
            if let Some(az) = &azurite {
                options = options.setting(
                    "AzureWebJobsStorage",
                    az.connection_string(&az.accounts()[0]),
                );
            }
            for setting in &args.functions_settings {
                let Some((name, value)) = setting.split_once('=') else {
                    eprintln!(
                        "redwood-emulator: --functions-setting `{setting}` is not NAME=VALUE"
                    );
                    return ExitCode::from(2);
                };
                options = options.setting(name, value);
            }
            let storage = options.settings.get("AzureWebJobsStorage").cloned();
            match FunctionsHost::start(options).await {
                Ok(host) => {
                    println!("REDWOOD_FUNCTIONS_URL={}", host.url());
                    println!("REDWOOD_FUNCTIONS_MASTER_KEY={}", host.master_key());
                    if let Some(conn) = storage {
                        println!("REDWOOD_FUNCTIONS_QUEUE_CONNECTION_STRING=\"{conn}\"");
                    }
                    Some(host)
                }
                Err(e) => {
                    eprintln!("redwood-emulator: cannot start the Functions host: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    println!("# running until Ctrl-C or SIGTERM");
    stopped().await;
    // Stop as cleanly on SIGTERM as on Ctrl-C: Azurite, then the Batch endpoints, whose
    // tasks' processes are killed and whose node folders are removed.
    drop(functions);
    if let Some(az) = azurite {
        az.stop().await;
    }
    drop(batch);
    drop(proxies);
    ExitCode::SUCCESS
}
