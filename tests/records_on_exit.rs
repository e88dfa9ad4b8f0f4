//! A program that returns from `#[redwood::main]` right after a `call` (or a `map` read by
//! `results()`, which does not wait for the events record) loses no record: main's return waits
//! for the writes, and nothing is logged as lost. The same with `#[tokio::main]`-style code
//! that ends with `Session::close`.
//!
//! Runs without the test harness: this binary is the program under test (run as a child, a
//! few times over, since the loss was a race) and the test that checks what it stored.

use std::path::Path;
use std::process::Command;

use futures::StreamExt;
use redwood::prelude::*;

#[redwood::remote]
fn square(x: u64) -> u64 {
    x * x
}

const ROLE: &str = "REDWOOD_RECORDS_TEST_ROLE";
const STORE: &str = "REDWOOD_RECORDS_TEST_STORE";
const RUNS: usize = 4;

#[redwood::main]
async fn main() -> redwood::Result<()> {
    match std::env::var(ROLE).as_deref() {
        Ok("call") => program(false).await,
        Ok("close") => program(true).await,
        _ => {
            check_runs();
            Ok(())
        }
    }
}

/// The program under test: a call and a streamed map, then it returns at once.
async fn program(close: bool) -> redwood::Result<()> {
    let store = std::env::var(STORE).expect("the store folder");
    let rw = Session::builder()
        .storage_url(format!("file://{store}"))
        .workers(1)
        .progress(false)
        .build()?;
    assert_eq!(rw.call(square, 7).await?, 49);
    let job = rw.map(square, 0..3u64).await?;
    let mut results = job.results();
    while let Some((_, r)) = results.next().await {
        r?;
    }
    if close {
        rw.close().await?;
    }
    Ok(())
}

fn check_runs() {
    let exe = std::env::current_exe().expect("this test's path");
    let base = std::env::temp_dir().join(format!("redwood-records-{}", std::process::id()));
    for run in 0..RUNS {
        for role in ["call", "close"] {
            let store = base.join(format!("{role}-{run}"));
            std::fs::create_dir_all(&store).expect("store folder");
            let out = Command::new(&exe)
                .env(ROLE, role)
                .env(STORE, &store)
                .env("RUST_LOG", "warn")
                .output()
                .expect("run the program");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{role} run {run} failed: {stderr}");
            assert!(
                !stderr.contains("WARN"),
                "{role} run {run} warned: {stderr}"
            );
            check_records(&store, role, run);
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    println!("records_on_exit: {RUNS} runs each of `call` and `close`, every record stored");
}

/// Both jobs are stored whole: the call's record; the map's manifest, input, results and events.
fn check_records(store: &Path, role: &str, run: usize) {
    let jobs = store.join("jobs");
    let mut seen = 0;
    for job in std::fs::read_dir(&jobs).expect("the jobs folder") {
        let job = job.expect("a job folder").path();
        let has = |name: &str| job.join(name).exists();
        seen += 1;
        if has("call") {
            // A call's record is one object: manifest, input and outcome.
            let bytes = std::fs::read(job.join("call")).expect("the call record");
            redwood::raw::call_record::read_call_record(&bytes.into())
                .unwrap_or_else(|e| panic!("{role} run {run}: the call record: {e}"));
            continue;
        }
        let results = std::fs::read_dir(job.join("results"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(
            has("job.json") && has("input") && results > 0,
            "{role} run {run}: job {} is incomplete",
            job.display()
        );
        let manifest = std::fs::read_to_string(job.join("job.json")).expect("job.json");
        if manifest.contains("\"task_count\": 3") {
            assert!(
                has("events"),
                "{role} run {run}: the map has no events record"
            );
        }
    }
    assert_eq!(seen, 2, "{role} run {run}: {seen} jobs stored, want 2");
}
