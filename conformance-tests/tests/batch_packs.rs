//! Packed tasks on the azure-batch backend (the Batch emulator and a real Azurite, through
//! `redwood::testing::TestCloud`): a node lost mid-pack, a task failing inside a pack, a
//! timeout inside a pack, a cancel mid-pack, and automatic packs that release the tasks their
//! budget did not reach.

use std::time::{Duration, Instant};

use redwood::testing::TestCloud;
use redwood::{TaskErrorKind, TaskOptions, WaitFor};
use redwood_conformance::functions::{sleep_echo, wait_for_gate};

/// Task 3's first attempt fails; every other attempt returns its input.
#[redwood::remote]
fn third_fails_once(i: u64) -> u64 {
    if i == 3 && redwood::context::attempt() == 1 {
        panic!("task 3 fails its first attempt");
    }
    i
}

/// The Batch task ids of a job.
async fn batch_tasks(cloud: &TestCloud, job: &str) -> Vec<serde_json::Value> {
    let env = cloud.batch_env("west").expect("an emulated Batch account");
    let client = redwood::azure::BatchClientBuilder::new(&env[0].1, &env[1].1, &env[2].1)
        .build()
        .expect("a Batch client");
    client
        .list(
            "list_tasks",
            &format!("/jobs/{job}/tasks"),
            &[("$select", "id,state,executionInfo")],
        )
        .await
        .expect("the job's tasks")
}

fn ids(tasks: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> = tasks
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[redwood::test]
async fn a_node_lost_mid_pack_loses_and_duplicates_nothing() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("azure-batch")?;
    let n = 48u64;
    // The tasks wait for a gate opened after the loss, so the lost node surely runs a pack.
    let gate = cloud.scratch().join("pack-loss-gate");
    let gate_arg = gate.display().to_string();
    let job = rw
        .map_with(
            wait_for_gate,
            (0..n).map(|i| (gate_arg.clone(), i)),
            TaskOptions::new().pack(6),
        )
        .await?;
    cloud.lose_node("west").await?;
    std::fs::write(&gate, b"").expect("the gate opens");
    let got = job.clone().collect().await?;
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    let stats = job.stats();
    assert_eq!(stats.retries, 0, "requeues are not retries: {stats:?}");
    assert!(
        stats.requeues > 0,
        "no pack was on the lost node: {stats:?}"
    );
    let tasks = batch_tasks(&cloud, job.id()).await;
    assert!(
        ids(&tasks).iter().all(|id| id.starts_with('p')),
        "{:?}",
        ids(&tasks)
    );
    assert_eq!(tasks.len(), 8, "48 tasks in packs of 6: {:?}", ids(&tasks));
    // Every task has one stored outcome: an attach finds them all and runs nothing again.
    let again = redwood::Job::<u64>::attach(&rw, job.id()).await?;
    assert_eq!(again.summary().finished, n);
    Ok(())
}

#[redwood::test]
async fn a_task_failing_inside_a_pack_is_retried_alone() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("azure-batch")?;
    let job = rw
        .map_with(
            third_fails_once,
            0..14u64,
            TaskOptions::new().pack(7).retries(1),
        )
        .await?;
    assert_eq!(job.clone().collect().await?, (0..14).collect::<Vec<_>>());
    assert_eq!(job.stats().retries, 1);
    let tasks = batch_tasks(&cloud, job.id()).await;
    assert_eq!(ids(&tasks), vec!["p0-6", "p7-13", "t3-r1"]);
    Ok(())
}

#[redwood::test]
async fn a_timeout_inside_a_pack_ends_only_that_task() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("azure-batch")?;
    let items = vec![(100u64, 0u64), (100, 1), (60_000, 2), (100, 3), (100, 4)];
    let started = Instant::now();
    let job = rw
        .map_with(
            sleep_echo,
            items,
            TaskOptions::new().pack(5).timeout(Duration::from_secs(2)),
        )
        .await?;
    let outcomes = job.collect_outcomes().await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    for (task, outcome) in outcomes.iter().enumerate() {
        match (task, outcome) {
            (2, Err(e)) => assert_eq!(
                e.task_error().map(|t| t.kind),
                Some(TaskErrorKind::Timeout),
                "{e}"
            ),
            (2, Ok(v)) => panic!("task 2 was not timed out: {v}"),
            (t, Ok(v)) => assert_eq!(*v, t as u64),
            (t, Err(e)) => panic!("task {t} failed with its neighbour: {e}"),
        }
    }
    // One Batch task ran them all: the tasks after the timeout ran on a new worker in it.
    assert_eq!(ids(&batch_tasks(&cloud, job.id()).await), vec!["p0-4"]);
    Ok(())
}

#[redwood::test]
async fn a_cancel_mid_pack_stops_the_pack() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("azure-batch")?;
    let job = rw
        .map_with(
            sleep_echo,
            (0..80u64).map(|i| (500u64, i)),
            TaskOptions::new().pack(10),
        )
        .await?;
    job.wait(WaitFor::Any).await?;
    let started = Instant::now();
    let cancelled = job.cancel().await?;
    let outcomes = job.collect_outcomes().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(cancelled > 20, "only {cancelled} cancelled");
    let ended_cancelled = outcomes
        .iter()
        .filter(|o| matches!(o, Err(e) if e.task_error().map(|t| t.kind) == Some(TaskErrorKind::Cancelled)))
        .count() as u64;
    assert_eq!(ended_cancelled, cancelled);
    let done = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(done > 0, "no task had finished");
    // Batch ended the packs that were running.
    let tasks = batch_tasks(&cloud, job.id()).await;
    assert!(tasks.iter().all(|t| t["state"] == "completed"), "{tasks:?}");
    Ok(())
}

#[redwood::test]
async fn automatic_packs_release_what_their_budget_did_not_reach() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("azure-batch")?;
    // 96 one-second tasks on 8 slots: packs of 12 at first, each releasing what it has not
    // started after six seconds; that goes out again in packs sized from the times measured.
    let job = rw.map(sleep_echo, (0..96u64).map(|i| (1000u64, i))).await?;
    assert_eq!(job.clone().collect().await?, (0..96).collect::<Vec<_>>());
    assert_eq!(job.stats().retries, 0);
    let names = ids(&batch_tasks(&cloud, job.id()).await);
    let first: Vec<&String> = names
        .iter()
        .filter(|id| id.starts_with('p') && !id.contains("-s"))
        .collect();
    assert_eq!(first.len(), 8, "one pack per slot at first: {names:?}");
    // Released tasks went out again, spread over the slots free by then (packs of one
    // are plain tasks).
    let again = names.len() - first.len();
    assert!(again > 0, "nothing was released: {names:?}");
    Ok(())
}
