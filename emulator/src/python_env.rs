//! Cached virtualenvs of pinned Python packages (moto's S3 emulator, Microsoft's SDKs in the
//! tests): made once per requirements file under [`cache_root`], installed beside the final
//! folder and renamed into place, so a concurrent process never sees a half-made one.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::azurite::cache_root;

/// The interpreter of a virtualenv holding exactly `requirements` (a pinned `requirements.txt`),
/// made the first time under the cache as `<name>-<hash of requirements>`. Run it as
/// `python -m module`: the venv's own scripts name the staging folder it was made in.
pub async fn virtualenv(name: &str, requirements: &str) -> Result<PathBuf, String> {
    // FNV-1a: a stable name per requirements file, so a new pin gets a new venv.
    let hash = requirements.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let dir = cache_root().join(format!("{name}-{hash:016x}"));
    let python = dir.join("bin/python");
    if python.is_file() {
        return Ok(python);
    }
    // One install at a time in this process (tests start emulators on several threads).
    static INSTALLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = INSTALLING.lock().await;
    if python.is_file() {
        return Ok(python);
    }
    let staging = dir.with_extension(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging); // what a killed process of this id left
    let made = make(&staging, requirements, name).await;
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging); // another process won the race
    }
    if python.is_file() {
        Ok(python)
    } else {
        Err(format!(
            "the virtualenv {} has no bin/python",
            dir.display()
        ))
    }
}

async fn make(staging: &Path, requirements: &str, name: &str) -> Result<(), String> {
    if let Some(parent) = staging.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    tracing::info!(venv = %staging.display(), "installing {name} with pip (once)");
    run(
        Command::new("python3").args(["-m", "venv"]).arg(staging),
        "`python3 -m venv` (Python 3.10+ with venv is needed)",
    )
    .await?;
    let file = staging.join("requirements.txt");
    std::fs::write(&file, requirements)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    run(
        Command::new(staging.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-input", "-r"])
            .arg(&file),
        &format!("`pip install` of {name}"),
    )
    .await
}

async fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}
