//! A real Azurite for tests, started by the tests themselves.
//!
//! Order of choice: an external Azurite named by `REDWOOD_AZURITE` (a connection string), else a
//! container of the pinned image (through testcontainers' Azurite module) where a Docker daemon
//! can be reached, else a child `node` process running the Azurite version pinned in
//! `emulator/azurite/package.json`, installed with `npm ci` into a cache folder the first time.
//! `REDWOOD_AZURITE_DOCKER=0` (or `REDWOOD_DOCKER=0`) skips the container. Two storage accounts are configured: the well-known `devstoreaccount1` and
//! `devstoreaccount2`, for multi-region work.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The pinned Azurite version (must match `azurite/package.json`).
pub const AZURITE_VERSION: &str = "3.37.0";
const PACKAGE_JSON: &str = include_str!("../azurite/package.json");
const PACKAGE_LOCK: &str = include_str!("../azurite/package-lock.json");

/// The well-known emulator account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Its key, as Azurite's own source defines it (`EMULATOR_ACCOUNT_KEY`).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The second account, for multi-region tests.
pub const SECOND_ACCOUNT: &str = "devstoreaccount2";
/// Its key (base64, as Azurite expects).
pub const SECOND_ACCOUNT_KEY: &str = "cmVkd29vZC1zZWNvbmQtYWNjb3VudC1rZXktZm9yLXRlc3RzLW9ubHk=";

/// How long Azurite may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why Azurite could not be had.
#[derive(Debug)]
pub struct AzuriteError(pub String);

impl std::fmt::Display for AzuriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot start Azurite: {}", self.0)
    }
}

impl std::error::Error for AzuriteError {}

/// A storage account of the emulator.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// The account name.
    pub name: String,
    /// The account key (base64).
    pub key: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The container image of the pinned version.
pub const AZURITE_IMAGE: &str = "mcr.microsoft.com/azure-storage/azurite:3.37.0";

/// A running Azurite. The child process or container (if this fixture started one) stops when
/// dropped.
#[derive(Debug)]
pub struct Azurite {
    child: Option<Child>,
    container: Option<crate::docker::Container>,
    blob_base: String,
    queue_base: Option<String>,
    accounts: Vec<Account>,
    how: &'static str,
}

impl Azurite {
    /// An Azurite for tests: `REDWOOD_AZURITE`, else a container when a Docker daemon
    /// answers, else a child process.
    pub async fn start() -> Result<Azurite, AzuriteError> {
        if let Ok(conn) = std::env::var("REDWOOD_AZURITE") {
            return Azurite::external(&conn);
        }
        if crate::docker::wanted("REDWOOD_AZURITE_DOCKER") {
            match Azurite::start_container().await {
                Ok(az) => return Ok(az),
                Err(e) => tracing::warn!("{e}; starting Azurite as a process instead"),
            }
        }
        Azurite::start_process().await
    }

    /// Starts the pinned Azurite image in Docker (testcontainers' Azurite module), published
    /// on free loopback ports.
    pub async fn start_container() -> Result<Azurite, AzuriteError> {
        use testcontainers::ImageExt;
        use testcontainers_modules::azurite::{Azurite as AzuriteImage, BLOB_PORT, QUEUE_PORT};
        let accounts = default_accounts();
        let request = AzuriteImage::default()
            .with_accounts(accounts_env(&accounts))
            .with_tag(AZURITE_VERSION)
            .with_cmd([
                "azurite",
                "--blobHost",
                "0.0.0.0",
                "--queueHost",
                "0.0.0.0",
                "--tableHost",
                "0.0.0.0",
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
            ]);
        let (container, urls) = crate::docker::start(request, &[BLOB_PORT, QUEUE_PORT])
            .await
            .map_err(AzuriteError)?;
        let [blob_base, queue_base] = <[String; 2]>::try_from(urls)
            .map_err(|_| AzuriteError("the container published no ports".into()))?;
        Ok(Azurite {
            child: None,
            container: Some(container),
            blob_base,
            queue_base: Some(queue_base),
            accounts,
            how: "Docker container",
        })
    }

