//! The emulator as a command (`redwood-emulator`, and `redwood emulator` of the `redwood` tool):
//! a local Azure Batch service (one endpoint per account), an Azurite, and (with
//! `--functions`) a Functions host for a function app folder, for offline development. It
//! writes the endpoints and keys as environment lines to paste.

use std::io::Write;

use base64::Engine;
use sha2::Digest;

use crate::azurite::Azurite;
use crate::batch::{BatchAccount, BatchEmulator, BatchOptions};
use crate::fault_proxy::{FaultConfig, FaultProxy};
use crate::functions::{FunctionsHost, FunctionsHostOptions};

/// Runs a local Azure Batch service and an Azurite until Ctrl-C.
#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// A Batch account to emulate, as NAME or NAME=BASE64KEY (repeat for several accounts,
    /// e.g. one per region). Without a key, one is generated and printed.
    #[arg(
        long = "account",
        value_name = "NAME[=KEY]",
        default_value = "devbatch1"
    )]
    pub accounts: Vec<String>,

    /// Also accept `Authorization: Bearer TOKEN` for every account (for tests of the Entra ID
    /// path; real tokens are not validated).
    #[arg(long, value_name = "TOKEN")]
    pub bearer_token: Option<String>,

    /// Serve the Batch API over `https`, with a certificate made at start for 127.0.0.1 and
    /// localhost; its file is printed (and as REQUESTS_CA_BUNDLE, which Python's Azure SDKs
    /// read) for clients to trust. Azure SDKs send Entra ID tokens (--bearer-token) over
    /// `https` only.
    #[arg(long)]
    pub tls: bool,

    /// Do not start Azurite (storage comes from elsewhere).
    #[arg(long)]
    pub no_azurite: bool,

    /// Also run a Functions host for this function app folder (a custom handler's `host.json`
    /// and function folders; Redwood programs write theirs with
    /// `REDWOOD_WORKER=functions-app`). Its queues are in Azurite's first account unless
    /// `--functions-setting AzureWebJobsStorage=...` says otherwise.
    #[arg(long, value_name = "APP_DIR")]
    pub functions: Option<std::path::PathBuf>,

    /// An app setting of the function app, NAME=VALUE (repeat for several).
    #[arg(long = "functions-setting", value_name = "NAME=VALUE")]
    pub functions_settings: Vec<String>,

    /// The most instances of the function app at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub functions_instances: u32,

    /// How long a node takes to start each Batch task (the real service's overhead per task,
    /// which benchmarks should see; `0s` starts tasks at once).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub task_start_latency: std::time::Duration,
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

/// Why the emulator stopped early: a message and the exit code to end with (2 for bad
/// arguments).
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// The exit code.
    pub code: u8,
}

impl Failure {
    fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }

    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }
}

/// Starts what `args` asks for, writes the environment lines to `out`, and runs until Ctrl-C
/// or SIGTERM.
pub async fn run(args: EmulatorArgs, out: &mut (dyn Write + Send)) -> Result<(), Failure> {
    let mut say = |line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let accounts: Result<Vec<_>, _> = args
        .accounts
        .iter()
        .map(|a| parse_account(a, &args.bearer_token))
        .collect();
    let accounts = match accounts {
        Ok(a) => a,
        Err(e) => return Err(Failure::usage(e)),
    };
    let options = BatchOptions {
        tls: args.tls,
        task_start_latency: args.task_start_latency,
    };
    let batch = match BatchEmulator::start_with(accounts.clone(), options).await {
        Ok(b) => b,
        Err(e) => return Err(Failure::new(format!("cannot start the Batch API: {e}"))),
    };
    let azurite = if args.no_azurite {
        None
    } else {
        match Azurite::start().await {
            Ok(a) => Some(a),
            Err(e) => {
                return Err(Failure::new(format!(
                    "{e} (use --no-azurite to run without it)"
                )));
            }
        }
    };
    say("# redwood-emulator: paste these lines into your shell".into());
    if let Some(cert) = batch.tls_certificate() {
        // Python's azure-core (through requests) trusts what this names; other clients take
        // the file in their own way.
        say(format!(
            "# the Batch API's TLS certificate: {}",
            cert.display()
        ));
        say(format!("REQUESTS_CA_BUNDLE={}", cert.display()));
    }
    for (i, account) in accounts.iter().enumerate() {
        let url = batch.url(&account.name).unwrap_or_default();
        if i == 0 {
            // What the `azure-batch` backend reads when its region does not say.
            say(format!("REDWOOD_BATCH_URL={url}"));
            say(format!("REDWOOD_BATCH_ACCOUNT={}", account.name));
            say(format!("REDWOOD_BATCH_KEY={}", account.key));
        }
        let upper = account.name.to_uppercase();
        say(format!("REDWOOD_BATCH_URL_{upper}={url}"));
        say(format!("REDWOOD_BATCH_ACCOUNT_{upper}={}", account.name));
        say(format!("REDWOOD_BATCH_KEY_{upper}={}", account.key));
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
            say(format!(
                "AZURE_STORAGE_CONNECTION_STRING{suffix}=\"{}\"",
                az.connection_string(account)
            ));
        }
        if accounts.len() > az.accounts().len() {
            tracing::warn!(
                "{} Batch accounts share {} storage accounts",
                accounts.len(),
                az.accounts().len()
            );
        }
        for (i, batch_account) in accounts.iter().enumerate() {
            let storage = &az.accounts()[i % az.accounts().len()];
            let proxy = match FaultProxy::start(az.blob_base(), FaultConfig::default()).await {
                Ok(p) => std::sync::Arc::new(p),
                Err(e) => {
                    return Err(Failure::new(format!("cannot start a storage proxy: {e}")));
                }
            };
            batch
                .put_storage_behind(&batch_account.name, proxy.clone())
                .map_err(Failure::new)?;
            say(format!(
                "AZURE_STORAGE_CONNECTION_STRING_{}=\"{}\"",
                batch_account.name.to_uppercase(),
                az.connection_string_via(storage, &proxy.url())
            ));
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
                    return Err(Failure::usage(format!(
                        "--functions-setting `{setting}` is not NAME=VALUE"
                    )));
                };
                options = options.setting(name, value);
            }
            let storage = options.settings.get("AzureWebJobsStorage").cloned();
            match FunctionsHost::start(options).await {
                Ok(host) => {
                    say(format!("REDWOOD_FUNCTIONS_URL={}", host.url()));
                    say(format!(
                        "REDWOOD_FUNCTIONS_MASTER_KEY={}",
                        host.master_key()
                    ));
                    if let Some(conn) = storage {
                        say(format!(
                            "REDWOOD_FUNCTIONS_QUEUE_CONNECTION_STRING=\"{conn}\""
                        ));
                    }
                    Some(host)
                }
                Err(e) => {
                    return Err(Failure::new(format!(
                        "cannot start the Functions host: {e}"
                    )));
                }
            }
        }
    };
    say("# running until Ctrl-C or SIGTERM".into());
    stopped().await;
    // Stop as cleanly on SIGTERM as on Ctrl-C: Azurite, then the Batch endpoints, whose
    // tasks' processes are killed and whose node folders are removed.
    drop(functions);
    if let Some(az) = azurite {
        az.stop().await;
    }
    drop(batch);
    drop(proxies);
    Ok(())
}
