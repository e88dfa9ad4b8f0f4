//! A real S3 emulator for tests: moto's server mode, started by the tests themselves.
//!
//! Order of choice: an external S3-compatible endpoint named by `REDWOOD_S3_ENDPOINT` (with
//! `REDWOOD_S3_ACCESS_KEY_ID` and `REDWOOD_S3_SECRET_ACCESS_KEY`, default moto's `testing`),
//! else a container of moto's image at the pinned version where a Docker daemon can be reached
//! (testcontainers; `REDWOOD_S3_DOCKER=0` or `REDWOOD_DOCKER=0` skips it), else a child process
//! of the moto version pinned in `emulator/moto/requirements.txt`, installed with pip into a
//! cached virtualenv the first time. Moto keeps everything in
//! memory: what a test stores goes away when it stops.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::azurite::die_with_parent;

/// The pinned moto version (must match `moto/requirements.txt`).
pub const MOTO_VERSION: &str = "5.2.6";
const REQUIREMENTS: &str = include_str!("../moto/requirements.txt");

/// The access key the emulator is used with (moto accepts any).
pub const ACCESS_KEY_ID: &str = "testing";
/// Its secret.
pub const SECRET_ACCESS_KEY: &str = "testing";
/// The region buckets are made in.
pub const REGION: &str = "us-east-1";

/// How long moto may take to start listening (the first start imports a lot of Python).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// moto's image (its tags follow moto's versions).
pub const MOTO_IMAGE: &str = "motoserver/moto";

/// A running S3 emulator; the child process or container (if this fixture started one) stops
/// when dropped.
#[derive(Debug)]
pub struct S3Emulator {
    child: Option<Child>,
    container: Option<crate::docker::Container>,
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
    how: &'static str,
    http: reqwest::Client,
}

impl S3Emulator {
    /// An S3 emulator for tests: `REDWOOD_S3_ENDPOINT`, else moto in a container where a
    /// Docker daemon answers, else moto as a child process.
    pub async fn start() -> Result<S3Emulator, String> {
        if let Ok(endpoint) = std::env::var("REDWOOD_S3_ENDPOINT") {
            return Ok(S3Emulator::external(&endpoint));
        }
        if crate::docker::wanted("REDWOOD_S3_DOCKER") {
            match S3Emulator::start_container().await {
                Ok(s3) => return Ok(s3),
                Err(e) => tracing::warn!("{e}; starting moto as a process instead"),
            }
        }
        S3Emulator::start_process().await
    }

    /// Starts moto's image at the pinned version in Docker, on a free loopback port.
    pub async fn start_container() -> Result<S3Emulator, String> {
        use testcontainers::GenericImage;
        use testcontainers::core::{IntoContainerPort, WaitFor};
        let port = 5000.tcp();
        let image = GenericImage::new(MOTO_IMAGE, MOTO_VERSION)
            .with_exposed_port(port)
            .with_wait_for(WaitFor::message_on_either_std("Running on"));
        let (container, urls) = crate::docker::start(image.into(), &[port]).await?;
        let endpoint = urls
            .into_iter()
            .next()
            .ok_or("moto's container published no port")?;
        Ok(S3Emulator {
            child: None,
            container: Some(container),
            endpoint,
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: SECRET_ACCESS_KEY.into(),
            how: "Docker container",
            http: plain_http_client(),
        })
    }

