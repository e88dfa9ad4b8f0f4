//! The `redwood-emulator` binary: it prints usable endpoints and keys, and rejects bad flags.

mod common;

use std::process::Stdio;

use axum::http::Method;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_redwood-emulator");

#[tokio::test]
async fn prints_endpoints_that_answer_with_the_printed_keys() {
    let mut child = tokio::process::Command::new(BIN)
        .args(["--account", "alpha", "--account", "beta", "--no-azurite"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut env = std::collections::HashMap::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("# running") {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
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
