//! Storage errors: a permanent 403 is a clear error, reported at once and not retried; transient
//! errors (500, 503, cut responses) are retried on every storage call, container creation
//! included; conditional writes never overwrite.

use std::time::{Duration, Instant};

use redwood::{ErrorKind, Session};
use redwood_emulator::azurite::Azurite;
use redwood_emulator::fault_proxy::{FaultConfig, FaultProxy};

#[redwood::remote]
fn square(x: u64) -> u64 {
    x * x
}

/// Azurite behind a fault proxy, and the connection string that goes through the proxy.
async fn azurite_behind_proxy(faults: FaultConfig) -> (Azurite, FaultProxy, String) {
    let azurite = Azurite::start().await.expect("Azurite");
    let proxy = FaultProxy::start(azurite.blob_base(), faults)
        .await
        .expect("proxy");
    let conn = azurite.connection_string_via(&azurite.accounts()[0], &proxy.url());
    (azurite, proxy, conn)
}

fn session(conn: &str, storage: &str) -> Session {
    Session::builder()
        .storage_url(storage)
        .storage_option("connection_string", conn)
        .progress(false)
        .build()
        .expect("session")
}

#[tokio::test]
async fn permanent_403_is_a_clear_error_and_not_retried() {
    let (_azurite, proxy, conn) = azurite_behind_proxy(FaultConfig::default()).await;
    let rw = session(&conn, "az://denied/suite");
    // Works while the proxy forwards.
    rw.broadcast(&vec![1u8; 10])
        .await
        .expect("broadcast before the denial");

    proxy.set_fixed_status(Some(403));
    let started = Instant::now();
    let err = rw
        .map(square, 0..4u64)
        .await
        .expect_err("a 403 must fail the map");
    let took = started.elapsed();
    eprintln!("the error a user sees: {err}");
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("403") || text.to_lowercase().contains("permission"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(5),
        "a permanent error took {took:?}"
    );
    // Not retried: one request per object written (manifest and inputs), nothing more.
    let fixed = proxy.stats().fixed;
    assert!(
        fixed <= 2,
        "{fixed} requests were answered 403: it was retried"
    );
}

#[tokio::test]
async fn missing_containers_are_created_through_transient_errors() {
    let (_azurite, proxy, conn) = azurite_behind_proxy(FaultConfig {
        rate: 0.5,
        ..FaultConfig::default()
    })
    .await;
    // Each session writes to a container that does not exist yet; at a 50% fault rate most
    // creations meet a 500, a 503 or a cut response at least once.
    for i in 0..6 {
        let rw = session(&conn, &format!("az://transient-{i}/suite"));
        let data = rw
            .broadcast(&vec![i as u8; 10])
            .await
            .unwrap_or_else(|e| panic!("container transient-{i}: {e}"));
        assert_eq!(
            rw.fetch_broadcast(&data).await.expect("read back"),
            vec![i as u8; 10]
        );
    }
    let stats = proxy.stats();
    assert!(stats.faults() >= 6, "too few faults injected: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_storage_call_survives_transient_faults() {
    use object_store::path::Path;
    use redwood::Storage;
    let (_azurite, proxy, conn) = azurite_behind_proxy(FaultConfig {
        rate: 0.3,
        ..FaultConfig::default()
    })
    .await;
    let options = [("connection_string".to_string(), conn)]
        .into_iter()
        .collect();
    let store = Storage::open_with("az://faults/calls", &options).expect("open");
    let key = |i: usize| Path::from(format!("calls/obj-{i:03}"));
    // Small writes, heads (a cut HEAD answer has no Content-Length), reads, ranges.
    for i in 0..60 {
        store.put(&key(i), vec![i as u8; 100]).await.expect("put");
        assert!(store.exists(&key(i)).await.expect("head"));
        assert_eq!(store.get(&key(i)).await.expect("get").len(), 100);
        let range = store.get_range(&key(i), 10..20).await.expect("range");
        assert_eq!(range.as_ref(), &[i as u8; 10]);
    }
    // A multipart upload: each part is retried on its own.
    let big = vec![7u8; 40 << 20];
    store
        .put(&key(999), big.clone())
        .await
        .expect("multipart put");
    assert_eq!(
        store.get(&key(999)).await.expect("big get").len(),
        big.len()
    );
    assert_eq!(
        store.list(&Path::from("calls")).await.expect("list").len(),
        61
    );
    assert_eq!(
        store
            .delete_prefix(&Path::from("calls"))
            .await
            .expect("delete"),
        61
    );
    proxy.set_rate(0.0);
    assert!(
        store
            .list(&Path::from("calls"))
            .await
            .expect("list")
            .is_empty()
    );
    let stats = proxy.stats();
    eprintln!("fault proxy: {stats:?}");
    assert!(stats.resets >= 10, "too few cut responses: {stats:?}");
    assert!(
        stats.unavailable + stats.internal >= 10,
        "too few 5xx: {stats:?}"
    );
}

/// Sixteen writers race to create one object: exactly one wins, and its bytes stay.
async fn only_one_conditional_writer_wins(store: &redwood::Storage) {
    let key = object_store::path::Path::from("race/result");
    let writers: Vec<_> = (0..16u8)
        .map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { (i, store.put_if_absent(&key, vec![i; 64]).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for w in writers {
        let (i, wrote) = w.await.expect("writer");
        if wrote.unwrap_or_else(|e| panic!("{}: {e}", store.url())) {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "{}: winners {winners:?}", store.url());
    let stored = store.get(&key).await.expect("read");
    assert_eq!(stored.as_ref(), &[winners[0]; 64], "{}", store.url());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_if_absent_never_overwrites_a_concurrent_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = redwood::Storage::open(&format!("file://{}", dir.path().display())).expect("file");
    only_one_conditional_writer_wins(&file).await;
    let memory = redwood::Storage::open("memory://race").expect("memory");
    only_one_conditional_writer_wins(&memory).await;
    let (_azurite, _proxy, conn) = azurite_behind_proxy(FaultConfig::default()).await;
    let options = [("connection_string".to_string(), conn)]
        .into_iter()
        .collect();
    let azure = redwood::Storage::open_with("az://race/x", &options).expect("azure");
    only_one_conditional_writer_wins(&azure).await;
}