    /// An Azurite someone else runs, named by a connection string.
    pub fn external(connection_string: &str) -> Result<Azurite, AzuriteError> {
        let field = |name: &str| {
            connection_string
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_string())
        };
        let name = field("AccountName").unwrap_or_else(|| ACCOUNT.into());
        let key = field("AccountKey").unwrap_or_else(|| ACCOUNT_KEY.into());
        let endpoint = field("BlobEndpoint").ok_or_else(|| {
            AzuriteError("REDWOOD_AZURITE has no BlobEndpoint=http://host:port/account".into())
        })?;
        let blob_base = endpoint
            .trim_end_matches('/')
            .trim_end_matches(name.as_str())
            .trim_end_matches('/')
            .to_string();
        let queue_base = field("QueueEndpoint").map(|q| {
            q.trim_end_matches('/')
                .trim_end_matches(name.as_str())
                .trim_end_matches('/')
                .to_string()
        });
        Ok(Azurite {
            child: None,
            container: None,
            blob_base,
            queue_base,
            accounts: vec![Account { name, key }],
            how: "external (REDWOOD_AZURITE)",
        })
    }

    /// Starts Azurite as a child `node` process on free loopback ports, in memory.
    pub async fn start_process() -> Result<Azurite, AzuriteError> {
        let script = install().await?;
        let accounts = default_accounts();
        let mut command = Command::new("node");
        die_with_parent(&mut command);
        let mut child = command
            .arg(&script)
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
            .args(["--queueHost", "127.0.0.1", "--queuePort", "0"])
            .args(["--tableHost", "127.0.0.1", "--tablePort", "0"])
            .args([
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
            ])
            .env("AZURITE_ACCOUNTS", accounts_env(&accounts))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AzuriteError(format!("cannot run `node` ({e}); Node.js 18+ is needed")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| AzuriteError("no stdout".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| AzuriteError("no stderr".into()))?;
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "redwood::azurite", "{line}");
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let mut blob = None;
        let mut queue = None;
        let waited = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "redwood::azurite", "{line}");
                if let Some(url) = listening_url(&line, "Blob") {
                    blob = Some(url);
                } else if let Some(url) = listening_url(&line, "Queue") {
                    queue = Some(url);
                }
                if blob.is_some() && queue.is_some() {
                    return true;
                }
            }
            false
        })
        .await;
        let (Ok(true), Some(blob_base), Some(queue_base)) = (waited, blob, queue) else {
            let status = child.try_wait().ok().flatten();
            return Err(AzuriteError(format!(
                "it did not report listening ports within {START_TIMEOUT:?} (exit: {status:?})"
            )));
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::trace!(target: "redwood::azurite", "{line}");
            }
        });
        tracing::info!(blob = %blob_base, queue = %queue_base, "Azurite started");
        Ok(Azurite {
            child: Some(child),
            container: None,
            blob_base,
            queue_base: Some(queue_base),
            accounts,
            how: "child process",
        })
    }

    /// How this Azurite was obtained.
    pub fn how(&self) -> &'static str {
        self.how
    }

    /// Whether this fixture started it (with in-memory persistence): what it holds goes away
    /// when it stops.
    pub fn started_here(&self) -> bool {
        self.child.is_some() || self.container.is_some()
    }

    /// The accounts it serves (the first is the well-known one, when this fixture started it).
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// The blob service base URL (`http://127.0.0.1:<port>`), without the account.
    pub fn blob_base(&self) -> &str {
        &self.blob_base
    }

    /// The blob endpoint of an account (`http://127.0.0.1:<port>/<account>`).
    pub fn blob_endpoint(&self, account: &str) -> String {
        format!("{}/{account}", self.blob_base)
    }

    /// The queue endpoint of an account, when known.
    pub fn queue_endpoint(&self, account: &str) -> Option<String> {
        self.queue_base.as_ref().map(|q| format!("{q}/{account}"))
    }

    /// A connection string for an account whose blob requests go to `base` (a proxy in front of
    /// this Azurite, say) instead of Azurite itself.
    pub fn connection_string_via(&self, account: &Account, base: &str) -> String {
        let mut s = format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={}/{}",
            account.name, account.key, base, account.name
        );
        if let Some(q) = self.queue_endpoint(&account.name) {
            s.push_str(&format!(";QueueEndpoint={q}"));
        }
        s
    }

    /// A connection string for an account, as Azure tools take it.
    pub fn connection_string(&self, account: &Account) -> String {
        let mut s = format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={}",
            account.name,
            account.key,
            self.blob_endpoint(&account.name)
        );
        if let Some(q) = self.queue_endpoint(&account.name) {
            s.push_str(&format!(";QueueEndpoint={q}"));
        }
        s
    }

    /// Stops the child process or container now (also done on drop).
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        // A container is removed as it drops.
        drop(self.container.take());
    }
}