    /// An S3-compatible service someone else runs.
    pub fn external(endpoint: &str) -> S3Emulator {
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| "testing".into());
        S3Emulator {
            child: None,
            container: None,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            access_key_id: var("REDWOOD_S3_ACCESS_KEY_ID"),
            secret_access_key: var("REDWOOD_S3_SECRET_ACCESS_KEY"),
            how: "external (REDWOOD_S3_ENDPOINT)",
            http: plain_http_client(),
        }
    }

    /// Starts the pinned moto as a child process on a free loopback port.
    pub async fn start_process() -> Result<S3Emulator, String> {
        let python = crate::python_env::virtualenv(&format!("moto-{MOTO_VERSION}"), REQUIREMENTS)
            .await
            .map_err(|e| format!("cannot install moto: {e}"))?;
        let mut command = Command::new(&python);
        die_with_parent(&mut command);
        let mut child = command
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        let stdout = child.stdout.take().ok_or("moto has no stdout")?;
        let stderr = child.stderr.take().ok_or("moto has no stderr")?;
        // Werkzeug says where it listens on stderr, then logs each request there.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::trace!(target: "redwood::moto", "{line}");
                if let Some(url) = listening_url(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url);
                }
            }
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::trace!(target: "redwood::moto", "{line}");
            }
        });
        let endpoint = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(url)) => url,
            _ => {
                let status = child.try_wait().ok().flatten();
                return Err(format!(
                    "moto did not report a listening port within {START_TIMEOUT:?} (exit: \
                     {status:?})"
                ));
            }
        };
        tracing::info!(%endpoint, "moto (S3) started");
        Ok(S3Emulator {
            child: Some(child),
            container: None,
            endpoint,
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: SECRET_ACCESS_KEY.into(),
            how: "child process",
            http: plain_http_client(),
        })
    }

    /// How this emulator was obtained.
    pub fn how(&self) -> &'static str {
        self.how
    }

    /// Whether this fixture started it: what it holds goes away when it stops.
    pub fn started_here(&self) -> bool {
        self.child.is_some() || self.container.is_some()
    }

    /// Its endpoint (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `storage_options` of an `s3://` store on it, its requests sent to `endpoint` (this
    /// emulator, or a proxy in front of it).
    pub fn storage_options_via(&self, endpoint: &str) -> Vec<(String, String)> {
        vec![
            ("endpoint".into(), endpoint.to_string()),
            ("access_key_id".into(), self.access_key_id.clone()),
            ("secret_access_key".into(), self.secret_access_key.clone()),
            ("region".into(), REGION.into()),
        ]
    }

    /// The `storage_options` of an `s3://` store on it.
    pub fn storage_options(&self) -> Vec<(String, String)> {
        self.storage_options_via(&self.endpoint)
    }

    /// The same settings as the `AWS_*` variables a second process reads.
    pub fn env_via(&self, endpoint: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT".into(), endpoint.to_string()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.secret_access_key.clone(),
            ),
            ("AWS_REGION".into(), REGION.into()),
        ]
    }

    /// Makes a bucket (one that exists is fine). Redwood itself never creates buckets.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        let url = format!("{}/{bucket}", self.endpoint);
        let response = self
            .http
            .put(&url)
            .header("Content-Length", "0")
            .send()
            .await
            .map_err(|e| format!("cannot reach the S3 emulator at {url}: {e}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() || body.contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        Err(format!(
            "cannot create bucket `{bucket}`: HTTP {status}: {}",
            body.trim()
        ))
    }

    /// Stops the child process or container now (also done on drop).
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        drop(self.container.take());
    }
}

/// A client for the emulator's own plain-http calls (reqwest is built without a TLS provider
/// of its own, so rustls' ring provider is installed first, as everywhere in Redwood).
fn plain_http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The URL of werkzeug's ` * Running on http://127.0.0.1:PORT` line.
fn listening_url(line: &str) -> Option<String> {
    line.split_once("Running on ")
        .map(|(_, url)| url.trim())
        .filter(|url| url.starts_with("http://"))
        .map(|url| url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listening_line() {
        assert_eq!(
            listening_url(" * Running on http://127.0.0.1:34213").as_deref(),
            Some("http://127.0.0.1:34213")
        );
        assert_eq!(listening_url("Press CTRL+C to quit"), None);
    }

    #[test]
    fn pinned_version_matches_the_requirements() {
        assert!(REQUIREMENTS.contains(&format!("\nmoto=={MOTO_VERSION}\n")));
    }
}
