//! The `redwood` tool against jobs made by real runs on the local backend: a job with a retry,
//! a panic and a crash, read back from storage by the binary alone.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use redwood::TaskOptions;

/// Task 3 fails its first attempt, task 5 always panics, task 7 crashes its worker; the rest
/// sleep a little and succeed.
#[redwood::remote]
fn uneven(i: u64) -> u64 {
    match i {
        3 if redwood::context::attempt() == 1 => panic!("first try of task 3 fails"),
        5 => panic!("task 5 always fails"),
        7 => {
            eprintln!("task 7 is about to exit");
            std::process::exit(3)
        }
        _ => {
            std::thread::sleep(Duration::from_millis(20 * (i % 4)));
            i * 10
        }
    }
}

/// Runs the `redwood` binary on `store` with `env`; returns success, stdout and stderr.
fn run_tool(store: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_redwood"))
        .args(["--storage", store])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("REDWOOD_PROFILE")
        .env_remove("REDWOOD_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the redwood binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn redwood(store: &str, args: &[&str]) -> (bool, String, String) {
    run_tool(store, &[], args)
}

/// A local session of two workers on a fresh folder: the folder (kept alive), its URL, the
/// session.
fn local_session() -> redwood::Result<(tempfile::TempDir, String, redwood::Session)> {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = format!("file://{}", dir.path().display());
    let rw = redwood::Session::builder()
        .storage_url(&store)
        .workers(2)
        .progress(false)
        .build()?;
    Ok((dir, store, rw))
}

#[redwood::test]
async fn every_command_reads_a_real_job() -> redwood::Result<()> {
    let (dir, store, rw) = local_session()?;
    let job = rw
        .map_with(uneven, 0..12u64, TaskOptions::default().retries(1))
        .await?;
    let outcomes = job.collect_outcomes().await;
    assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 2);
    let id = job.id().to_string();
    // The same picture from code.
    use redwood::timeline::JobTimeline;
    let from_code = dir.path().join("from-code.svg");
    job.timeline(&from_code).await?;
    assert!(
        std::fs::read_to_string(&from_code)
            .unwrap()
            .contains("<rect")
    );
    assert_eq!(rw.call(uneven, 1).await?, 10);
    rw.close().await?;

    // jobs: both, as a table and as JSON.
    let (ok, table, err) = redwood(&store, &["jobs"]);
    assert!(ok, "{err}");
    assert!(
        table.contains(&id) && table.contains("10/12 done, 2 failed"),
        "{table}"
    );
    let (ok, json, err) = redwood(&store, &["jobs", "--json"]);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{json}");
    let ours = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id.as_str())
        .unwrap();
    assert_eq!(ours["failed"], 2);
    assert_eq!(ours["succeeded"], 10);
    assert!(ours["bytes"].as_u64().unwrap() > 0);

    // show: stats, lanes, and why tasks 5 and 7 failed.
    let (ok, shown, err) = redwood(&store, &["show", &id]);
    assert!(ok, "{err}");
    assert!(
        shown.contains("12 tasks: 10 succeeded, 2 failed"),
        "{shown}"
    );
    assert!(shown.contains("task 5 (attempt 2): panicked"), "{shown}");
    assert!(shown.contains("task 5 always fails"), "{shown}");
    assert!(
        shown.contains("task 7 (attempt 2): crashed (exit code 3)"),
        "{shown}"
    );
    assert!(shown.contains("local w"), "{shown}");
    let (ok, json, err) = redwood(&store, &["show", &id, "--json"]);
    assert!(ok, "{err}");
    let detail: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(detail["retries"].as_u64().unwrap() >= 3, "{json}");
    assert_eq!(detail["failures"][1]["exit_code"], 3);

    // logs: the failed task's stderr tail and error.
    let (ok, logs, err) = redwood(&store, &["logs", &id, "--task", "7"]);
    assert!(ok, "{err}");
    assert!(logs.contains("task 7 is about to exit"), "{logs}");
    assert!(logs.contains("failed: crashed"), "{logs}");
    let (ok, _, err) = redwood(&store, &["logs", &id, "--task", "12"]);
    assert!(!ok && err.contains("there is no task 12"), "{err}");

    // timeline: SVG and PNG, with bars in the lanes.
    let svg = dir.path().join("job.svg");
    let png = dir.path().join("job.png");
    for picture in [&svg, &png] {
        let (ok, _, err) = redwood(
            &store,
            &["timeline", &id, "-o", &picture.display().to_string()],
        );
        assert!(ok, "{err}");
    }
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains(&id) && text.contains("<rect"),
        "the SVG has no bars"
    );
    check_png(&png);
    // REDWOOD_KEEP_TIMELINE=/path/prefix keeps the pictures and the `show` text to look at.
    if let Ok(keep) = std::env::var("REDWOOD_KEEP_TIMELINE") {
        let _ = std::fs::copy(&png, format!("{keep}.png"));
        let _ = std::fs::copy(&svg, format!("{keep}.svg"));
        let _ = std::fs::write(format!("{keep}.txt"), &shown);
    }

    // Bad input: a job that is not there, a picture format it cannot write.
    let (ok, _, err) = redwood(&store, &["show", &id[..id.len() - 1]]);
    assert!(!ok && err.contains("did you mean"), "{err}");
    let (ok, _, err) = redwood(&store, &["timeline", &id, "-o", "x.gif"]);
    assert!(!ok && err.contains("name it .svg or .png"), "{err}");
    let missing = dir.path().join("not-here");
    let (ok, _, err) = redwood(&format!("file://{}", missing.display()), &["jobs"]);
    assert!(!ok && err.contains("no storage folder"), "{err}");
    assert!(
        !missing.exists(),
        "a reading command created the storage folder"
    );
    let (ok, _, err) = redwood("hdfs://nowhere", &["jobs"]);
    assert!(!ok && err.contains("unsupported storage scheme"), "{err}");
    Ok(())
}

