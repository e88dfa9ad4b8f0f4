//! Benchmark of the azure-functions backend against the emulator's Functions host (started
//! here, with an Azurite; this program is the app's handler): the cold start of one `call`
//! from zero instances, and `map` of N no-op tasks (default 10,000): tasks per second, queue
//! requests per task (counted by a pass-through proxy in front of the queue service, the host's
//! and the client's together), invocations and instances used; the latency of a warm `call`
//! (median of 20 in a row); medians over `--runs`. `--http` sends small launches through the
//! app's HTTP trigger (`invoke = "http"`) instead of the queue.
//!
//! `cargo run --release --features azure --example bench_functions [-- --tasks N] [--runs R]
//!  [--instances 4] [--workers 2] [--http]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use redwood::azure::{AppOptions, AzureFunctionsBackend, FunctionsSettings, Invoke, write_app};
use redwood::prelude::*;
use redwood_emulator::azurite::Azurite;
use redwood_emulator::fault_proxy::{FaultConfig, FaultProxy};
use redwood_emulator::functions::{FunctionsHost, FunctionsHostOptions};

/// Returns its input.
#[redwood::remote]
fn noop(x: u64) -> u64 {
    x
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn number(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn failed(e: impl std::fmt::Display) -> redwood::Error {
    redwood::Error::new(redwood::ErrorKind::Backend, e.to_string())
}

#[redwood::main]
async fn main() -> redwood::Result<()> {
    let tasks = number("--tasks", 10_000);
    let runs = number("--runs", 3) as usize;
    let instances = number("--instances", 4) as u32;
    let workers = number("--workers", 2);
    let azurite = Azurite::start().await.map_err(failed)?;
    let account = azurite.accounts()[0].clone();
    let queue_endpoint = azurite
        .queue_endpoint(&account.name)
        .ok_or_else(|| failed("this Azurite has no queue service"))?;
    let queue_base = queue_endpoint.trim_end_matches(&format!("/{}", account.name));
    // A pass-through proxy: it counts the queue requests.
    let proxy = FaultProxy::start(queue_base, FaultConfig::default())
        .await
        .map_err(failed)?;
    let queue_connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};QueueEndpoint={}/{}",
        account.name,
        account.key,
        proxy.url(),
        account.name
    );
    let dir = tempfile::tempdir().map_err(failed)?;
    let app = AppOptions {
        queue: "bench-tasks".into(),
        ..AppOptions::default()
    };
    write_app(dir.path(), &app)?;
    let mut options = FunctionsHostOptions::new(dir.path())
        .setting("AzureWebJobsStorage", &queue_connection)
        .setting("REDWOOD_WORKERS", workers.to_string());
    options.max_instances = instances;
    options.idle_timeout = Duration::from_secs(1);
    let host = FunctionsHost::start(options).await.map_err(failed)?;
    let mut settings = FunctionsSettings::new(&app.queue, &queue_connection);
    settings.poll_interval = Duration::from_millis(20);
    let http = std::env::args().any(|a| a == "--http");
    if http {
        settings.invoke = Invoke::Http {
            url: host.url().to_string(),
            key: Some(host.master_key().to_string()),
        };
    }
    let rw = Session::builder()
        .backend(Arc::new(AzureFunctionsBackend::new(settings)?))
        .storage_url(format!("az://benchfn{}/runs", std::process::id()))
        .storage_option("connection_string", azurite.connection_string(&account))
        .progress(false)
        .build()?;

    // Cold starts: one call with no instance running; then warm calls in a row.
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let idle = Instant::now();
        while host.status().instances > 0 && idle.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        let v = rw.call(noop, 7).await?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(v, 7);
        let mut calls = Vec::new();
        for i in 0..20 {
            let started = Instant::now();
            assert_eq!(rw.call(noop, i).await?, i);
            calls.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let calls = median(calls);
        println!("cold start {run}: {took:.0} ms; a warm call {calls:.1} ms");
        cold.push(took);
        warm.push(calls);
    }

    // Throughput.
    let (mut rates, mut per_task, mut invocations, mut peaks) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let requests_before = proxy.stats().forwarded;
        let invocations_before = host.status().invocations;
        let started = Instant::now();
        let got = rw.map(noop, 0..tasks).await?.collect().await?;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(got.len() as u64, tasks);
        let requests = proxy.stats().forwarded - requests_before;
        let status = host.status();
        let rate = tasks as f64 / secs;
        let per = requests as f64 / tasks as f64;
        let calls = status.invocations - invocations_before;
        println!(
            "run {run}: {tasks} tasks in {secs:.2} s = {rate:.0} tasks/s; {requests} queue \
             requests ({per:.3} a task); {calls} invocations; {} instances at most",
            status.peak_instances
        );
        rates.push(rate);
        per_task.push(per);
        invocations.push(calls as f64);
        peaks.push(f64::from(status.peak_instances));
    }
    println!(
        "median of {runs} ({}): cold start {:.0} ms; warm call {:.1} ms; {:.0} tasks/s; \
         {:.3} queue requests a task; {:.0} invocations; {:.0} instances",
        if http {
            "invoke = http"
        } else {
            "invoke = queue"
        },
        median(cold),
        median(warm),
        median(rates),
        median(per_task),
        median(invocations),
        median(peaks)
    );
    rw.cleanup_all().await?;
    Ok(())
}
