//! The Batch REST client against the emulator: requests, paging, task collections, error
//! mapping and retries through injected faults.

use std::time::{Duration, Instant};

use redwood_azure::batch::{BatchClient, BatchClientBuilder};
use redwood_core::ErrorKind;
use redwood_emulator::batch::{BatchAccount, BatchEmulator};
use serde_json::json;

const KEY: &str = "Y2xpZW50LXRlc3QtYWNjb3VudC1rZXk=";

async fn setup() -> (BatchEmulator, BatchClient, String) {
    let account = BatchAccount {
        name: "clientacct".into(),
        key: KEY.into(),
        bearer_token: None,
    };
    let emu = BatchEmulator::start(vec![account]).await.unwrap();
    let url = emu.url("clientacct").unwrap();
    let client = BatchClientBuilder::new(&url, "clientacct", KEY)
        .backoff(Duration::from_millis(5))
        .build()
        .unwrap();
    (emu, client, url)
}

#[tokio::test]
async fn requests_paging_and_task_collections() {
    let (_emu, c, _) = setup().await;
    let pool = json!({"id": "cp", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 2, "taskSlotsPerNode": 2});
    c.post("create_pool", "/pools", &pool).await.unwrap();
    let got = c.get("get_pool", "/pools/cp").await.unwrap();
    assert_eq!(got["targetDedicatedNodes"], 2);
    c.post(
        "create_job",
        "/jobs",
        &json!({"id": "cj", "poolInfo": {"poolId": "cp"}}),
    )
    .await
    .unwrap();

    let tasks: Vec<_> = (0..7)
        .map(|i| json!({"id": format!("t{i}"), "commandLine": "true"}))
        .collect();
    let results = c.add_task_collection("cj", &tasks).await.unwrap();
    assert!(results.iter().all(|r| r.added), "{results:?}");
    // A retried request whose first try got through: TaskExists counts as added.
    let again = c.add_task_collection("cj", &tasks[..2]).await.unwrap();
    assert!(
        again.iter().all(|r| r.added && r.error_code.is_none()),
        "{again:?}"
    );
    let bad = c
        .add_task_collection(
            "cj",
            &[json!({"id": "x", "commandLine": "true", "comandLine": "typo"})],
        )
        .await
        .unwrap();
    assert!(
        !bad[0].added && bad[0].error_code.as_deref() == Some("UnsupportedProperty"),
        "{bad:?}"
    );
    let many: Vec<_> = (0..101)
        .map(|i| json!({"id": format!("m{i}"), "commandLine": "true"}))
        .collect();
    let e = c.add_task_collection("cj", &many).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    // Completion through lists that span pages (maxresults 2 over 7 tasks).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = c
            .list(
                "list_tasks",
                "/jobs/cj/tasks",
                &[
                    ("$filter", "state eq 'completed'"),
                    ("$select", "id,state"),
                    ("maxresults", "2"),
                ],
            )
            .await
            .unwrap();
        if done.len() == 7 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 7 completed",
            done.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn errors_are_mapped_and_busy_requests_are_retried() {
    let (_emu, c, url) = setup().await;
    let e = c.get("get_pool", "/pools/none").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("PoolNotFound"), "{e}");

    let wrong = BatchClientBuilder::new(&url, "clientacct", "d3Jvbmcta2V5")
        .build()
        .unwrap();
    let e = wrong.get("get_pool", "/pools/none").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(!e.is_retryable());
    let s = e.to_string();
    assert!(
        s.contains("clientacct") && s.contains("AuthenticationFailed") && s.contains("key"),
        "{s}"
    );

    // Admin calls are signed like the API (an unsigned one is refused).
    let unsigned = reqwest::Client::new()
        .post(format!("{url}/_emulator/faults?api-version=2025-06-01"))
        .header("content-type", "application/json")
        .body(json!({"rate": 1.0}).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(unsigned.as_u16(), 401);
    let admin = |body: serde_json::Value| {
        let c = c.clone();
        async move {
            c.post("emulator_admin", "/_emulator/faults", &body)
                .await
                .map(|_| reqwest::StatusCode::NO_CONTENT)
                .unwrap()
        }
    };
    // Half the requests fail with 503: every call still succeeds, by retrying.
    assert_eq!(
        admin(json!({"rate": 0.5, "status": 503})).await.as_u16(),
        204
    );
    for i in 0..20 {
        let pool = json!({"id": format!("r{i}"), "vmSize": "x"});
        c.post("create_pool", "/pools", &pool).await.unwrap();
    }
    assert_eq!(c.list("list_pools", "/pools", &[]).await.unwrap().len(), 20);
    // Always failing: a retryable error after the last retry, saying how many attempts.
    assert_eq!(
        admin(json!({"rate": 1.0, "status": 503})).await.as_u16(),
        204
    );
    let stubborn = BatchClientBuilder::new(&url, "clientacct", KEY)
        .backoff(Duration::from_millis(1))
        .max_retries(2)
        .build()
        .unwrap();
    let e = stubborn.get("get_pool", "/pools/r1").await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(
        e.to_string().contains("attempts: 3") && e.to_string().contains("ServerBusy"),
        "{e}"
    );
}

#[tokio::test]
async fn a_file_tail_reads_only_the_end_of_the_file() {
    let (_emu, c, _) = setup().await;
    let pool = json!({"id": "tp", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1});
    c.post("create_pool", "/pools", &pool).await.unwrap();
    let job = json!({"id": "tj", "poolInfo": {"poolId": "tp"}});
    c.post("create_job", "/jobs", &job).await.unwrap();
    // 3 MB on one line, then a short last line.
    let task = json!({"id": "loud", "commandLine":
        "/bin/sh -c \"head -c 3000000 /dev/zero | tr '\\\\0' x >&2; echo >&2; echo 'last line sig=SECRET' >&2\""});
    c.post("add_task", "/jobs/tj/tasks", &task).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.get("get_task", "/jobs/tj/tasks/loud").await.unwrap()["state"] != "completed" {
        assert!(Instant::now() < deadline, "the task never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tail = c
        .file_tail("task_file", "/jobs/tj/tasks/loud/files/stderr.txt", 2)
        .await
        .expect("a tail");
    // Reading the whole file would bring the 3 MB line along.
    assert_eq!(tail, "last line sig=<redacted>");
}
