//! The `redwood-emulator` binary: it prints usable endpoints and keys, and rejects bad flags.

mod common;

use std::process::Stdio;

use axum::http::Method;

const BIN: &str = env!("CARGO_BIN_EXE_redwood-emulator");

#[tokio::test]
async fn prints_endpoints_that_answer_with_the_printed_keys() {
    let mut child = tokio::process::Command::new(BIN)
        .args(["--account", "alpha", "--account", "beta", "--no-azurite"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let env = common::printed_env(child.stdout.take().unwrap()).await;
    for name in ["alpha", "beta"] {
        let upper = name.to_uppercase();
        let client = common::Client {
            http: common::http(),
            base: env[&format!("REDWOOD_BATCH_URL_{upper}")].clone(),
            account: env[&format!("REDWOOD_BATCH_ACCOUNT_{upper}")].clone(),
            key: env[&format!("REDWOOD_BATCH_KEY_{upper}")].clone(),
        };
        let r = client.call(Method::GET, "/pools", &[], None).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text);
    }
    assert_ne!(
        env["REDWOOD_BATCH_URL_ALPHA"],
        env["REDWOOD_BATCH_URL_BETA"]
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn bad_flags_are_clear_errors() {
    let out = tokio::process::Command::new(BIN)
        .args(["--account", "Bad_Name", "--no-azurite"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Bad_Name") && err.contains("lower-case"),
        "{err}"
    );
    let out = tokio::process::Command::new(BIN)
        .arg("--help")
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--account"));
}

/// The direct children of a process (Linux).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[tokio::test]
async fn sigterm_stops_azurite_and_removes_the_node_folders() {
    let mut child = tokio::process::Command::new(BIN)
        .args(["--account", "sigterm"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let env = common::printed_env(child.stdout.take().unwrap()).await;
    let client = common::Client {
        http: common::http(),
        base: env["REDWOOD_BATCH_URL"].clone(),
        account: env["REDWOOD_BATCH_ACCOUNT"].clone(),
        key: env["REDWOOD_BATCH_KEY"].clone(),
    };
    let pool = serde_json::json!({"id": "p", "vmSize": "x", "targetDedicatedNodes": 1});
    assert_eq!(
        client
            .call(Method::POST, "/pools", &[], Some(pool))
            .await
            .status,
        201
    );
    let folders = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("redwood-batch-sigterm-"))
            })
            .collect()
    };
    let ours = folders();
    assert!(!ours.is_empty(), "no node folder");
    let azurite = children(pid);
    assert!(!azurite.is_empty(), "no Azurite child");

    // SAFETY: signalling the child process this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("the emulator did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    for p in azurite {
        let alive = std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        assert!(!alive, "Azurite ({p}) outlived the emulator");
    }
    for folder in ours {
        assert!(!folder.exists(), "{} is left behind", folder.display());
    }
}

#[tokio::test]
async fn runs_a_functions_host_for_an_app_folder() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("handler");
    std::fs::write(
        &script,
        "#!/bin/sh\nexec python3 -m http.server --bind 127.0.0.1 \"$FUNCTIONS_CUSTOMHANDLER_PORT\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("host.json"),
        r#"{"customHandler": {"description": {"defaultExecutablePath": "handler"}}}"#,
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    std::fs::write(
        dir.path().join("work/function.json"),
        r#"{"bindings": [{"type": "queueTrigger", "name": "m", "queueName": "cli-work"}]}"#,
    )
    .unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["--account", "fnhost", "--functions"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let env = common::printed_env(child.stdout.take().unwrap()).await;
    let url = &env["REDWOOD_FUNCTIONS_URL"];
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(env["REDWOOD_FUNCTIONS_QUEUE_CONNECTION_STRING"].contains("QueueEndpoint="));
    let http = reqwest::Client::new();
    let status = http
        .get(format!("{url}/_emulator/functions/status"))
        .header("x-functions-key", &env["REDWOOD_FUNCTIONS_MASTER_KEY"])
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let denied = http
        .get(format!("{url}/_emulator/functions/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    child.kill().await.unwrap();

    let out = tokio::process::Command::new(BIN)
        .args([
            "--no-azurite",
            "--functions-setting",
            "nonsense",
            "--functions",
        ])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=VALUE"));
}
