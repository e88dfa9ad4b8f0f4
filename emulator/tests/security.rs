//! What keeps the emulator safe on a developer's machine: admin calls are signed like the API,
//! requests far from now are refused, and file reads never leave their folder.

mod common;

use axum::http::{HeaderMap, HeaderValue, Method};
use common::{API, Client, completed, emulator};
use redwood_emulator::batch::auth::{sign, string_to_sign};
use serde_json::json;

/// A POST signed with `date` as its `ocp-date`.
async fn post_dated(c: &Client, path: &str, date: std::time::SystemTime) -> u16 {
    let mut headers = HeaderMap::new();
    headers.insert(
        "ocp-date",
        HeaderValue::from_str(&httpdate::fmt_http_date(date)).unwrap(),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", HeaderValue::from(2));
    let query = vec![("api-version".to_string(), API.to_string())];
    let text = string_to_sign(&Method::POST, &headers, &c.account, path, &query, false);
    let auth = format!("SharedKey {}:{}", c.account, sign(&c.key, &text).unwrap());
    c.http
        .post(format!("{}{path}?api-version={API}", c.base))
        .header("ocp-date", headers["ocp-date"].as_bytes())
        .header("content-type", "application/json")
        .header("authorization", auth)
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn admin_calls_need_the_accounts_signature_and_json() {
    let (_emu, c) = emulator().await;
    let token = format!("{}/_emulator/bearer-token?api-version={API}", c.base);
    // Another local process, or a web page posting a form: refused, the token stays.
    let http = common::http();
    let form = http
        .post(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=stolen")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 401);
    let unsigned = http
        .post(&token)
        .header("content-type", "application/json")
        .body(json!({"token": "stolen"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let stolen = http
        .get(format!("{}/pools?api-version={API}", c.base))
        .header("authorization", "Bearer stolen")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stolen.status().as_u16(),
        403,
        "the stolen token was accepted"
    );
    // The account's own signature works.
    let r = c
        .call(
            Method::POST,
            "/_emulator/faults",
            &[],
            Some(json!({"rate": 0})),
        )
        .await;
    assert!(r.status < 300, "{}", r.text);
}

#[tokio::test]
async fn requests_signed_far_from_now_are_refused() {
    let (_emu, c) = emulator().await;
    let now = std::time::SystemTime::now();
    let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
    assert_eq!(post_dated(&c, "/_emulator/faults", now).await, 204);
    assert_eq!(
        post_dated(&c, "/_emulator/faults", now - minutes(20)).await,
        403
    );
    assert_eq!(
        post_dated(&c, "/_emulator/faults", now + minutes(20)).await,
        403
    );
}

#[tokio::test]
async fn file_reads_never_leave_their_folder_and_honour_ranges() {
    let (_emu, c) = emulator().await;
    let pool = json!({"id": "p", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let job = json!({"id": "j", "poolInfo": {"poolId": "p"}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );
    let task =
        json!({"id": "t", "commandLine": "/bin/sh -c 'echo 0123456789; ln -s /etc/hostname link'"});
    assert_eq!(
        c.call(Method::POST, "/jobs/j/tasks", &[], Some(task))
            .await
            .status,
        201
    );
    let done = completed(&c, "j", "t").await;
    let node = done["nodeInfo"]["nodeId"].as_str().unwrap().to_string();
    let listed = c
        .call(
            Method::GET,
            "/jobs/j/tasks/t/files",
            &[("recursive", "true")],
            None,
        )
        .await;
    assert!(
        listed.text.contains("wd/link"),
        "the task made no link: {}",
        listed.text
    );
    for path in [
        "%2Fetc%2Fhostname",
        "/etc/hostname",
        "..%2F..%2F..%2F..%2F..%2Fetc%2Fhostname",
        "wd/link",
    ] {
        let r = c
            .call(
                Method::GET,
                &format!("/jobs/j/tasks/t/files/{path}"),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        let r = c
            .call(
                Method::GET,
                &format!("/pools/p/nodes/{node}/files/{path}"),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status, 404, "node {path}: {}", r.text);
    }
    // The task's own file, whole and by range (how a client reads the end of a large stderr).
    let whole = c
        .call(Method::GET, "/jobs/j/tasks/t/files/stdout.txt", &[], None)
        .await;
    assert_eq!(whole.text, "0123456789\n");
    let mut headers = HeaderMap::new();
    headers.insert("ocp-range", HeaderValue::from_static("bytes=7-"));
    let part = c
        .call_with_headers(Method::GET, "/jobs/j/tasks/t/files/stdout.txt", headers)
        .await;
    assert_eq!((part.status, part.text.as_str()), (200, "789\n"));
    let head = c
        .call(Method::HEAD, "/jobs/j/tasks/t/files/stdout.txt", &[], None)
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], "11");
}

#[tokio::test]
async fn hostile_requests_get_errors_and_the_emulator_keeps_serving() {
    let (_emu, c) = emulator().await;
    let pool = json!({"id": "auto", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 0});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let deep = format!(
        "$TargetDedicatedNodes = {}1{};",
        "(".repeat(200_000),
        ")".repeat(200_000)
    );
    for formula in [deep.as_str(), "$TargetDedicatedNodes = 1e308 * 10;"] {
        let r = c
            .call(
                Method::POST,
                "/pools/auto/enableautoscale",
                &[],
                Some(json!({"autoScaleFormula": formula})),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text);
    }
    // A huge target is clamped, not allocated.
    let r = c
        .call(
            Method::POST,
            "/pools/auto/enableautoscale",
            &[],
            Some(json!({"autoScaleFormula": "$TargetDedicatedNodes = 9000000000000000000;"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = c.call(Method::GET, "/pools/auto", &[], None).await;
    assert_eq!(r.body["targetDedicatedNodes"], 10_000, "{}", r.text);
    c.call(Method::POST, "/pools/auto/disableautoscale", &[], None)
        .await;
    c.call(Method::DELETE, "/pools/auto", &[], None).await;

    let job = json!({"id": "j", "poolInfo": {"poolId": "auto"}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );
    for task in [
        json!({"id": "a", "commandLine": "true", "constraints": {"maxWallClockTime": "P99999999999999999999D"}}),
        json!({"id": "b", "commandLine": "true", "requiredSlots": -1}),
        json!({"id": "c", "commandLine": "true", "constraints": {"maxTaskRetryCount": -5}}),
    ] {
        let r = c.call(Method::POST, "/jobs/j/tasks", &[], Some(task)).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.code(), "InvalidPropertyValue", "{}", r.text);
    }
    for query in [
        [("$filter", "é eq 'x'")],
        [("$skiptoken", "18446744073709551615")],
    ] {
        let r = c.call(Method::GET, "/jobs/j/tasks", &query, None).await;
        assert!(r.status == 200 || r.status == 400, "{query:?}: {}", r.text);
    }
    // Still serving.
    assert_eq!(c.call(Method::GET, "/pools", &[], None).await.status, 200);
}
