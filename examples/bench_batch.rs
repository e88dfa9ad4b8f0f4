//! Benchmark of the azure-batch backend against `redwood-emulator` (started here, with an
//! Azurite): `map` of N no-op tasks (default 10,000). Reports the submit time (until `map`
//! returns: inputs stored, Batch job made, every task added), the Batch requests it took, the
//! list requests per completed task, and the time to the last result; medians over `--runs`.
//!
//! Microsoft's `azure-batch` Python SDK adds the same number of tasks with
//! `create_task_collection` (100 a request, one request at a time and 8 at a time) to the same
//! emulator, under the same two conditions as Redwood's submit:
//! - idle: nothing else runs while the tasks are added (Redwood: a job limited to one running
//!   task, cancelled once submitted; Python: a pool without nodes);
//! - busy: the tasks start on the pool's nodes while later ones are still being added (both on
//!   the same pool; Python's tasks run `/bin/true`, Redwood's the no-op function).
//!
//! `cargo run --release --features azure --example bench_batch [-- --tasks N] [--runs R]
//!  [--nodes 2] [--slots 16] [--start-latency-ms 1000] [--pack auto|N] [--task-ms MS]
//!  [--workers per-task|warm] [--busy-only] [--python PATH]`
//!
//! `--pack` packs tasks per Batch task (`auto`, the default, or N; `1`: one Batch task per
//! Redwood task); `--task-ms` makes each task sleep that long (with the ideal time, work /
//! slots, to compare); `--workers warm` runs tasks on warm workers (long-lived Batch tasks
//! taking groups from a queue) instead; `--busy-only` measures only the time to the last result.
//!
//! The emulator's nodes take `--start-latency-ms` to start each Batch task (default: the
//! emulator's `REALISTIC_TASK_START_LATENCY`, as on the real service), so the figures predict
//! the cloud; `0` measures Redwood and the emulator alone.
//!
//! The Python SDK comes from the virtualenv the emulator's tests make
//! (`cargo test -p redwood-emulator --test python_sdk`), or `--python`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redwood::prelude::*;
use redwood::raw::executor::Executor;
use redwood_emulator::azurite::Azurite;
use redwood_emulator::batch::{
    BatchAccount, BatchEmulator, BatchOptions, REALISTIC_TASK_START_LATENCY,
};

/// Returns its input.
#[redwood::remote]
fn noop(x: u64) -> u64 {
    x
}

/// Sleeps `ms`, then returns `x`.
#[redwood::remote]
fn nap(ms: u64, x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x
}

const ACCOUNT: &str = "bench";
const KEY: &str = "YmVuY2gta2V5LWZvci10aGUtZW11bGF0b3Itb25seQ==";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number(name: &str, default: u64) -> u64 {
    arg(name).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The Python of the emulator tests' `azure-batch` virtualenv.
fn sdk_python() -> Option<PathBuf> {
    if let Some(p) = arg("--python") {
        return Some(PathBuf::from(p));
    }
    let root = redwood_emulator::azurite::cache_root();
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("azure-batch-sdk-"))
                && p.extension().is_none()
        })
        .map(|p| p.join("bin/python"))
        .find(|p| p.is_file())
}

const PYTHON_BENCH: &str = r#"
import os, sys, time
from concurrent.futures import ThreadPoolExecutor
from azure.batch import BatchClient, models
from azure.core.credentials import AzureNamedKeyCredential

n = int(sys.argv[1]); in_flight = int(sys.argv[2]); job = sys.argv[3]; pool_id = sys.argv[4]
client = BatchClient(endpoint=os.environ["REDWOOD_BATCH_URL"],
                     credential=AzureNamedKeyCredential(os.environ["REDWOOD_BATCH_ACCOUNT"], os.environ["REDWOOD_BATCH_KEY"]))
try:
    client.create_pool(models.BatchPoolCreateOptions(id="idle", vm_size="standard_d2s_v3", target_dedicated_nodes=0,
        virtual_machine_configuration=models.VirtualMachineConfiguration(
            image_reference=models.BatchVmImageReference(publisher="canonical", offer="ubuntu-24_04-lts", sku="server", version="latest"),
            node_agent_sku_id="batch.node.ubuntu 24.04")))
except Exception:
    pass  # made by an earlier run
