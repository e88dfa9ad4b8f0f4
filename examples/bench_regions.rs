//! Benchmark of several regions on `redwood-emulator` (started here, with an Azurite): `map` of
//! N no-op tasks (default 10,000) on one region, on two regions of the same pool size each
//! (each with its own Batch account and storage account), and on two regions of which one is
//! taken down (its Batch API refuses) once half the tasks finished. Reports the wall time to
//! the last result, throughput, tasks moved and objects copied; the three set-ups alternate in
//! each round, medians over `--runs`.
//!
//! `cargo run --release --features azure --example bench_regions [-- --tasks N] [--runs R]
//!  [--nodes 1] [--slots 8] [--failover-ms 5000] [--task-ms 0]`
//!
//! Every emulated region runs on this machine: with no-op tasks its CPU is the limit, not the
//! regions' slots. `--task-ms` gives each task that many milliseconds of sleep, so the regions'
//! slots are the limit, as with real regions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redwood::prelude::*;
use redwood::{Region, Storage};
use redwood_emulator::azurite::Azurite;
use redwood_emulator::batch::outage::{Compute, Outage};
use redwood_emulator::batch::{BatchAccount, BatchEmulator};
use redwood_emulator::fault_proxy::{FaultConfig, FaultProxy};

/// Returns its input.
#[redwood::remote]
fn noop(x: u64) -> u64 {
    x
}

/// Returns its input after `ms` milliseconds (a task bound by the region's slots, not by
/// this machine's CPU).
#[redwood::remote]
fn nap(ms: u64, x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x
}

const ACCOUNTS: [(&str, &str); 2] = [
    ("west", "d2VzdC1iZW5jaC1rZXktZm9yLXRoZS1lbXVsYXRvcg=="),
    ("east", "ZWFzdC1iZW5jaC1rZXktZm9yLXRoZS1lbXVsYXRvcg=="),
];

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

/// One timed run: wall seconds, tasks moved, objects copied.
async fn run(
    rw: &Session,
    tasks: u64,
    task_ms: u64,
    outage: Option<&BatchEmulator>,
) -> redwood::Result<(f64, u64, u64)> {
    let started = Instant::now();
    let job = if task_ms == 0 {
        rw.map(noop, 0..tasks).await?
    } else {
        rw.map(nap, (0..tasks).map(|i| (task_ms, i))).await?
    };
    if let Some(emulator) = outage {
        job.wait(WaitFor::Fraction(0.5)).await?;
        let down = Outage {
            compute: Some(Compute::Refuse),
            storage: None,
        };
        emulator.set_outage("east", down).map_err(failed)?;
    }
    let got = job.collect().await;
    if let Some(emulator) = outage {
        let up = Outage {
            compute: Some(Compute::Up),
            storage: None,
        };
        emulator.set_outage("east", up).map_err(failed)?;
    }
    let got = got?;
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(got.len() as u64, tasks);
    assert!(got.iter().enumerate().all(|(i, &v)| v == i as u64));
    let stats = job.stats();
    let per_region: Vec<String> = stats
        .regions
        .iter()
        .map(|r| format!("{} {}", r.name, r.succeeded))
        .collect();
    if !per_region.is_empty() {
        println!("  tasks per region: {}", per_region.join(", "));
    }
    let moved = stats.regions.iter().map(|r| r.moved_out).sum();
    let copied = stats.regions.iter().map(|r| r.copied_objects).sum();
    Ok((wall, moved, copied))
}

