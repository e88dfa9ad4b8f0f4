//! Tasks really run on the emulated nodes: the `AZ_BATCH_*` environment, stdout and stderr
//! files, exit codes, `maxTaskRetryCount`, `maxWallClockTime` and the slots of a pool.

mod common;

use std::time::{Duration, Instant};

use axum::http::Method;
use common::{Client, completed, emulator};
use serde_json::{Value, json};

async fn file(c: &Client, job: &str, task: &str, name: &str) -> String {
    let r = c
        .call(
            Method::GET,
            &format!("/jobs/{job}/tasks/{task}/files/{name}"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{name} of {task}: {}", r.text);
    r.text
}

#[tokio::test]
async fn tasks_run_with_the_batch_environment_and_their_outcomes_are_recorded() {
    let (_emu, c) = emulator().await;
    let pool = json!({"id": "run", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1, "taskSlotsPerNode": 2});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let job = json!({"id": "j", "poolInfo": {"poolId": "run"}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );

    let tasks = json!({"value": [
        {"id": "env", "commandLine": "echo \"$AZ_BATCH_JOB_ID/$AZ_BATCH_TASK_ID/$AZ_BATCH_POOL_ID $MY_SETTING\"; pwd; echo oops >&2",
         "environmentSettings": [{"name": "MY_SETTING", "value": "set-by-task"}]},
        {"id": "fails", "commandLine": "echo attempt $AZ_BATCH_TASK_RETRY_COUNT; exit 3",
         "constraints": {"maxTaskRetryCount": 2}},
        {"id": "slow", "commandLine": "sleep 30", "constraints": {"maxWallClockTime": "PT1S"}},
    ]});
    let started = Instant::now();
    let r = c
        .call(Method::POST, "/jobs/j/addtaskcollection", &[], Some(tasks))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let env = completed(&c, "j", "env").await;
    assert_eq!(env["executionInfo"]["exitCode"], 0, "{env}");
    assert_eq!(env["executionInfo"]["result"], "success");
    assert_eq!(env["nodeInfo"]["poolId"], "run");
    let out = file(&c, "j", "env", "stdout.txt").await;
    assert!(out.contains("j/env/run set-by-task"), "{out}");
    assert!(
        out.contains("/workitems/j/job-1/env/wd"),
        "working dir: {out}"
    );
    let err = file(&c, "j", "env", "stderr.txt").await;
    assert!(err.contains("oops"), "{err}");

    let fails = completed(&c, "j", "fails").await;
    let info = &fails["executionInfo"];
    assert_eq!(
        (info["exitCode"].as_i64(), info["retryCount"].as_i64()),
        (Some(3), Some(2)),
        "{fails}"
    );
    assert_eq!(info["result"], "failure");
    assert_eq!(info["failureInfo"]["code"], "FailureExitCode");
    assert!(
        file(&c, "j", "fails", "stdout.txt")
            .await
            .contains("attempt 2")
    );

    let slow = completed(&c, "j", "slow").await;
    assert_eq!(
        slow["executionInfo"]["failureInfo"]["code"], "MaxWallClockTimeExceeded",
        "{slow}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the wall-clock limit did not stop it"
    );

    let r = c
        .call(Method::GET, "/jobs/j/tasks/env/files", &[], None)
        .await;
    let names: Vec<&str> = r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(
        names.contains(&"stdout.txt") && names.contains(&"wd"),
        "{names:?}"
    );
    let r = c
        .call(Method::GET, "/jobs/j/tasks/env/files/nope.txt", &[], None)
        .await;
    assert_eq!((r.status, r.code()), (404, "FileNotFound"));
    let r = c
        .call(
            Method::GET,
            "/jobs/j/tasks/env/files/../../../../etc/passwd",
            &[],
            None,
        )
        .await;
    assert_ne!(r.status, 200, "a path outside the task folder was served");

    let r = c.call(Method::GET, "/pools/run/nodes", &[], None).await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1, "{}", r.body);
}

#[tokio::test]
async fn a_pool_runs_at_most_nodes_times_slots_tasks_at_once() {
    let (_emu, c) = emulator().await;
    let pool =
        json!({"id": "small", "vmSize": "x", "targetDedicatedNodes": 1, "taskSlotsPerNode": 2});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let job = json!({"id": "k", "poolInfo": {"poolId": "small"}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );
    // Each task records its start and end; with 2 slots, no 3 may overlap.
    let tasks: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("t{i}"), "commandLine": "date +%s%N; sleep 0.3; date +%s%N"}))
        .collect();
    let r = c
        .call(
            Method::POST,
            "/jobs/k/addtaskcollection",
            &[],
            Some(json!({"value": tasks})),
        )
        .await;
    assert_eq!(r.status, 200);
    let mut spans = Vec::new();
    for i in 0..5 {
        let task = format!("t{i}");
        completed(&c, "k", &task).await;
        let out = file(&c, "k", &task, "stdout.txt").await;
        let times: Vec<u128> = out
            .split_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        assert_eq!(times.len(), 2, "{out}");
        spans.push((times[0], times[1]));
    }
    for &(start, _) in &spans {
        let running = spans
            .iter()
            .filter(|(s, e)| *s <= start && start < *e)
            .count();
        assert!(
            running <= 2,
            "{running} tasks ran at once on 2 slots: {spans:?}"
        );
    }
    // onAllTasksComplete: a job that ends by itself.
    let job = json!({"id": "auto", "poolInfo": {"poolId": "small"}, "onAllTasksComplete": "terminatejob"});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );
    let only = json!({"id": "only", "commandLine": "true"});
    assert_eq!(
        c.call(Method::POST, "/jobs/auto/tasks", &[], Some(only))
            .await
            .status,
        201
    );
    completed(&c, "auto", "only").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.call(Method::GET, "/jobs/auto", &[], None).await;
        if r.body["state"] == "completed" {
            assert_eq!(
                r.body["executionInfo"]["terminateReason"],
                "AllTasksComplete"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the job did not end: {}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .call(Method::GET, "/jobs/k/tasks/t0/files/stdout.txt", &[], None)
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            Method::POST,
            "/jobs/k/tasks",
            &[],
            Some(json!({"id": "late", "commandLine": "true"})),
        )
        .await;
    assert_eq!(r.status, 201);
}

