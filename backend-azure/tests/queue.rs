//! The queue client against Azurite's queue service: create, send, receive with visibility,
//! dequeue counts, hiding, deleting, counts, and errors that carry no signature.

use std::time::Duration;

use redwood_azure::queue::QueueService;
use redwood_core::ErrorKind;
use redwood_emulator::azurite::Azurite;

#[tokio::test]
async fn a_queue_round_trip_on_azurite() {
    let azurite = Azurite::start().await.expect("Azurite");
    let account = azurite.accounts()[0].clone();
    let service = QueueService::from_connection_string(&azurite.connection_string(&account))
        .expect("queue service");
    let queue = service.queue("redwood-queue-test").unwrap();
    queue.create().await.unwrap();
    queue.create().await.unwrap(); // exists: fine
    queue.clear().await.unwrap();

    queue.send("one", Duration::ZERO).await.unwrap();
    queue.send("two", Duration::ZERO).await.unwrap();
    queue.send("later", Duration::from_secs(60)).await.unwrap();
    assert_eq!(queue.approximate_count().await.unwrap(), 3);

    let got = queue.receive(32, Duration::from_secs(1)).await.unwrap();
    let texts: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["one", "two"], "a hidden message is not received");
    assert!(got.iter().all(|m| m.dequeue_count == 1));
    // Invisible while held.
    assert!(
        queue
            .receive(32, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );

    // Deleted with its receipt; the other one comes back with its count raised.
    queue.delete(&got[0]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let again = queue.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].text.as_str(), again[0].dequeue_count), ("two", 2));

    // An old receipt no longer deletes it; hiding gives a new receipt that does.
    let stale = queue.delete(&got[1]).await.unwrap_err();
    assert!(
        matches!(stale.kind(), ErrorKind::NotFound | ErrorKind::Storage),
        "{stale}"
    );
    let visible = queue.hide(&again[0], Duration::ZERO).await.unwrap();
    let third = queue.receive(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(third[0].dequeue_count, 3);
    assert!(
        queue.delete(&visible).await.is_err(),
        "receipt of a message received since"
    );
    queue.delete(&third[0]).await.unwrap();

    let big = "x".repeat(70 * 1024);
    let e = queue.send(&big, Duration::ZERO).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    queue.delete_queue().await.unwrap();
    queue.delete_queue().await.unwrap(); // gone: fine
    let e = queue.receive(1, Duration::from_secs(1)).await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains("redwood-queue-test"), "{text}");
    assert!(!text.contains("sig="), "{text}");
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_error() {
    let azurite = Azurite::start().await.expect("Azurite");
    let account = azurite.accounts()[0].clone();
    let wrong = azurite
        .connection_string(&account)
        .replace(&account.key, "d3Jvbmcta2V5");
    let queue = QueueService::from_connection_string(&wrong)
        .unwrap()
        .queue("redwood-wrong-key")
        .unwrap();
    let e = queue.create().await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(!text.contains("sig="), "{text}");
}
