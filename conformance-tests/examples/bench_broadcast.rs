//! Benchmark: a 1 GiB broadcast through Azurite, against raw object_store put/get of the same
//! bytes in the same run.
//!
//! `cargo run --release -p redwood-conformance --example bench_broadcast [-- --mib 1024 --runs 3]`
//!
//! Raw: a multipart put (16 MiB parts, 8 in flight) and a get of the object. Redwood:
//! `Session::broadcast` (encode, sha256, upload) and a `map` of 16 tasks that each `get()` the
//! value (each worker process fetches it once). The ratios compare raw time with Redwood time.

use std::time::Instant;

use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use redwood::prelude::*;
use redwood_emulator::azurite::Azurite;
use serde_bytes::ByteBuf;

/// Reads the broadcast bytes and returns their length plus one byte, so the read is real.
#[redwood::remote]
fn read_all(data: Broadcast<ByteBuf>, i: u64) -> Result<u64, redwood::Error> {
    let bytes = data.get()?;
    Ok(bytes.len() as u64 + bytes[(i as usize * 7919) % bytes.len()] as u64)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[redwood::main]
async fn main() -> redwood::Result<()> {
    let mib: usize = arg("--mib").and_then(|s| s.parse().ok()).unwrap_or(1024);
    let runs: usize = arg("--runs").and_then(|s| s.parse().ok()).unwrap_or(3);
    let azurite = Azurite::start()
        .await
        .map_err(|e| redwood::Error::new(redwood::ErrorKind::Backend, e.to_string()))?;
    let conn = azurite.connection_string(&azurite.accounts()[0]);
    let rw = Session::builder()
        .storage_url("az://bench/broadcast")
        .storage_option("connection_string", conn)
        .progress(false)
        .build()?;
    let store = rw.storage().store().clone();
    // Creates the container (and warms up the workers) before anything is timed.
    rw.broadcast(&ByteBuf::from(vec![1u8; 16])).await?;

    let len = mib << 20;
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = chunk.len();
        chunk.copy_from_slice(&x.to_le_bytes()[..n]);
    }
    let gib = len as f64 / (1u64 << 30) as f64;
    println!(
        "object: {mib} MiB; Azurite {} at {}",
        azurite.how(),
        azurite.blob_base()
    );

    let (mut raw_put, mut raw_get, mut bc_put, mut bc_read) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        // Raw object_store: multipart put, then get.
        let key = Path::from(format!("raw/run-{run}"));
        let bytes = bytes::Bytes::from(data.clone());
        let t = Instant::now();
        let upload = store.put_multipart(&key).await.map_err(io)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, 16 << 20);
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + (16 << 20)).min(bytes.len());
            w.wait_for_capacity(8).await.map_err(io)?;
            w.put(bytes.slice(at..end));
            at = end;
        }
        w.finish().await.map_err(io)?;
        raw_put.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let got = store
            .get(&key)
            .await
            .map_err(io)?
            .bytes()
            .await
            .map_err(io)?;
        raw_get.push(t.elapsed().as_secs_f64());
        assert_eq!(got.len(), len);
        drop(got);
        // Both sides start from the same Azurite state (it keeps objects in memory).
        store.delete(&key).await.map_err(io)?;

        // Redwood: broadcast (a distinct value each run, so nothing is deduplicated), then 16
        // tasks read it.
        data[0] = run as u8;
        let value = ByteBuf::from(data.clone());
        let t = Instant::now();
        let shared = rw.broadcast(&value).await?;
        bc_put.push(t.elapsed().as_secs_f64());
        drop(value);
        let t = Instant::now();
        let lens = rw
            .map(read_all, (0..16u64).map(|i| (shared.clone(), i)))
            .await?
            .collect()
            .await?;
        bc_read.push(t.elapsed().as_secs_f64());
        assert!(lens.iter().all(|l| *l >= len as u64));
        rw.cleanup().await?;
        eprintln!(
            "run {run}: raw put {:.2}s get {:.2}s | broadcast {:.2}s, 16 tasks read {:.2}s",
            raw_put[run], raw_get[run], bc_put[run], bc_read[run]
        );
    }
    let (rp, rg, bp, br) = (
        median(raw_put),
        median(raw_get),
        median(bc_put),
        median(bc_read),
    );
    println!(
        "raw object_store put: {:.2} s ({:.0} MiB/s)",
        rp,
        gib * 1024.0 / rp
    );
    println!(
        "raw object_store get: {:.2} s ({:.0} MiB/s)",
        rg,
        gib * 1024.0 / rg
    );
    println!(
        "broadcast (encode, sha256, upload): {:.2} s ({:.0} MiB/s)",
        bp,
        gib * 1024.0 / bp
    );
    println!("16 tasks reading it: {:.2} s", br);
    println!("upload ratio raw/broadcast: {:.2} (target >= 0.8)", rp / bp);
    println!(
        "read ratio raw get/16-task read: {:.2} (target >= 0.8)",
        rg / br
    );
    rw.cleanup().await?;
    Ok(())
}

fn io(e: object_store::Error) -> redwood::Error {
    redwood::Error::new(redwood::ErrorKind::Storage, e.to_string())
}
