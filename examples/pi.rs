//! The main job: estimate π by Monte Carlo with 64 remote tasks.
//!
//! `cargo run --release --example pi`

use std::time::Instant;

use redwood::prelude::*;

/// Counts random points of the unit square that fall inside the quarter circle.
#[redwood::remote]
fn hits(samples: u64, seed: u64) -> u64 {
    // xorshift64*: small, fast and good enough for a Monte Carlo estimate.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..samples)
        .filter(|_| {
            let (x, y) = (next(), next());
            x * x + y * y <= 1.0
        })
        .count() as u64
}

#[redwood::main]
async fn main() -> redwood::Result<()> {
    const TASKS: u64 = 64;
    const SAMPLES: u64 = 2_000_000;
    let started = Instant::now();
    let rw = Session::from_config()?;
    let job = rw.map(hits, (0..TASKS).map(|i| (SAMPLES, i))).await?;
    let job_id = job.id().to_string();
    let stats_job = job.clone();
    let total = job.reduce(0u64, |a, b| a + b).await?;
    let pi = 4.0 * total as f64 / (TASKS * SAMPLES) as f64;
    let stats = stats_job.stats();
    println!(
        "pi ≈ {pi:.6} (error {:.2e})",
        (pi - std::f64::consts::PI).abs()
    );
    println!(
        "{} tasks × {SAMPLES} samples in {:.2?} on backend `{}`",
        stats.total,
        started.elapsed(),
        rw.backend().name()
    );
    println!(
        "job {job_id}: {} succeeded, {} failed, {} retries, median task {:.1?}, storage {}",
        stats.succeeded,
        stats.failed,
        stats.retries,
        stats.median_task_time.unwrap_or_default(),
        rw.storage().url()
    );
    Ok(())
}