/// Waits until a task is running and returns it.
async fn running(c: &Client, job: &str, task: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .call(Method::GET, &format!("/jobs/{job}/tasks/{task}"), &[], None)
            .await;
        if r.body["state"] == "running" {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "task {task} never ran: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn node_loss_requeues_and_tasks_can_be_terminated_reactivated_and_deleted() {
    let (_emu, c) = emulator().await;
    let pool =
        json!({"id": "lossy", "vmSize": "x", "targetDedicatedNodes": 1, "taskSlotsPerNode": 2});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let job = json!({"id": "m", "poolInfo": {"poolId": "lossy"}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );

    // Node loss: the running task is requeued (not retried) and runs again on a new node.
    let t = json!({"id": "survivor", "commandLine": "sleep 1; echo done on $AZ_BATCH_NODE_ID"});
    assert_eq!(
        c.call(Method::POST, "/jobs/m/tasks", &[], Some(t))
            .await
            .status,
        201
    );
    let first = running(&c, "m", "survivor").await;
    let lost = first["nodeInfo"]["nodeId"].as_str().unwrap().to_string();
    let admin = format!("/_emulator/pools/lossy/nodes/{lost}/remove");
    let r = c.call(Method::POST, &admin, &[], None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body: Value = r.body;
    assert_eq!(body["requeuedTasks"], 1);
    let done = completed(&c, "m", "survivor").await;
    let info = &done["executionInfo"];
    assert_eq!(
        (
            info["exitCode"].as_i64(),
            info["requeueCount"].as_i64(),
            info["retryCount"].as_i64()
        ),
        (Some(0), Some(1), Some(0)),
        "{done}"
    );
    let new_node = done["nodeInfo"]["nodeId"].as_str().unwrap();
    assert_ne!(new_node, lost);
    let out = file(&c, "m", "survivor", "stdout.txt").await;
    assert_eq!(out.trim(), format!("done on {new_node}"));
    let r = c
        .call(
            Method::GET,
            &format!("/pools/lossy/nodes/{lost}"),
            &[],
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "NodeNotFound"));

    // Terminate a running task: it ends at once, as failed.
    let t = json!({"id": "long", "commandLine": "sleep 30"});
    assert_eq!(
        c.call(Method::POST, "/jobs/m/tasks", &[], Some(t))
            .await
            .status,
        201
    );
    running(&c, "m", "long").await;
    let started = Instant::now();
    let r = c
        .call(Method::POST, "/jobs/m/tasks/long/terminate", &[], None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let ended = completed(&c, "m", "long").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        ended["executionInfo"]["failureInfo"]["code"], "TaskEnded",
        "{ended}"
    );
    let r = c
        .call(Method::POST, "/jobs/m/tasks/long/terminate", &[], None)
        .await;
    assert_eq!((r.status, r.code()), (409, "TaskCompleted"));

    // Reactivate: only a failed task; it is queued again with fresh execution info.
    let r = c
        .call(Method::POST, "/jobs/m/tasks/survivor/reactivate", &[], None)
        .await;
    assert_eq!((r.status, r.code()), (409, "TaskNotFailed"));
    let r = c
        .call(Method::POST, "/jobs/m/tasks/long/reactivate", &[], None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let again = running(&c, "m", "long").await;
    assert_eq!(again["executionInfo"]["retryCount"], 0);
    // The terminated run's end, however late, is not recorded on the new run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c.call(Method::GET, "/jobs/m/tasks/long", &[], None).await;
    assert_eq!(r.body["state"], "running", "{}", r.body);

    // Delete: the running task stops and is gone.
    let r = c
        .call(Method::DELETE, "/jobs/m/tasks/long", &[], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = c.call(Method::GET, "/jobs/m/tasks/long", &[], None).await;
    assert_eq!((r.status, r.code()), (404, "TaskNotFound"));
    let r = c
        .call(Method::DELETE, "/jobs/m/tasks/long", &[], None)
        .await;
    assert_eq!((r.status, r.code()), (404, "TaskNotFound"));
}

#[tokio::test]
async fn multi_instance_tasks_span_nodes_and_wait_for_enough_of_them() {
    let (_emu, c) = emulator().await;
    let pool = json!({"id": "mpi", "vmSize": "x", "targetDedicatedNodes": 2, "enableInterNodeCommunication": true});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let job = json!({"id": "p", "poolInfo": {"poolId": "mpi"}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );
    let task = json!({
        "id": "ranks",
        "commandLine": "echo hosts=$AZ_BATCH_HOST_LIST master=$AZ_BATCH_IS_CURRENT_NODE_MASTER; for n in $(echo $AZ_BATCH_NODE_LIST | tr ';' ' '); do cat $AZ_BATCH_NODE_ROOT_DIR/../$n/shared/ready; done",
        "multiInstanceSettings": {
            "numberOfInstances": 2,
            "coordinationCommandLine": "echo ready:$AZ_BATCH_NODE_ID:$AZ_BATCH_IS_CURRENT_NODE_MASTER > $AZ_BATCH_NODE_SHARED_DIR/ready",
        },
    });
    assert_eq!(
        c.call(Method::POST, "/jobs/p/tasks", &[], Some(task))
            .await
            .status,
        201
    );
    let done = completed(&c, "p", "ranks").await;
    assert_eq!(done["executionInfo"]["exitCode"], 0, "{done}");
    let out = file(&c, "p", "ranks", "stdout.txt").await;
    assert!(
        out.contains("hosts=127.0.0.1,127.0.0.1 master=true"),
        "{out}"
    );
    let ready: Vec<&str> = out.lines().filter(|l| l.starts_with("ready:")).collect();
    assert_eq!(
        ready.len(),
        2,
        "coordination did not run on both nodes: {out}"
    );
    assert!(
        ready.iter().any(|l| l.ends_with(":true")) && ready.iter().any(|l| l.ends_with(":false")),
        "{out}"
    );

    // Three instances on two nodes: the task waits, then runs once a third node exists.
    let wide = json!({"id": "wide", "commandLine": "true", "multiInstanceSettings": {"numberOfInstances": 3}});
    assert_eq!(
        c.call(Method::POST, "/jobs/p/tasks", &[], Some(wide))
            .await
            .status,
        201
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = c.call(Method::GET, "/jobs/p/tasks/wide", &[], None).await;
    assert_eq!(r.body["state"], "active", "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/pools/mpi/resize",
            &[],
            Some(json!({"targetDedicatedNodes": 3})),
        )
        .await;
    assert_eq!(r.status, 202);
    let done = completed(&c, "p", "wide").await;
    assert_eq!(done["executionInfo"]["exitCode"], 0, "{done}");
}

#[tokio::test]
async fn the_job_preparation_task_runs_once_per_node_with_the_jobs_environment() {
    let (_emu, c) = emulator().await;
    let pool = json!({"id": "prep", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1, "taskSlotsPerNode": 2});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let job = json!({
        "id": "pj", "poolInfo": {"poolId": "prep"},
        "commonEnvironmentSettings": [{"name": "JOB_VAR", "value": "from-job"}],
        "jobPreparationTask": {
            "id": "setup",
            "commandLine": "echo \"$JOB_VAR [$TASK_VAR] $AZ_BATCH_TASK_ID\" >> \"$AZ_BATCH_NODE_SHARED_DIR/prep.txt\"",
        },
    });
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );
    let tasks = json!({"value": [
        {"id": "a", "commandLine": "cat \"$AZ_BATCH_NODE_SHARED_DIR/prep.txt\"; echo \"$JOB_VAR $TASK_VAR\"",
         "environmentSettings": [{"name": "TASK_VAR", "value": "from-a"}]},
        {"id": "b", "commandLine": "cat \"$AZ_BATCH_NODE_SHARED_DIR/prep.txt\"",
         "environmentSettings": [{"name": "TASK_VAR", "value": "from-b"}]},
    ]});
    let r = c
        .call(Method::POST, "/jobs/pj/addtaskcollection", &[], Some(tasks))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for task in ["a", "b"] {
        let done = completed(&c, "pj", task).await;
        assert_eq!(done["executionInfo"]["exitCode"], 0, "{done}");
    }
    // Once on the node, before either task; with the job's environment, not a task's.
    let a = file(&c, "pj", "a", "stdout.txt").await;
    assert_eq!(a, "from-job [] setup\nfrom-job from-a\n");
    let b = file(&c, "pj", "b", "stdout.txt").await;
    assert_eq!(b, "from-job [] setup\n");
    let status = c
        .call(
            Method::GET,
            "/jobs/pj/jobpreparationandreleasetaskstatus",
            &[],
            None,
        )
        .await;
    assert_eq!(status.status, 200, "{}", status.text);
    let entries = status.body["value"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{}", status.body);
    let info = &entries[0]["jobPreparationTaskExecutionInfo"];
    assert_eq!(
        (
            info["state"].as_str(),
            info["result"].as_str(),
            info["exitCode"].as_i64()
        ),
        (Some("completed"), Some("success"), Some(0)),
        "{info}"
    );
}

/// A node's start latency delays each task's command and holds its slot meanwhile: two tasks
/// on one slot start at least a latency apart from each other and from being added.
#[tokio::test]
async fn the_task_start_latency_delays_each_task_on_its_slot() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let account = redwood_emulator::batch::BatchAccount {
        name: "slowstart".into(),
        key: common::KEY.into(),
        bearer_token: None,
    };
    let latency = Duration::from_millis(400);
    let options = redwood_emulator::batch::BatchOptions {
        task_start_latency: latency,
        ..Default::default()
    };
    let emu = redwood_emulator::batch::BatchEmulator::start_with(vec![account], options)
        .await
        .unwrap();
    let c = Client {
        http: reqwest::Client::new(),
        base: emu.url("slowstart").unwrap(),
        account: "slowstart".into(),
        key: common::KEY.into(),
    };
    let pool =
        json!({"id": "one", "vmSize": "x", "targetDedicatedNodes": 1, "taskSlotsPerNode": 1});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let job = json!({"id": "l", "poolInfo": {"poolId": "one"}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );
    let tasks: Vec<Value> = (0..2)
        .map(|i| json!({"id": format!("t{i}"), "commandLine": "date +%s%N"}))
        .collect();
    let added = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let r = c
        .call(
            Method::POST,
            "/jobs/l/addtaskcollection",
            &[],
            Some(json!({"value": tasks})),
        )
        .await;
    assert_eq!(r.status, 200);
    let mut starts = Vec::new();
    for task in ["t0", "t1"] {
        completed(&c, "l", task).await;
        let out = file(&c, "l", task, "stdout.txt").await;
        starts.push(out.trim().parse::<u128>().unwrap());
    }
    starts.sort();
    let gap = |a: u128, b: u128| Duration::from_nanos(u64::try_from(b - a).unwrap());
    assert!(
        gap(added, starts[0]) >= latency,
        "first start after {:?}",
        gap(added, starts[0])
    );
    assert!(
        gap(starts[0], starts[1]) >= latency,
        "starts {:?} apart",
        gap(starts[0], starts[1])
    );
}
