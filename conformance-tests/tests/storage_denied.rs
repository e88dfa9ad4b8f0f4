//! Storage errors: a permanent 403 is a clear error, reported at once and not retried; transient
//! errors while creating a missing container are retried.

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
    let account = &azurite.accounts()[0];
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={}/{}",
        account.name,
        account.key,
        proxy.url(),
        account.name
    );
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
