//! A Google Cloud Storage emulator for tests: fake-gcs-server, the one object_store's own CI
//! uses, at a pinned version.
//!
//! Order of choice: an external emulator named by `REDWOOD_GCS_ENDPOINT`
//! (`http://host:port`), else a container of the pinned fake-gcs-server image where a Docker
//! daemon can be reached (testcontainers; `REDWOOD_GCS_DOCKER=0` or `REDWOOD_DOCKER=0` skips
//! it). There is no process fallback: fake-gcs-server ships as a Go binary and an image only,
//! and the GCS emulators on PyPI (gcp-storage-emulator, gcloud-storage-emulator) answer the
//! XML API that object_store's GCS client uses for listing, `HEAD`, `DELETE` and conditional
//! writes with 501 (measured with gcp-storage-emulator 2026.7.19).

use std::time::Duration;

/// The pinned fake-gcs-server image.
pub const FAKE_GCS_IMAGE: &str = "fsouza/fake-gcs-server";
/// Its pinned version.
pub const FAKE_GCS_VERSION: &str = "1.52.2";

/// A running GCS emulator; the container (if this fixture started one) stops when dropped.
#[derive(Debug)]
pub struct GcsEmulator {
    container: Option<crate::docker::Container>,
    endpoint: String,
    how: &'static str,
}

impl GcsEmulator {
    /// A GCS emulator for tests: `REDWOOD_GCS_ENDPOINT`, else fake-gcs-server in Docker; an
    /// error saying what is missing otherwise.
    pub async fn start() -> Result<GcsEmulator, String> {
        if let Ok(endpoint) = std::env::var("REDWOOD_GCS_ENDPOINT") {
            return Ok(GcsEmulator {
                container: None,
                endpoint: endpoint.trim_end_matches('/').to_string(),
                how: "external (REDWOOD_GCS_ENDPOINT)",
            });
        }
        if !crate::docker::wanted("REDWOOD_GCS_DOCKER") {
            return Err(GcsEmulator::unavailable().into());
        }
        GcsEmulator::start_container().await
    }

    /// Why no GCS emulator can be had here.
    pub fn unavailable() -> &'static str {
        "no GCS emulator: fake-gcs-server runs in Docker (no daemon here) or where \
         REDWOOD_GCS_ENDPOINT points; no package registry ships one that speaks the XML API \
         object_store uses"
    }

    /// Starts the pinned fake-gcs-server image in Docker, on a free loopback port, in memory.
    pub async fn start_container() -> Result<GcsEmulator, String> {
        use testcontainers::core::{IntoContainerPort, WaitFor};
        use testcontainers::{GenericImage, ImageExt};
        let port = 4443.tcp();
        let image = GenericImage::new(FAKE_GCS_IMAGE, FAKE_GCS_VERSION)
            .with_exposed_port(port)
            .with_wait_for(WaitFor::message_on_either_std("server started at"))
            .with_cmd(["-scheme", "http", "-backend", "memory", "-port", "4443"]);
        let (container, urls) = crate::docker::start(image, &[port]).await?;
        let endpoint = urls
            .into_iter()
            .next()
            .ok_or("fake-gcs-server's container published no port")?;
        Ok(GcsEmulator {
            container: Some(container),
            endpoint,
            how: "Docker container",
        })
    }

    /// How this emulator was obtained.
    pub fn how(&self) -> &'static str {
        self.how
    }

    /// Whether this fixture started it: what it holds goes away when it stops.
    pub fn started_here(&self) -> bool {
        self.container.is_some()
    }

    /// Its endpoint (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `storage_options` of a `gs://` store on it, its requests sent to `endpoint` (this
    /// emulator, or a proxy in front of it): the endpoint, and a service account key that
    /// turns OAuth off (as object_store's own tests reach fake-gcs-server).
    pub fn storage_options_via(&self, endpoint: &str) -> Vec<(String, String)> {
        let key = serde_json::json!({
            "gcs_base_url": endpoint,
            "disable_oauth": true,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        });
        vec![
            ("endpoint".into(), endpoint.to_string()),
            ("service_account_key".into(), key.to_string()),
        ]
    }

    /// The `storage_options` of a `gs://` store on it.
    pub fn storage_options(&self) -> Vec<(String, String)> {
        self.storage_options_via(&self.endpoint)
    }

    /// The same settings as the `GOOGLE_*` variables a second process reads.
    pub fn env_via(&self, endpoint: &str) -> Vec<(String, String)> {
        self.storage_options_via(endpoint)
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "endpoint" => ("GOOGLE_BASE_URL".to_string(), v),
                _ => ("GOOGLE_SERVICE_ACCOUNT_KEY".to_string(), v),
            })
            .collect()
    }

    /// Makes a bucket (one that exists is fine), with the JSON API's insert.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("{}/storage/v1/b", self.endpoint);
        let response = reqwest::Client::new()
            .post(&url)
            .timeout(Duration::from_secs(30))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "name": bucket }).to_string())
            .send()
            .await
            .map_err(|e| format!("cannot reach the GCS emulator at {url}: {e}"))?;
        let status = response.status();
        if status.is_success() || status.as_u16() == 409 {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(format!(
            "cannot create bucket `{bucket}`: HTTP {status}: {}",
            body.trim()
        ))
    }

    /// Stops the container now (also done on drop).
    pub async fn stop(mut self) {
        drop(self.container.take());
    }
}
