//! The emulator's admin faults: a pool whose allocation fails, and 5xx/latency on the API.

mod common;

use std::time::{Duration, Instant};

use axum::http::Method;
use common::emulator;
use serde_json::json;

async fn admin(c: &common::Client, path: &str, body: serde_json::Value) -> u16 {
    c.call(Method::POST, &format!("/_emulator/{path}"), &[], Some(body))
        .await
        .status
}

#[tokio::test]
async fn a_pool_whose_allocation_fails_gets_no_nodes_and_says_why() {
    let (_emu, c) = emulator().await;
    let status = admin(
        &c,
        "pools/doomed/allocation-failure",
        json!({"code": "AccountCoreQuotaReached"}),
    )
    .await;
    assert_eq!(status, 204);
    let pool = json!({"id": "doomed", "vmSize": "x", "targetDedicatedNodes": 2});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let r = c.call(Method::GET, "/pools/doomed", &[], None).await;
    assert_eq!(r.body["currentDedicatedNodes"], 0, "{}", r.body);
    assert_eq!(r.body["targetDedicatedNodes"], 2);
    assert_eq!(r.body["resizeErrors"][0]["code"], "AccountCoreQuotaReached");
    let job = json!({"id": "stuck", "poolInfo": {"poolId": "doomed"}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );
    let task = json!({"id": "t", "commandLine": "true"});
    assert_eq!(
        c.call(Method::POST, "/jobs/stuck/tasks", &[], Some(task))
            .await
            .status,
        201
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c.call(Method::GET, "/jobs/stuck/tasks/t", &[], None).await;
    assert_eq!(
        r.body["state"], "active",
        "a task ran on a pool without nodes"
    );
    let r = c.call(Method::GET, "/pools/doomed/nodes", &[], None).await;
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn api_faults_and_latency_are_injected_at_the_set_rate() {
    let (_emu, c) = emulator().await;
    assert_eq!(
        admin(&c, "faults", json!({"rate": 1.0, "status": 503})).await,
        204
    );
    let r = c.call(Method::GET, "/pools", &[], None).await;
    assert_eq!((r.status, r.code()), (503, "ServerBusy"));

    assert_eq!(
        admin(&c, "faults", json!({"rate": 0.5, "status": 500})).await,
        204
    );
    let mut failed = 0;
    for _ in 0..200 {
        let r = c.call(Method::GET, "/pools", &[], None).await;
        match r.status {
            200 => {}
            500 => {
                assert_eq!(r.code(), "InternalError");
                failed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        (60..=140).contains(&failed),
        "{failed} of 200 failed at a 50% rate"
    );

    assert_eq!(
        admin(&c, "faults", json!({"rate": 0, "latencyMs": 80})).await,
        204
    );
    let started = Instant::now();
    let r = c.call(Method::GET, "/pools", &[], None).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(80));
    assert_eq!(admin(&c, "faults", json!({"rate": 2})).await, 400);
}

#[tokio::test]
async fn autoscale_pools_follow_their_pending_tasks() {
    let (_emu, c) = emulator().await;
    let pool = json!({"id": "elastic", "vmSize": "x", "enableAutoScale": true,
        "autoScaleFormula": "$TargetDedicatedNodes = min(3, $PendingTasks.GetSample(1)); $NodeDeallocationOption = taskcompletion;"});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let r = c.call(Method::GET, "/pools/elastic", &[], None).await;
    assert_eq!(r.body["targetDedicatedNodes"], 0, "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/pools/elastic/resize",
            &[],
            Some(json!({"targetDedicatedNodes": 1})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "AutoScalingEnabled"));

    let job = json!({"id": "burst", "poolInfo": {"poolId": "elastic"}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );
    let tasks: Vec<serde_json::Value> = (0..5)
        .map(|i| json!({"id": format!("b{i}"), "commandLine": "sleep 0.4"}))
        .collect();
    let r = c
        .call(
            Method::POST,
            "/jobs/burst/addtaskcollection",
            &[],
            Some(json!({"value": tasks})),
        )
        .await;
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut peak = 0;
    loop {
        let r = c.call(Method::GET, "/pools/elastic", &[], None).await;
        peak = peak.max(r.body["currentDedicatedNodes"].as_i64().unwrap_or(0));
        let done = c
            .call(
                Method::GET,
                "/jobs/burst/tasks",
                &[("$filter", "state eq 'completed'")],
                None,
            )
            .await;
        if done.body["value"].as_array().map(Vec::len) == Some(5)
            && r.body["targetDedicatedNodes"] == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "autoscale did not grow, run and shrink: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(peak, 3, "the pool should have grown to min(3, pending)");

    let bad = json!({"autoScaleFormula": "$TargetDedicatedNodes = $Nonsense;"});
    let r = c
        .call(
            Method::POST,
            "/pools/elastic/enableautoscale",
            &[],
            Some(bad),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidPropertyValue"));
    let r = c
        .call(Method::POST, "/pools/elastic/disableautoscale", &[], None)
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            Method::POST,
            "/pools/elastic/resize",
            &[],
            Some(json!({"targetDedicatedNodes": 1})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
}

#[tokio::test]
async fn an_account_goes_down_and_comes_back() {
    let (emu, c) = emulator().await;
    // Compute refused: every API call is a 503 ServerBusy, the admin calls still work.
    assert_eq!(admin(&c, "outage", json!({"compute": "refuse"})).await, 204);
    let r = c.call(Method::GET, "/pools", &[], None).await;
    assert_eq!((r.status, r.code()), (503, "ServerBusy"), "{}", r.text);
    assert_eq!(admin(&c, "outage", json!({"compute": "up"})).await, 204);
    assert_eq!(c.call(Method::GET, "/pools", &[], None).await.status, 200);

    // Hang: no answer at all.
    assert_eq!(admin(&c, "outage", json!({"compute": "hang"})).await, 204);
    let hung = tokio::time::timeout(
        Duration::from_millis(500),
        c.call(Method::GET, "/pools", &[], None),
    )
    .await;
    assert!(hung.is_err(), "a hanging account answered");
    emu.set_outage(
        "testacct",
        redwood_emulator::batch::outage::Outage::default(),
    )
    .unwrap();
    emu.set_outage(
        "testacct",
        redwood_emulator::batch::outage::Outage {
            compute: Some(redwood_emulator::batch::outage::Compute::Up),
            storage: None,
        },
    )
    .unwrap();
    assert_eq!(c.call(Method::GET, "/pools", &[], None).await.status, 200);

    // Storage: only when the emulator fronts the account's store.
    let r = c
        .call(
            Method::POST,
            "/_emulator/outage",
            &[],
            Some(json!({"storage": "refuse"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "NoStorageSwitch"), "{}", r.text);
    let proxy = std::sync::Arc::new(
        redwood_emulator::fault_proxy::FaultProxy::start(
            &c.base,
            redwood_emulator::fault_proxy::FaultConfig::default(),
        )
        .await
        .unwrap(),
    );
    emu.put_storage_behind("testacct", proxy.clone()).unwrap();
    assert_eq!(admin(&c, "outage", json!({"storage": "refuse"})).await, 204);
    let through = reqwest::get(format!("{}/anything", proxy.url()))
        .await
        .unwrap();
    assert_eq!(through.status().as_u16(), 503);
    assert_eq!(admin(&c, "outage", json!({"storage": "up"})).await, 204);
    assert_eq!(proxy.stats().fixed, 1);

    // A bad body is named.
    let r = c
        .call(
            Method::POST,
            "/_emulator/outage",
            &[],
            Some(json!({"compute": "sideways"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("hang"), "{}", r.text);
    assert!(emu.set_outage("nobody", Default::default()).is_err());
}
