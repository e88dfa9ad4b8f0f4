//! Microsoft's own `azure-batch` Python SDK (pinned in `tests/sdk/requirements.txt`, installed
//! into a cached virtualenv by this test) drives the Batch emulator unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use redwood_emulator::azurite::cache_root;
use redwood_emulator::batch::{BatchAccount, BatchEmulator};

const REQUIREMENTS: &str = include_str!("sdk/requirements.txt");
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk");

/// A virtualenv with the pinned SDK, made once per requirements file.
fn sdk_python() -> PathBuf {
    let hash = REQUIREMENTS.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let dir = cache_root().join(format!("azure-batch-sdk-{hash:016x}"));
    let python = dir.join("bin/python");
    if python.is_file() {
        return python;
    }
    let staging = dir.with_extension(format!("staging-{}", std::process::id()));
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&staging),
        "python3 -m venv (Python 3.9+ is needed)",
    );
    let requirements = staging.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).unwrap();
    run(
        Command::new(staging.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
        "pip install of the pinned azure-batch SDK",
    );
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging); // another test process won the race
    }
    // The venv's scripts name their own folder; after the rename, run the interpreter only.
    python
}

/// Runs one of the SDK scripts against a fresh emulator; it prints `all steps passed` when
/// every step behaved like the service.
async fn run_script(script: &str) {
    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let account = BatchAccount {
        name: "sdkacct".into(),
        key: "c2RrLWFjY291bnQta2V5LWZvci10ZXN0cw==".into(),
        bearer_token: None,
    };
    let emu = BatchEmulator::start(vec![account.clone()]).await.unwrap();
    let url = emu.url("sdkacct").unwrap();
    let out = tokio::process::Command::new(&python)
        .arg(Path::new(SDK_DIR).join(script))
        .env("REDWOOD_BATCH_URL", &url)
        .env("REDWOOD_BATCH_ACCOUNT", &account.name)
        .env("REDWOOD_BATCH_KEY", &account.key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "{script} failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_works_unchanged() {
    run_script("batch_smoke.py").await;
}

/// Job and pool updates with ETags, task counts, dependencies, exit conditions, node files,
/// subtasks, node counts, supported images, autoscale evaluation, error shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_of_the_data_plane_works_through_the_sdk() {
    run_script("batch_operations.py").await;
}
