//! Benchmark of the local backend: no-op `map` throughput at 10,000 tasks (median of 5), single
//! `call` round trip (median of 100), and the client's peak memory.
//!
//! `cargo run --release --example bench_local [-- --store file|memory] [--tasks N] [--runs R]
//! [--consume collect|reduce]` (`reduce` folds the results as they stream, holding none).

use std::time::{Duration, Instant};

use redwood::prelude::*;

/// Returns its input.
#[redwood::remote]
fn noop(x: u64) -> u64 {
    x
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The process's peak resident memory in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[redwood::main]
async fn main() -> redwood::Result<()> {
    let store = arg("--store").unwrap_or_else(|| "file".into());
    let tasks: u64 = arg("--tasks")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = arg("--runs").and_then(|s| s.parse().ok()).unwrap_or(5);
    let consume = arg("--consume").unwrap_or_else(|| "collect".into());
    if consume != "collect" && consume != "reduce" {
        return Err(redwood::Error::new(
            redwood::ErrorKind::InvalidInput,
            format!("--consume {consume}: expected collect or reduce"),
        ));
    }
    let dir = std::env::temp_dir().join(format!("redwood-bench-{}", std::process::id()));
    let url = match store.as_str() {
        "memory" => "memory://bench".to_string(),
        _ => format!("file://{}", dir.display()),
    };
    let rw = Session::builder()
        .storage_url(&url)
        .progress(false)
        .build()?;
    let workers = rw.backend().name().to_string();

    // Warm up: start the workers and let them hash their binary.
    rw.map(noop, 0..1000u64).await?.collect().await?;

    let mut rates = Vec::new();
    for run in 0..runs {
        let started = Instant::now();
        let job = rw.map(noop, 0..tasks).await?;
        if consume == "reduce" {
            let sum = job.reduce(0u64, |a, b| a.wrapping_add(b)).await?;
            assert_eq!(sum, tasks * tasks.saturating_sub(1) / 2);
        } else {
            let got = job.collect().await?;
            assert_eq!(got.len() as u64, tasks);
            assert!(got.iter().enumerate().all(|(i, v)| *v == i as u64));
        }
        let took = started.elapsed();
        let rate = tasks as f64 / took.as_secs_f64();
        eprintln!("run {run}: {tasks} tasks in {took:.2?} = {rate:.0} tasks/s");
        rates.push(rate);
    }
    let rss_after_maps = peak_rss_mib();

    // Back to back: includes waiting for the storage writes of earlier calls once too many
    // are under way (the file store pays a new inode per object).
    let mut trips = Vec::new();
    for i in 0..100u64 {
        let started = Instant::now();
        let v = rw.call(noop, i).await?;
        trips.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(v, i);
    }
    // Isolated: each call after the previous one's storage writes are done.
    let mut isolated = Vec::new();
    for i in 0..100u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let v = rw.call(noop, i).await?;
        isolated.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(v, i);
    }

    println!("backend {workers}, storage {store} ({url})");
    println!(
        "map throughput: median {:.0} tasks/s over {runs} runs of {tasks} no-op tasks, results \
         by {consume} (target >= 20000)",
        median(rates)
    );
    println!(
        "call round trip: median {:.3} ms over 100 back-to-back calls, {:.3} ms over 100 \
         isolated calls (target <= 1 ms)",
        median(trips),
        median(isolated)
    );
    if let Some(rss) = rss_after_maps {
        println!("client peak RSS after the maps: {rss:.1} MiB (target <= 100 MiB)");
    }
    rw.cleanup().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
