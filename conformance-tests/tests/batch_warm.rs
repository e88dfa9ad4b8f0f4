//! Warm workers on the azure-batch backend (the Batch emulator and a real Azurite with its
//! queue service, through `redwood::testing::TestCloud`): workers outlive a job and serve the
//! next one, exit when idle, and a node lost mid-group loses and duplicates nothing.

use std::time::{Duration, Instant};

use redwood::WaitFor;
use redwood::testing::TestCloud;
use redwood_conformance::functions::sleep_echo;

/// A Batch client on the cloud's emulated account.
fn client(cloud: &TestCloud) -> redwood::Result<redwood::azure::BatchClient> {
    let env = cloud.batch_env("west")?;
    redwood::azure::BatchClientBuilder::new(&env[0].1, &env[1].1, &env[2].1).build()
}

/// The warm workers' Batch tasks: `(id, state)`.
async fn warm_workers(cloud: &TestCloud) -> redwood::Result<Vec<(String, String)>> {
    let client = client(cloud)?;
    let mut out = Vec::new();
    for job in client
        .list("list_jobs", "/jobs", &[("$select", "id")])
        .await?
    {
        let Some(id) = job["id"]
            .as_str()
            .filter(|id| id.starts_with("redwood-warm-"))
        else {
            continue;
        };
        let tasks = client
            .list(
                "list_tasks",
                &format!("/jobs/{id}/tasks"),
                &[("$select", "id,state")],
            )
            .await?;
        out.extend(tasks.iter().map(|t| {
            (
                t["id"].as_str().unwrap_or_default().to_string(),
                t["state"].as_str().unwrap_or_default().to_string(),
            )
        }));
    }
    Ok(out)
}

#[redwood::test]
async fn warm_workers_serve_job_after_job_and_exit_when_idle() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("azure-batch-warm")?;
    let first = rw.map(sleep_echo, (0..40u64).map(|i| (20u64, i))).await?;
    assert_eq!(first.collect().await?, (0..40).collect::<Vec<_>>());
    let workers = warm_workers(&cloud).await?;
    assert_eq!(workers.len(), 2, "one worker per node: {workers:?}");
    // The next job runs on the same workers: no Batch task is added for it.
    let second = rw
        .map(sleep_echo, (0..40u64).map(|i| (20u64, i + 100)))
        .await?;
    assert_eq!(
        second.collect().await?,
        (100..140).collect::<Vec<_>>(),
        "the second job's results"
    );
    let again = warm_workers(&cloud).await?;
    assert_eq!(again.len(), 2, "the second job started workers: {again:?}");
    // Idle for 20 s, they exit.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let workers = warm_workers(&cloud).await?;
        if workers.iter().all(|(_, state)| state == "completed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "idle warm workers did not exit: {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Work arriving later starts new ones.
    let third = rw.call(sleep_echo, (1u64, 7u64)).await?;
    assert_eq!(third, 7);
    let started = warm_workers(&cloud).await?;
    assert!(
        started.iter().filter(|(_, s)| s != "completed").count() >= 1,
        "no worker was started for new work: {started:?}"
    );
    Ok(())
}

#[redwood::test]
async fn a_node_lost_mid_group_loses_and_duplicates_nothing() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("azure-batch-warm")?;
    let n = 48u64;
    let job = rw.map(sleep_echo, (0..n).map(|i| (300u64, i))).await?;
    job.wait(WaitFor::Any).await?;
    cloud.lose_node("west").await?;
    // The lost node's groups come back to the queue once their messages are visible again,
    // and the other node's worker runs them.
    let got = job.clone().collect().await?;
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    let stats = job.stats();
    assert_eq!(
        stats.retries, 0,
        "a lost node is not a failed attempt: {stats:?}"
    );
    // Every task has one stored outcome: an attach finds them all and runs nothing again.
    let again = redwood::Job::<u64>::attach(&rw, job.id()).await?;
    assert_eq!(again.summary().finished, n);
    Ok(())
}
