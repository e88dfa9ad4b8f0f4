//! `redwood-emulator`: a local Azure Batch service (one endpoint per account), an Azurite, and
//! (with `--functions`) a Functions host for a function app folder, for offline development.
//! Prints the endpoints and keys as environment lines to paste.

use std::process::ExitCode;

use clap::Parser;
use redwood_emulator::cli::{EmulatorArgs, run};

/// Runs a local Azure Batch service and an Azurite until Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "redwood-emulator", version, about)]
struct Args {
    #[command(flatten)]
    emulator: EmulatorArgs,
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
    match run(args.emulator, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("redwood-emulator: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
