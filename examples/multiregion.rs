//! One program, two regions: a job's tasks go where there is room, the broadcast table is
//! copied once into each region's store, and a second job pinned to the other region reads the
//! first job's results there (copied over by Redwood, the way the original's `migrate` did by
//! hand).
//!
//! Offline (two local regions, each with its own worker pool and folder):
//! `cargo run --release --example multiregion`
//!
//! On two emulated Azure regions: see "Several regions" in the README
//! (`REDWOOD_PROFILE=emulator-2 cargo run --release --features azure --example multiregion`).

use std::sync::Arc;

use redwood::prelude::*;
use redwood::{Region, Storage};

/// Element `i` of the table times `i`.
#[redwood::remote]
fn scaled(table: Broadcast<Vec<u64>>, i: u64) -> Result<u64, redwood::Error> {
    let table = table.get()?;
    Ok(table[i as usize % table.len()] * i)
}

/// One more than an earlier result, read where this task runs.
#[redwood::remote]
fn plus_one(earlier: ResultRef<u64>) -> Result<u64, redwood::Error> {
    Ok(earlier.get()? + 1)
}

/// The configured session when its profile lists several regions; else two local regions.
fn session() -> redwood::Result<Session> {
    let configured = Session::from_config()?;
    if configured.regions().len() >= 2 {
        return Ok(configured);
    }
    let region = |name: &str| -> redwood::Result<Region> {
        let workers = redwood::local::LocalBackend::builder().workers(2).build()?;
        let store = Storage::open(&format!("file://.redwood/regions/{name}"))?;
        Ok(Region::new(name, Arc::new(workers), store))
    };
    Session::builder()
        .storage_url("file://.redwood/regions/home")
        .region(region("west")?)
        .region(region("east")?)
        .build()
}

#[redwood::main]
async fn main() -> redwood::Result<()> {
    const TASKS: u64 = 2_000;
    let rw = session()?;
    let names: Vec<&str> = rw.regions().iter().map(Region::name).collect();
    println!("regions: {}", names.join(", "));

    let table = rw.broadcast(&(1..=1_000u64).collect::<Vec<_>>()).await?;
    let job = rw
        .map(scaled, (0..TASKS).map(|i| (table.clone(), i)))
        .await?;
    let values = job.collect().await?;
    let want: u64 = (0..TASKS).map(|i| (i % 1_000 + 1) * i).sum();
    assert_eq!(values.iter().sum::<u64>(), want, "sum of the results");
    println!("{TASKS} tasks, sum {want} (correct)");
    for r in &job.stats().regions {
        println!(
            "  {}: {} tasks, {} object(s) copied in ({} bytes)",
            r.name, r.succeeded, r.copied_objects, r.copied_bytes
        );
    }

    // The second job runs in the last region only: the results it reads are copied there.
    let last = names[names.len() - 1].to_string();
    let refs: Vec<_> = job.refs().await?.into_iter().take(100).collect();
    let chained = rw
        .map_with(plus_one, refs, TaskOptions::new().region(&last))
        .await?;
    let next = chained.collect().await?;
    assert_eq!(
        next.iter().sum::<u64>(),
        values[..100].iter().sum::<u64>() + 100
    );
    let stats = chained.stats();
    let copied: u64 = stats.regions.iter().map(|r| r.copied_objects).sum();
    println!("100 chained tasks pinned to {last}: correct; {copied} result object(s) copied there");
    rw.cleanup().await?;
    Ok(())
}
