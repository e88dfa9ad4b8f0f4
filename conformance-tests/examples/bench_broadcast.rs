//! Benchmark: a 1 GiB broadcast through Azurite, against raw object_store put/get of the same
//! bytes in the same run.
//!
//! `cargo run --release -p redwood-conformance --example bench_broadcast [-- --mib 1024 --runs 3]`
//!
//! Raw: a multipart put (16 MiB parts, 8 in flight) and a get of the object. Redwood:
//! `Session::broadcast` (hash, then encode into parts while they upload), then a `map` of 16
//! tasks that read it with `get_bytes()` (no decoding), then, with fresh worker processes, 16
//! tasks that `get()` it (decoded into each worker's memory). Each worker process fetches it
//! once; the ratios compare raw time with Redwood time.

use std::time::Instant;

use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use redwood::prelude::*;
use redwood_emulator::azurite::Azurite;
use serde_bytes::ByteBuf;

/// Reads the broadcast as bytes (no decoding, no copy) and touches one byte.
#[redwood::remote]
fn read_bytes(data: Broadcast<ByteBuf>, i: u64) -> Result<u64, redwood::Error> {
    let bytes = data.get_bytes()?;
    Ok(bytes.len() as u64 + bytes[(i as usize * 7919) % bytes.len()] as u64)
}

/// Decodes the broadcast into a `ByteBuf` (a copy into the task's own memory).
#[redwood::remote]
fn read_decoded(data: Broadcast<ByteBuf>, i: u64) -> Result<u64, redwood::Error> {
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

fn io(e: object_store::Error) -> redwood::Error {
    redwood::Error::new(redwood::ErrorKind::Storage, e.to_string())
}

/// Times one `map` of 16 reading tasks.
async fn read_with<F: Copy + Send + Sync + 'static>(
    rw: &Session,
    f: redwood::RemoteFn<F, (Broadcast<ByteBuf>, u64), u64>,
    shared: &Broadcast<ByteBuf>,
    len: usize,
) -> redwood::Result<f64> {
    let t = Instant::now();
    let lens = rw
        .map(f, (0..16u64).map(|i| (shared.clone(), i)))
        .await?
        .collect()
        .await?;
    let took = t.elapsed().as_secs_f64();
    assert!(lens.iter().all(|l| *l >= len as u64));
    Ok(took)
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
    let mib_f = mib as f64;
    println!(
        "object: {mib} MiB; Azurite {} at {}",
        azurite.how(),
        azurite.blob_base()
    );

    let (mut raw_put, mut raw_get, mut bc_put) = (vec![], vec![], vec![]);
    let (mut bc_bytes, mut bc_decoded) = (vec![], vec![]);
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
        drop(bytes);
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

        // Redwood: broadcast a distinct value each run (nothing is deduplicated), then read it.
        data[0] = run as u8;
        let value = ByteBuf::from(data.clone());
        let t = Instant::now();
        let shared = rw.broadcast(&value).await?;
        bc_put.push(t.elapsed().as_secs_f64());
        drop(value);
        bc_bytes.push(read_with(&rw, read_bytes, &shared, len).await?);
        // Fresh worker processes, so the decoding read fetches again.
        rw.backend().release(Default::default()).await?;
        bc_decoded.push(read_with(&rw, read_decoded, &shared, len).await?);
        rw.cleanup().await?;
        eprintln!(
            "run {run}: raw put {:.2}s get {:.2}s | broadcast {:.2}s, 16 tasks read {:.2}s \
             (get_bytes) {:.2}s (get)",
            raw_put[run], raw_get[run], bc_put[run], bc_bytes[run], bc_decoded[run]
        );
    }
    let (rp, rg, bp) = (median(raw_put), median(raw_get), median(bc_put));
    let (bb, bd) = (median(bc_bytes), median(bc_decoded));
    println!("medians of {runs} runs:");
    println!("raw object_store put: {rp:.2} s ({:.0} MiB/s)", mib_f / rp);
    println!("raw object_store get: {rg:.2} s ({:.0} MiB/s)", mib_f / rg);
    println!("broadcast: {bp:.2} s ({:.0} MiB/s)", mib_f / bp);
    println!("16 tasks reading it with get_bytes (no copy): {bb:.2} s");
    println!("16 tasks reading it with get (decoded in each worker): {bd:.2} s");
    println!("upload ratio raw/broadcast: {:.2} (target >= 0.8)", rp / bp);
    println!(
        "read ratio raw get/get_bytes read: {:.2} (target >= 0.8)",
        rg / bb
    );
    println!("read ratio raw get/get read: {:.2}", rg / bd);
    rw.cleanup().await?;
    Ok(())
}
