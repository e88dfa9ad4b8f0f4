//! Stopping work stops processes: a terminated task or job, a task past its
//! `maxWallClockTime`, and a deleted pool leave none of their processes running (the shell's
//! children included), and a terminated job's tasks stay ended.

mod common;

use std::time::{Duration, Instant};

use axum::http::Method;
use common::{Client, completed, emulator};
use serde_json::json;

/// A command that starts a long-lived child, writes its pid next to the task's files, then
/// waits for it.
const SPAWNS_A_CHILD: &str = "sleep 300 & echo $! > ../child.pid; wait";

async fn child_pid(c: &Client, job: &str, task: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .call(
                Method::GET,
                &format!("/jobs/{job}/tasks/{task}/files/child.pid"),
                &[],
                None,
            )
            .await;
        if r.status == 200
            && let Ok(pid) = r.text.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "{task} never started its child");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} outlived its task");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup(c: &Client, pool: &str, job: &str) {
    let body = json!({"id": pool, "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1, "taskSlotsPerNode": 4});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(body)).await.status,
        201
    );
    let body = json!({"id": job, "poolInfo": {"poolId": pool}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(body)).await.status,
        201
    );
}

#[tokio::test]
async fn terminated_tasks_and_jobs_stop_their_processes_and_stay_ended() {
    let (_emu, c) = emulator().await;
    setup(&c, "p", "j").await;
    let tasks = json!({"value": [
        {"id": "by-task", "commandLine": SPAWNS_A_CHILD},
        {"id": "by-job", "commandLine": SPAWNS_A_CHILD},
        {"id": "by-clock", "commandLine": SPAWNS_A_CHILD, "constraints": {"maxWallClockTime": "PT2S"}},
    ]});
    let r = c
        .call(Method::POST, "/jobs/j/addtaskcollection", &[], Some(tasks))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let pids = [
        child_pid(&c, "j", "by-task").await,
        child_pid(&c, "j", "by-job").await,
        child_pid(&c, "j", "by-clock").await,
    ];

    let r = c
        .call(Method::POST, "/jobs/j/tasks/by-task/terminate", &[], None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    gone(pids[0]).await;
    gone(pids[2]).await; // its wall clock ran out
    let r = c.call(Method::POST, "/jobs/j/terminate", &[], None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    gone(pids[1]).await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    for (task, code) in [
        ("by-task", "TaskEnded"),
        ("by-job", "TaskEnded"),
        ("by-clock", "MaxWallClockTimeExceeded"),
    ] {
        let t = completed(&c, "j", task).await;
        let info = &t["executionInfo"];
        assert_eq!(info["result"], "failure", "{task}: {t}");
        assert_eq!(info["failureInfo"]["code"], code, "{task}: {t}");
    }
}

#[tokio::test]
async fn deleting_a_pool_stops_its_tasks_processes() {
    let (_emu, c) = emulator().await;
    setup(&c, "doomed", "k").await;
    let task = json!({"id": "t", "commandLine": SPAWNS_A_CHILD});
    assert_eq!(
        c.call(Method::POST, "/jobs/k/tasks", &[], Some(task))
            .await
            .status,
        201
    );
    let pid = child_pid(&c, "k", "t").await;
    let r = c.call(Method::DELETE, "/pools/doomed", &[], None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    gone(pid).await;
}