/// Makes a child end with the thread that started it even when this process is killed
/// outright (SIGKILL), instead of living on under PID 1 (Linux; elsewhere nothing).
pub(crate) fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

fn default_accounts() -> Vec<Account> {
    vec![
        Account {
            name: ACCOUNT.into(),
            key: ACCOUNT_KEY.into(),
        },
        Account {
            name: SECOND_ACCOUNT.into(),
            key: SECOND_ACCOUNT_KEY.into(),
        },
    ]
}

/// The `AZURITE_ACCOUNTS` value: `name:key;name:key`.
fn accounts_env(accounts: &[Account]) -> String {
    accounts
        .iter()
        .map(|a| format!("{}:{}", a.name, a.key))
        .collect::<Vec<_>>()
        .join(";")
}

fn listening_url(line: &str, service: &str) -> Option<String> {
    let marker = format!("Azurite {service} service is successfully listening at ");
    line.split_once(&marker)
        .map(|(_, url)| url.trim().trim_end_matches('/').to_string())
}

/// Where pinned test tools are installed: `REDWOOD_CACHE_DIR`, else `$XDG_CACHE_HOME/redwood`,
/// else `~/.cache/redwood`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("REDWOOD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("redwood");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("redwood"),
        None => std::env::temp_dir().join("redwood-cache"),
    }
}

/// Installs the pinned Azurite once (`npm ci` into the cache) and returns its entry script.
async fn install() -> Result<PathBuf, AzuriteError> {
    let dir = cache_root().join(format!("azurite-{AZURITE_VERSION}"));
    let script = dir.join("node_modules/azurite/dist/src/azurite.js");
    if script.is_file() {
        return Ok(script);
    }
    // One install at a time in this process (tests start Azurites on several threads at once,
    // and they would share the staging folder below); the next one finds it done.
    static INSTALLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = INSTALLING.lock().await;
    if script.is_file() {
        return Ok(script);
    }
    // Install beside the final folder, then rename: concurrent test processes never see a
    // half-installed copy, and the loser of the race uses the winner's.
    let staging = dir.with_file_name(format!(
        "azurite-{AZURITE_VERSION}.staging-{}",
        std::process::id()
    ));
    let io = |what: &str, p: &Path, e: std::io::Error| {
        AzuriteError(format!("{what} {}: {e}", p.display()))
    };
    // What a killed process of the same id left behind.
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| io("cannot create", &staging, e))?;
    std::fs::write(staging.join("package.json"), PACKAGE_JSON)
        .map_err(|e| io("cannot write", &staging, e))?;
    std::fs::write(staging.join("package-lock.json"), PACKAGE_LOCK)
        .map_err(|e| io("cannot write", &staging, e))?;
    tracing::info!(dir = %dir.display(), "installing Azurite {AZURITE_VERSION} with npm ci (once)");
    let out = Command::new("npm")
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .current_dir(&staging)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            AzuriteError(format!(
                "cannot run `npm` ({e}); npm is needed to install Azurite"
            ))
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(AzuriteError(format!(
            "`npm ci` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if std::fs::rename(&staging, &dir).is_err() {
        // Another process finished first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    if script.is_file() {
        Ok(script)
    } else {
        Err(AzuriteError(format!(
            "Azurite was installed but {} is missing",
            script.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines() {
        let line = "Azurite Blob service is successfully listening at http://127.0.0.1:36475";
        assert_eq!(
            listening_url(line, "Blob").as_deref(),
            Some("http://127.0.0.1:36475")
        );
        assert_eq!(listening_url(line, "Queue"), None);
    }

    #[test]
    fn external_connection_string() {
        let a = Azurite::external(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=k;\
             BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
        )
        .unwrap();
        assert_eq!(a.blob_base(), "http://127.0.0.1:10000");
        assert_eq!(a.accounts()[0].key, "k");
        assert!(!format!("{:?}", a.accounts()[0]).contains("\"k\""));
    }

    #[test]
    fn pinned_version_matches_package_json() {
        assert!(AZURITE_IMAGE.ends_with(AZURITE_VERSION));
        assert!(PACKAGE_JSON.contains(&format!("\"azurite\": \"{AZURITE_VERSION}\"")));
    }
}