/// The PNG has the picture's size and bars of the succeeded colour in it.
fn check_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() > 10_000,
        "a {}-byte PNG is too small",
        bytes.len()
    );
    let picture = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(picture.dimensions(), (1400, 900));
    let green = picture
        .pixels()
        .filter(|p| p.0[1] > 140 && p.0[0] < 110 && p.0[2] < 110)
        .count();
    assert!(green > 500, "only {green} green pixels: no bars drawn");
}

/// Sleeps, so a job of them is still running when it is cancelled.
#[redwood::remote]
fn slow(i: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    i
}

/// Waits until the file `gate` exists (at most a minute), then sleeps a little.
#[redwood::remote]
fn gated(gate: String, i: u64) -> u64 {
    let gate = Path::new(&gate);
    for _ in 0..3000 {
        if gate.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    i
}

/// `logs --follow`, started while a job runs, prints each task once as it ends and returns
/// when the last one has.
#[redwood::test]
async fn logs_follow_a_running_job_to_its_end() -> redwood::Result<()> {
    let (_dir, store, rw) = local_session()?;
    let job = rw.map(slow, 0..8u64).await?;
    let id = job.id().to_string();
    let follower = tokio::process::Command::new(env!("CARGO_BIN_EXE_redwood"))
        .args(["--storage", &store, "logs", &id, "--follow"])
        .env_remove("REDWOOD_PROFILE")
        .env_remove("REDWOOD_CONFIG")
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the redwood binary runs");
    let unfinished_at_start = 8 - job.summary().finished;
    assert!(
        unfinished_at_start > 2,
        "the job ended before the follower started"
    );
    job.collect().await?;
    // It looks every 2 s: it has ended within a few looks after the job.
    let out = tokio::time::timeout(Duration::from_secs(30), follower.wait_with_output())
        .await
        .expect("`logs --follow` returns once the job has ended")
        .expect("the follower's output");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for task in 0..8 {
        let header = format!("== task {task}\n");
        assert_eq!(said.matches(&header).count(), 1, "task {task}: {said}");
    }
    assert!(!said.contains("has not ended"), "{said}");
    Ok(())
}

#[redwood::test]
async fn cancel_stops_a_running_job_and_cleanup_frees_what_is_over() -> redwood::Result<()> {
    let (_dir, store, rw) = local_session()?;
    let done = rw.map(uneven, [1u64, 2]).await?;
    done.collect().await?;
    let job = rw.map(slow, 0..60u64).await?;
    let id = job.id().to_string();
    let started = std::time::Instant::now();
    let (ok, said, err) = redwood(&store, &["cancel", &id]);
    assert!(ok, "{err}");
    assert!(said.contains("marked cancelled"), "{said}");
    let outcomes = job.collect_outcomes().await;
    // 60 tasks of 300 ms on 2 workers take 9 s; cancelled, far less.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let cancelled = outcomes
        .iter()
        .filter(|o| {
            o.as_ref()
                .is_err_and(|e| e.to_string().contains("cancelled"))
        })
        .count();
    assert!(cancelled > 20, "only {cancelled} tasks were cancelled");
    let (ok, shown, err) = redwood(&store, &["show", &id]);
    assert!(ok && shown.contains("(cancelled)"), "{shown}{err}");
    let (ok, said, _) = redwood(&store, &["cancel", &id]);
    assert!(ok && said.contains("already cancelled"), "{said}");

    // Nothing is old enough by default (7 days); with 0s, both jobs are over.
    let (ok, said, err) = redwood(&store, &["cleanup", "--dry-run"]);
    assert!(ok && said.contains("would free 0 jobs"), "{said}{err}");
    let (ok, said, err) = redwood(&store, &["cleanup", "--older-than", "0s", "--dry-run"]);
    assert!(
        ok && said.contains("would delete job") && said.contains("would free 2 jobs"),
        "{said}{err}"
    );
    let (ok, listed, _) = redwood(&store, &["jobs"]);
    assert!(
        ok && listed.contains(&id),
        "a dry run deleted something: {listed}"
    );
    let (ok, said, err) = redwood(&store, &["cleanup", "--older-than", "0s"]);
    assert!(ok && said.contains("freed 2 jobs"), "{said}{err}");
    let (ok, listed, _) = redwood(&store, &["jobs"]);
    assert!(ok && listed.contains("no jobs"), "{listed}");
    let (ok, _, err) = redwood(&store, &["cleanup", "--older-than", "soon"]);
    assert!(!ok && err.contains("--older-than"), "{err}");
    rw.close().await
}

/// The tool on an Azurite store, in `namespace`; returns success and all it wrote.
fn redwood_on(store: &str, namespace: &str, connection: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["--namespace", namespace];
    all.extend_from_slice(args);
    let env = [("AZURE_STORAGE_CONNECTION_STRING", connection)];
    let (ok, out, err) = run_tool(store, &env, &all);
    (ok, format!("{out}{err}"))
}

#[redwood::test]
async fn batch_and_two_region_jobs_read_back_from_azurite() -> redwood::Result<()> {
    let cloud = redwood::testing::TestCloud::start().await?;
    let (store, connection) = cloud.storage();
    let (store, connection) = (store.to_string(), connection.to_string());

    // Another namespace's session creates the pool and is dropped without a cleanup: its
    // Batch job and the pool are left on the account.
    let elsewhere = cloud
        .session_builder("azure-batch")?
        .namespace("elsewhere")
        .build()?;
    let other = elsewhere.map(slow, 0..2u64).await?;
    other.collect().await?;
    let other = other.id().to_string();

    // A Batch job: lanes are nodes, and the crashed task's stored log is there.
    let rw = cloud
        .session_builder("azure-batch")?
        .namespace("batch")
        .build()?;
    // A job whose stored folder is lost: its Batch job is a leftover.
    let lost = rw.map(slow, 0..2u64).await?;
    lost.collect().await?;
    let lost = lost.id().to_string();
    rw.storage()
        .delete_prefix(&rw.storage().layout().job(&lost))
        .await?;
    drop(elsewhere);
    let job = rw
        .map_with(uneven, 0..10u64, TaskOptions::default().retries(1))
        .await?;
    let outcomes = job.collect_outcomes().await;
    assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 2);
    let id = job.id().to_string();
    rw.close().await?;
    let (ok, shown) = redwood_on(&store, "batch", &connection, &["show", &id]);
    assert!(ok, "{shown}");
    assert!(shown.contains("backend    azure-batch"), "{shown}");
    assert!(shown.contains("task 5 (attempt 2): panicked"), "{shown}");
    assert!(
        shown.contains("/w") || shown.contains("node"),
        "no node lanes: {shown}"
    );
    let (ok, logs) = redwood_on(&store, "batch", &connection, &["logs", &id, "--task", "7"]);
    assert!(ok && logs.contains("task 7 is about to exit"), "{logs}");
    // cleanup deletes the job's Batch job too, on the profile's (here: REDWOOD_*) account.
    let west = cloud.batch_env("west")?;
    let client =
        redwood::azure::BatchClientBuilder::new(&west[0].1, &west[1].1, &west[2].1).build()?;
    let batch_job = format!("/jobs/{id}");
    client.get("get_job", &batch_job).await?;
    let mut env: Vec<(&str, &str)> = west.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("AZURE_STORAGE_CONNECTION_STRING", &connection));
    env.push(("REDWOOD_BACKEND", "azure-batch"));
    // Each ended job's Batch job is terminated as its driver ends, just after its results.
    for job in [&id, &lost, &other] {
        let path = format!("/jobs/{job}");
        let started = std::time::Instant::now();
        while client.get("get_job", &path).await?["state"] != "completed" {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{job} not terminated"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A dry run names the leftovers of this namespace, and the idle pool Redwood created, and
    // deletes nothing.
    let (ok, said, err) = run_tool(
        &store,
        &env,
        &["--namespace", "batch", "cleanup", "--dry-run"],
    );
    assert!(ok, "{said}{err}");
    assert!(
        said.contains(&format!("would delete Batch job `{lost}`"))
            && said.contains("(made for a job no longer stored)")
            && said.contains("would delete Batch pool `redwood`"),
        "{said}{err}"
    );
    assert!(!said.contains(&id) && !said.contains(&other), "{said}");
    client.get("get_job", &format!("/jobs/{lost}")).await?;
    client.get("get_pool", "/pools/redwood").await?;
    let (ok, said, err) = run_tool(
        &store,
        &env,
        &["--namespace", "batch", "cleanup", "--older-than", "0s"],
    );
    assert!(ok && said.contains("freed 1 jobs"), "{said}{err}");
    assert!(
        said.contains("released 2 Batch jobs") && said.contains("Batch pool `redwood`"),
        "{said}{err}"
    );
    for gone in [
        batch_job,
        format!("/jobs/{lost}"),
        "/pools/redwood".to_string(),
    ] {
        let e = client.get("get", &gone).await.unwrap_err();
        assert_eq!(e.kind(), redwood::ErrorKind::NotFound, "{gone}: {e}");
    }
    // Another namespace's Batch job is not this one's to delete.
    client.get("get_job", &format!("/jobs/{other}")).await?;

    // A node lost mid-job: its tasks are requeued, which `show` counts and the timeline
    // outlines.
    let rw = cloud
        .session_builder("azure-batch")?
        .namespace("lossy")
        .build()?;
    // The tasks wait for a gate opened after the loss, so the lost node surely runs some.
    let gate = cloud.scratch().join("lossy-gate");
    let gate_arg = gate.display().to_string();
    let job = rw
        .map(gated, (0..24u64).map(|i| (gate_arg.clone(), i)))
        .await?;
    cloud.lose_node("west").await?;
    std::fs::write(&gate, b"").expect("the gate opens");
    assert_eq!(job.collect().await?, (0..24).collect::<Vec<u64>>());
    let id = job.id().to_string();
    rw.close().await?;
    let (ok, json) = redwood_on(&store, "lossy", &connection, &["show", &id, "--json"]);
    assert!(ok, "{json}");
    let detail: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(detail["requeues"].as_u64().unwrap() > 0, "{json}");
    let lossy_png = std::env::temp_dir().join(format!("lossy-{}.png", std::process::id()));
    let (ok, said) = redwood_on(
        &store,
        "lossy",
        &connection,
        &["timeline", &id, "-o", &lossy_png.display().to_string()],
    );
    assert!(ok, "{said}");
    let picture = image::open(&lossy_png).unwrap().to_rgb8();
    let outlined = picture
        .pixels()
        .filter(|p| {
            p.0[0].abs_diff(148) < 20 && p.0[1].abs_diff(103) < 20 && p.0[2].abs_diff(189) < 20
        })
        .count();
    assert!(outlined > 100, "only {outlined} pixels of requeue outline");
    if let Ok(keep) = std::env::var("REDWOOD_KEEP_TIMELINE") {
        let _ = std::fs::copy(&lossy_png, format!("{keep}-lossy.png"));
    }
    let _ = std::fs::remove_file(&lossy_png);

    // Two regions: lanes grouped by region.
    let two = cloud
        .session_builder("local-regions")?
        .namespace("regions")
        .build()?;
    let job = two.map(slow, 0..12u64).await?;
    job.collect().await?;
    let id = job.id().to_string();
    two.close().await?;
    let (ok, json) = redwood_on(&store, "regions", &connection, &["show", &id, "--json"]);
    assert!(ok, "{json}");
    let detail: serde_json::Value = serde_json::from_str(&json).unwrap();
    let regions = detail["per_region"].as_object().unwrap();
    assert_eq!(regions.len(), 2, "{json}");
    let png = std::env::temp_dir().join(format!("regions-{}.png", std::process::id()));
    let (ok, said) = redwood_on(
        &store,
        "regions",
        &connection,
        &["timeline", &id, "-o", &png.display().to_string()],
    );
    assert!(ok, "{said}");
    check_png(&png);
    if let Ok(keep) = std::env::var("REDWOOD_KEEP_TIMELINE") {
        let _ = std::fs::copy(&png, format!("{keep}-regions.png"));
    }
    let _ = std::fs::remove_file(&png);
    Ok(())
}
