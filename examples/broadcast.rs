//! A 200 MB table broadcast once and read by 16 tasks; each worker process fetches it once.
//!
//! `cargo run --release --example broadcast`

use std::time::Instant;

use redwood::prelude::*;

/// Sums one sixteenth of the broadcast table.
#[redwood::remote]
fn slice_sum(table: Broadcast<Vec<f64>>, part: u64, parts: u64) -> Result<f64, redwood::Error> {
    let table = table.get()?;
    let len = table.len() as u64;
    let (start, end) = (len * part / parts, len * (part + 1) / parts);
    Ok(table[start as usize..end as usize].iter().sum())
}

#[redwood::main]
async fn main() -> redwood::Result<()> {
    const ENTRIES: u64 = 25_000_000; // 200 MB of f64 (8 bytes each, encoded as is)
    const PARTS: u64 = 16;
    let rw = Session::from_config()?;
    let table: Vec<f64> = (0..ENTRIES).map(|i| i as f64).collect();

    let started = Instant::now();
    let shared = rw.broadcast(&table).await?;
    let stored = started.elapsed();
    println!(
        "broadcast {} MB as {} in {stored:.2?}",
        shared.len() / 1_000_000,
        &shared.sha256()[..12]
    );

    let started = Instant::now();
    let job = rw
        .map(slice_sum, (0..PARTS).map(|p| (shared.clone(), p, PARTS)))
        .await?;
    let total = job.reduce(0.0f64, |a, b| a + b).await?;
    // Whole numbers below 2^53: the sum is exact.
    let want = (ENTRIES * (ENTRIES - 1) / 2) as f64;
    assert_eq!(total, want, "sum of the table");
    println!(
        "{PARTS} tasks read it and summed to {total} (correct) in {:.2?}",
        started.elapsed()
    );
    Ok(())
}
