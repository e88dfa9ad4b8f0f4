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

fn redwood(store: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_redwood"))
        .args(["--storage", store])
        .args(args)
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

#[redwood::test]
async fn every_command_reads_a_real_job() -> redwood::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let rw = redwood::Session::builder()
        .storage_url(&store)
        .workers(2)
        .progress(false)
        .build()?;
    let job = rw
        .map_with(uneven, 0..12u64, TaskOptions::default().retries(1))
        .await?;
    let outcomes = job.collect_outcomes().await;
    assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 2);
    let id = job.id().to_string();
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
