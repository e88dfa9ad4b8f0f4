//! `redwood`: a job's tasks, failures, logs and timeline read from storage alone (jobs outlive
//! the program that made them), and the emulator. It reads the same `Redwood.toml` profiles and
//! `REDWOOD_*` variables as the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cleanup;
mod format;
mod jobs;
mod logs;
mod show;
mod store;

/// Redwood's jobs from storage alone (what ran, where, how long, what failed and why), and the
/// emulator.
#[derive(Debug, Parser)]
#[command(name = "redwood", version, about, long_about = None)]
struct Cli {
    /// The profile of `Redwood.toml` to read (else `REDWOOD_PROFILE`, else `default`).
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// The storage URL to read, instead of the profile's (`file://…`, `az://…`, `s3://…`,
    /// `gs://…`); credentials come from the profile's `storage_options` or the provider's
    /// environment variables.
    #[arg(long, global = true, value_name = "URL")]
    storage: Option<String>,
    /// The namespace inside the storage, instead of the profile's.
    #[arg(long, global = true, value_name = "PREFIX")]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The jobs in the storage namespace: id, function, backend and regions, tasks (done,
    /// failed, unfinished), when submitted, how long, and their size in storage.
    Jobs {
        /// One JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One job: its stats, where its tasks ran (per region and per node or worker), retries and
    /// requeues, and each failed task with its error.
    Show {
        /// The job id (as `redwood jobs` lists it).
        job: String,
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The stored logs of a job's tasks (what a Batch task printed), and the stderr tail and
    /// error of each failed task.
    Logs {
        /// The job id.
        job: String,
        /// Only this task (its index in the job).
        #[arg(long, value_name = "N")]
        task: Option<u64>,
        /// Keep printing what arrives until every task has ended (Ctrl-C stops).
        #[arg(long)]
        follow: bool,
    },
    /// A picture of a job: one lane per worker or node (grouped by region), one bar per attempt
    /// coloured by how it ended, and the tasks done over time.
    Timeline {
        /// The job id.
        job: String,
        /// Where to write it: `.svg` or `.png`.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Marks a job cancelled: the program driving it stops its unfinished tasks within a few
    /// seconds, each ending `Cancelled`.
    Cancel {
        /// The job id.
        job: String,
    },
    /// Deletes the jobs that ended (or went silent) more than `--older-than` ago and the
    /// broadcast values stored before then that no remaining job reads; says what it deletes
    /// and how much storage that frees. Jobs whose tasks may still run are kept. With a cloud
    /// profile (`azure-batch`), also on each region's Batch account: the deleted jobs' Batch
    /// jobs, Batch jobs made for this storage and namespace whose job is no longer stored,
    /// and pools Redwood created (without `keep`) that no unfinished Batch job uses.
    Cleanup {
        /// How old: `7d`, `12h`, `30m`, `0s` (everything that is over).
        #[arg(long, value_name = "AGE", default_value = "7d", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Only say what it would delete.
        #[arg(long)]
        dry_run: bool,
    },
    /// Runs the emulator (a local Azure Batch service, an Azurite and, with `--functions`, a
    /// Functions host), as `redwood-emulator` does.
    Emulator(redwood_emulator::cli::EmulatorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(profile) = &cli.profile {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("REDWOOD_PROFILE", profile) };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redwood: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redwood: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let open = || store::open(cli.storage.as_deref(), cli.namespace.as_deref());
    let mut out = std::io::stdout();
    match cli.command {
        Command::Jobs { json } => jobs::run(&open()?, json, &mut out).await,
        Command::Show { job, json } => show::run(&open()?, &job, json, &mut out).await,
        Command::Logs { job, task, follow } => {
            logs::run(&open()?, &job, task, follow, &mut out).await
        }
        Command::Timeline { job, output } => {
            let storage = open()?;
            let stored = redwood_core::inspect::read_job(&storage, &job)
                .await
                .map_err(|e| e.to_string())?;
            redwood_timeline::render(&stored, &output).map_err(|e| e.to_string())?;
            eprintln!("wrote {}", output.display());
            Ok(())
        }
        Command::Cancel { job } => cleanup::cancel(&open()?, &job, &mut out).await,
        Command::Cleanup {
            older_than,
            dry_run,
        } => {
            let (storage, config) =
                store::open_with_config(cli.storage.as_deref(), cli.namespace.as_deref())?;
            cleanup::cleanup(&storage, &config, older_than, dry_run, &mut out).await
        }
        Command::Emulator(args) => redwood_emulator::cli::run(args, &mut out)
            .await
            .map_err(|f| f.message),
    }
}