#[redwood::main]
async fn main() -> redwood::Result<()> {
    let tasks = number("--tasks", 10_000);
    let runs = number("--runs", 3) as usize;
    let nodes = number("--nodes", 1) as u32;
    let slots = number("--slots", 8) as u32;
    let failover = Duration::from_millis(number("--failover-ms", 5_000));
    let task_ms = number("--task-ms", 0);
    let azurite = Azurite::start().await.map_err(failed)?;
    let accounts = ACCOUNTS
        .iter()
        .map(|(name, key)| BatchAccount {
            name: (*name).into(),
            key: (*key).into(),
            bearer_token: None,
        })
        .collect();
    let emulator = BatchEmulator::start(accounts).await.map_err(failed)?;
    // Region east's own storage account (its own Azurite, as another region's storage would
    // not share a server), behind a proxy its outage can switch off.
    let azurite_east = Azurite::start().await.map_err(failed)?;
    let proxy = Arc::new(
        FaultProxy::start(azurite_east.blob_base(), FaultConfig::default())
            .await
            .map_err(failed)?,
    );
    emulator
        .put_storage_behind("east", proxy.clone())
        .map_err(failed)?;
    let pid = std::process::id();
    let home_url = format!("az://bench-west-{pid}/runs");
    let home_options = [(
        "connection_string".to_string(),
        azurite.connection_string(&azurite.accounts()[0]),
    )];
    let east_options = [(
        "connection_string".to_string(),
        azurite_east.connection_string_via(&azurite_east.accounts()[0], &proxy.url()),
    )];
    let home = Storage::open_with(&home_url, &home_options.iter().cloned().collect())?;
    let east_store = Storage::open_with(
        &format!("az://bench-east-{pid}/runs"),
        &east_options.iter().cloned().collect(),
    )?;
    let region = |name: &str, key: &str, storage: Storage| -> redwood::Result<Region> {
        let url = emulator.url(name).unwrap_or_default();
        let pool = redwood::azure::PoolConfig {
            dedicated: nodes,
            task_slots_per_node: slots,
            ..Default::default()
        };
        let backend = redwood::azure::AzureBatchBackendBuilder::new(&url, name, key)
            .pool(pool)
            .progress(false)
            .build()?;
        Ok(Region::new(name, Arc::new(backend), storage))
    };
    let one = Session::builder()
        .storage(home.clone())
        .region(region(ACCOUNTS[0].0, ACCOUNTS[0].1, home.clone())?)
        .progress(false)
        .build()?;
    let two = Session::builder()
        .storage(home.clone())
        .region(region(ACCOUNTS[0].0, ACCOUNTS[0].1, home.clone())?)
        .region(region(ACCOUNTS[1].0, ACCOUNTS[1].1, east_store)?)
        .failover_after(failover)
        .progress(false)
        .build()?;
    // Warm up: the pools, the program uploads.
    one.map(noop, 0..10u64).await?.collect().await?;
    two.map(noop, 0..40u64).await?.collect().await?;

    let (mut singles, mut doubles, mut outages) = (vec![], vec![], vec![]);
    for round in 0..runs {
        let (wall, _, _) = run(&one, tasks, task_ms, None).await?;
        println!("round {round}: one region   {wall:7.2} s");
        singles.push(wall);
        let (wall, moved, copied) = run(&two, tasks, task_ms, None).await?;
        println!("round {round}: two regions  {wall:7.2} s ({moved} moved, {copied} copied)");
        doubles.push(wall);
        let (wall, moved, copied) = run(&two, tasks, task_ms, Some(&emulator)).await?;
        println!("round {round}: east down at 50% {wall:7.2} s ({moved} moved, {copied} copied)");
        outages.push((wall, moved, copied));
    }
    let single = median(singles);
    let double = median(doubles);
    let outage = median(outages.iter().map(|o| o.0).collect());
    let moved = median(outages.iter().map(|o| o.1 as f64).collect());
    println!(
        "{tasks} tasks of {task_ms} ms, pools of {nodes} node(s) × {slots} slots, medians of {runs}:\n  \
         one region      {single:7.2} s  {:8.0} tasks/s\n  \
         two regions     {double:7.2} s  {:8.0} tasks/s  ({:.2}× one region)\n  \
         east down @50%  {outage:7.2} s  {:8.0} tasks/s  ({moved:.0} tasks moved; failover \
         after {failover:?})",
        tasks as f64 / single,
        tasks as f64 / double,
        single / double,
        tasks as f64 / outage,
    );
    // The stored jobs go with Azurite (deleting 30,000 result objects one by one takes it many
    // minutes); the pools' nodes are released.
    for region in one.regions().iter().chain(two.regions()) {
        let _ = region
            .executor()
            .release(redwood::raw::backend::CleanupRequest::default())
            .await;
    }
    drop(proxy);
    azurite.stop().await;
    azurite_east.stop().await;
    Ok(())
}