client.create_job(models.BatchJobCreateOptions(id=job, pool_info=models.BatchPoolInfo(pool_id=pool_id),
    all_tasks_complete_mode="terminatejob"))
groups = [models.BatchTaskGroup(task_values=[
            models.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true")
            for i in range(start, min(start + 100, n))]) for start in range(0, n, 100)]
started = time.perf_counter()
def add(group):
    client.create_task_collection(job, group)
if in_flight == 1:
    for g in groups:
        add(g)
else:
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(add, groups))
print(f"{time.perf_counter() - started:.4f}")
if pool_id != "idle":  # the idle pool has no nodes: its jobs just stay
    while client.get_job(job).state != "completed":  # let its tasks finish before the next run
        time.sleep(0.2)
"#;

async fn python_submit(
    python: &PathBuf,
    url: &str,
    tasks: u64,
    in_flight: u32,
    job: &str,
    pool: &str,
) -> Result<f64, String> {
    let out = tokio::process::Command::new(python)
        .args([
            "-c",
            PYTHON_BENCH,
            &tasks.to_string(),
            &in_flight.to_string(),
            job,
            pool,
        ])
        .env("REDWOOD_BATCH_URL", url)
        .env("REDWOOD_BATCH_ACCOUNT", ACCOUNT)
        .env("REDWOOD_BATCH_KEY", KEY)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("unexpected output: {e}"))
}

