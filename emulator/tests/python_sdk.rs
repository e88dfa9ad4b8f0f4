//! Microsoft's own `azure-batch` Python SDK (pinned in `tests/sdk/requirements.txt`, installed
//! into a cached virtualenv by this test) drives the Batch emulator unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use redwood_emulator::azurite::cache_root;
use redwood_emulator::batch::{BatchAccount, BatchEmulator};

const REQUIREMENTS: &str = include_str!("sdk/requirements.txt");
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk");

/// Runs an install step; a failure stops the test with its output.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Held while something is installed into the cache.
static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A virtualenv with the pinned SDK, made once per requirements file.
async fn sdk_python() -> PathBuf {
    redwood_emulator::python_env::virtualenv("azure-batch-sdk", REQUIREMENTS)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs one of the SDK scripts against a fresh emulator; it prints `all steps passed` when
/// every step behaved like the service.
async fn run_script(script: &str) {
    let python = sdk_python().await;
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

/// Microsoft's `batch_samples_hello_world.py`, from the pinned `azure-batch` source package on
/// PyPI (the only official Batch sample it ships), run unchanged: it reads the endpoint from
/// `samples.cfg` and signs in with `DefaultAzureCredential`, which here finds a managed identity
/// (an App Service identity endpoint this test serves) and sends its token over `https`, so the
/// emulator runs with TLS and accepts that token. The sample prints any error it meets; it must
/// print none, and exit 0 after deleting its job and pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_hello_world_sample_runs_unchanged() {
    const TOKEN: &str = "sample-token-for-the-emulator";
    const SECRET: &str = "identity-header-secret";
    let python = sdk_python().await;
    let sample = tokio::task::spawn_blocking({
        let python = python.clone();
        move || official_sample(&python, "batch_samples_hello_world.py")
    })
    .await
    .unwrap();
    let account = BatchAccount {
        name: "sampleacct".into(),
        key: "c2FtcGxlLWFjY291bnQta2V5".into(),
        bearer_token: Some(TOKEN.into()),
    };
    let options = redwood_emulator::batch::BatchOptions {
        tls: true,
        ..Default::default()
    };
    let emu = redwood_emulator::batch::BatchEmulator::start_with(vec![account.clone()], options)
        .await
        .unwrap();
    let url = emu.url("sampleacct").unwrap();
    assert!(url.starts_with("https://"), "{url}");
    let (identity, tokens) = identity_endpoint(TOKEN, SECRET).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("samples.cfg"),
        format!("[Batch]\nBATCH_ACCOUNT_ENDPOINT = {url}\n"),
    )
    .unwrap();
    let out = tokio::process::Command::new(&python)
        .arg(&sample)
        .current_dir(dir.path())
        .env("REQUESTS_CA_BUNDLE", emu.tls_certificate().unwrap())
        .env("IDENTITY_ENDPOINT", &identity)
        .env("IDENTITY_HEADER", SECRET)
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("AZURE_TENANT_ID")
        .env_remove("AZURE_CLIENT_SECRET")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty(),
        "the sample failed or printed an error:\n{stdout}\n{stderr}"
    );
    assert!(
        tokens.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the sample never asked for a token"
    );
}

/// Extracts an official sample from the pinned `azure-batch` source package (downloaded once
/// into the cache) and returns its path.
fn official_sample(python: &Path, name: &str) -> PathBuf {
    let dir = cache_root().join("azure-batch-15.1.0-sdist");
    let script = dir.join(name);
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    if script.is_file() {
        return script;
    }
    let staging = dir.with_extension(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    run(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args([
                "--no-deps",
                "--no-binary",
                ":all:",
                "azure-batch==15.1.0",
                "-d",
            ])
            .arg(&staging),
        "pip download of the azure-batch 15.1.0 source package",
    );
    run(
        Command::new(python)
            .arg("-c")
            .arg(
                "import sys, tarfile, pathlib\n\
                 folder = pathlib.Path(sys.argv[1])\n\
                 with tarfile.open(folder / 'azure_batch-15.1.0.tar.gz') as t:\n\
                 \x20   for m in t.getmembers():\n\
                 \x20       if m.isfile() and '/samples/' in m.name and m.name.endswith('.py'):\n\
                 \x20           data = t.extractfile(m).read()\n\
                 \x20           (folder / pathlib.Path(m.name).name).write_bytes(data)\n",
            )
            .arg(&staging),
        "unpacking the samples",
    );
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging); // another test process won the race
    }
    script
}

/// An App Service managed identity endpoint (what `IDENTITY_ENDPOINT` names) that hands out
/// `token` to requests carrying `secret`; returns its URL and how many tokens it gave.
async fn identity_endpoint(
    token: &'static str,
    secret: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::http::{HeaderMap, StatusCode};
    let given = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = given.clone();
    let app = axum::Router::new().route(
        "/msi/token",
        axum::routing::get(move |headers: HeaderMap| {
            let count = count.clone();
            async move {
                let header = headers
                    .get("x-identity-header")
                    .and_then(|v| v.to_str().ok());
                if header != Some(secret) {
                    return Err(StatusCode::UNAUTHORIZED);
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let expires = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    + 3600;
                Ok(axum::Json(serde_json::json!({
                    "access_token": token,
                    "expires_on": expires.to_string(),
                    "resource": "https://batch.core.windows.net/",
                    "token_type": "Bearer",
                })))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/msi/token"), given)
}