#[redwood::main]
async fn main() -> redwood::Result<()> {
    let tasks = number("--tasks", 10_000);
    let runs = number("--runs", 3) as usize;
    let nodes = number("--nodes", 2) as u32;
    let slots = number("--slots", 16) as u32;
    let azurite = Azurite::start()
        .await
        .map_err(|e| redwood::Error::new(redwood::ErrorKind::Storage, e.to_string()))?;
    let latency = Duration::from_millis(number(
        "--start-latency-ms",
        REALISTIC_TASK_START_LATENCY.as_millis() as u64,
    ));
    let options = BatchOptions {
        task_start_latency: latency,
        ..Default::default()
    };
    let emulator = BatchEmulator::start_with(
        vec![BatchAccount {
            name: ACCOUNT.into(),
            key: KEY.into(),
            bearer_token: None,
        }],
        options,
    )
    .await
    .map_err(|e| redwood::Error::new(redwood::ErrorKind::Backend, e.to_string()))?;
    let url = emulator.url(ACCOUNT).unwrap_or_default();
    let pool = redwood::azure::PoolConfig {
        dedicated: nodes,
        task_slots_per_node: slots,
        ..Default::default()
    };
    let pool_id = pool.id.clone();
    let mut builder = redwood::azure::AzureBatchBackendBuilder::new(&url, ACCOUNT, KEY)
        .pool(pool)
        .progress(false);
    let pack = arg("--pack").unwrap_or_else(|| "auto".into());
    if pack != "auto" {
        builder = builder.pack(pack.parse().unwrap_or(1));
    }
    let workers = arg("--workers").unwrap_or_else(|| "per-task".into());
    let pack = match workers.as_str() {
        "per-task" => pack,
        "warm" => {
            builder = builder.warm_workers(Duration::from_secs(120));
            "warm workers".to_string()
        }
        other => {
            return Err(redwood::Error::new(
                redwood::ErrorKind::Config,
                format!("--workers must be `per-task` or `warm`, not `{other}`"),
            ));
        }
    };
    let backend = Arc::new(builder.build()?);
    let task_ms = number("--task-ms", 0);
    let busy_only = std::env::args().any(|a| a == "--busy-only");
    let rw = Session::builder()
        .backend(backend.clone())
        .storage_url(format!("az://bench{}/runs", std::process::id()))
        .storage_option(
            "connection_string",
            azurite.connection_string(&azurite.accounts()[0]),
        )
        .progress(false)
        .build()?;
    // Warm up: the pool, the program upload.
    rw.map(noop, 0..10u64).await?.collect().await?;

    // Idle: one task at a time may run; the job is cancelled once every task is added.
    let mut idle = Vec::new();
    for run in 0..if busy_only { 0 } else { runs } {
        let started = Instant::now();
        let job = rw
            .map_with(noop, 0..tasks, TaskOptions::new().concurrency(1))
            .await?;
        let submit = started.elapsed().as_secs_f64();
        job.cancel().await?;
        println!("idle run {run}: submit {submit:.3} s");
        idle.push(submit);
    }

    // Busy: tasks run on every slot while later ones are added; wait for all results.
    let (mut submits, mut totals, mut requests, mut polls) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let before = backend.client().requests_sent();
        let polls_before = backend.poll_requests();
        let started = Instant::now();
        let job = if task_ms == 0 {
            rw.map(noop, 0..tasks).await?
        } else {
            rw.map(nap, (0..tasks).map(|i| (task_ms, i))).await?
        };
        let submit = started.elapsed();
        let sent = backend.client().requests_sent() - before;
        let got = job.collect().await?;
        let total = started.elapsed();
        assert_eq!(got.len() as u64, tasks);
        assert!(got.iter().enumerate().all(|(i, v)| *v == i as u64));
        let poll = backend.poll_requests() - polls_before;
        println!(
            "busy run {run}: submit {:.3} s ({sent} Batch requests), all {tasks} results in \
             {:.1} s ({:.0} tasks/s), {poll} list requests ({:.4} per task)",
            submit.as_secs_f64(),
            total.as_secs_f64(),
            tasks as f64 / total.as_secs_f64(),
            poll as f64 / tasks as f64
        );
        submits.push(submit.as_secs_f64());
        totals.push(total.as_secs_f64());
        requests.push(sent as f64);
        polls.push(poll as f64 / tasks as f64);
    }
    let ideal = (tasks * task_ms) as f64 / 1000.0 / f64::from(nodes * slots);
    if task_ms > 0 {
        println!(
            "{tasks} tasks of {task_ms} ms, pack {pack}: median {:.2} s to the last result; \
             ideal (work / slots) {ideal:.2} s: {:.2}x",
            median(totals.clone()),
            median(totals.clone()) / ideal
        );
    }
    if busy_only {
        println!(
            "redwood azure-batch, {tasks} tasks, pack {pack}, {nodes} nodes x {slots} slots, task \
             start latency {latency:?}: median {:.2} s to the last result ({:.0} tasks/s)",
            median(totals.clone()),
            tasks as f64 / median(totals.clone())
        );
        let _ = backend
            .release(redwood::raw::backend::CleanupRequest::default())
            .await;
        azurite.stop().await;
        return Ok(());
    }
    let (idle_submit, busy_submit) = (median(idle), median(submits));
    println!(
        "redwood azure-batch, {tasks} no-op tasks, {nodes} nodes x {slots} slots, task start \
         latency {latency:?}: median submit \
         {idle_submit:.3} s idle, {busy_submit:.3} s busy; {:.0} Batch requests to submit, \
         {:.4} list requests per completed task, {:.1} s to the last result",
        median(requests),
        median(polls),
        median(totals)
    );

    match sdk_python() {
        None => println!(
            "Python comparison skipped: no azure-batch SDK virtualenv (run `cargo test -p \
             redwood-emulator --test python_sdk` once, or pass --python)"
        ),
        Some(python) => {
            let conditions = [
                ("idle", "idle", idle_submit),
                ("busy", pool_id.as_str(), busy_submit),
            ];
            for (condition, pool, ours) in conditions {
                for in_flight in [1u32, 8] {
                    let mut times = Vec::new();
                    for run in 0..runs {
                        let job = format!("py-{condition}-{in_flight}-{run}");
                        match python_submit(&python, &url, tasks, in_flight, &job, pool).await {
                            Ok(t) => times.push(t),
                            Err(e) => {
                                println!("Python SDK run failed: {e}");
                                break;
                            }
                        }
                    }
                    if !times.is_empty() {
                        let t = median(times);
                        println!(
                            "python azure-batch SDK create_task_collection, {condition}, \
                             {in_flight} in flight: median {t:.3} s for {tasks} tasks; redwood \
                             ({ours:.3} s) is {:.2}x faster",
                            t / ours
                        );
                    }
                }
            }
        }
    }
    // Release the Batch jobs and the pool; the stored results go away with this Azurite
    // (deleting 30,000 blobs one by one would take it many minutes).
    let _ = backend
        .release(redwood::raw::backend::CleanupRequest::default())
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    azurite.stop().await;
    Ok(())
}
