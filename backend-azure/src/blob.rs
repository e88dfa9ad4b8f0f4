//! Azure Blob storage: `az://<container>/<prefix>` through object_store's Azure client, with the
//! credentials from `storage_options`, `AZURE_STORAGE_CONNECTION_STRING` or the other
//! `AZURE_STORAGE_*` variables, and a missing container created with one signed REST call.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use tracing::Instrument;

use redwood_core::retry::RetryPolicy;
use redwood_core::storage::scheme::StorageScheme;
use redwood_core::storage::{Access, Container, Storage};
use redwood_core::{Error, ErrorKind, Result};

use crate::account::{AccountSettings, parse_connection_string};
use crate::sas::{encode_path, service_sas, sign_with_key};

inventory::submit! {
    StorageScheme {
        schemes: &["az", "azure"],
        open,
    }
}

/// The REST API version of the container-create call (supported by Azure and Azurite).
const API_VERSION: &str = "2021-08-06";

/// Opens `az://<container>/<prefix>`.
pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Storage> {
    let bad = |why: String| {
        Error::new(ErrorKind::Config, why)
            .with_operation("Storage::open")
            .with_context("storage", url)
    };
    let rest = url
        .strip_prefix("az://")
        .or_else(|| url.strip_prefix("azure://"))
        .ok_or_else(|| bad("not an az:// URL".into()))?;
    let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if container.is_empty() {
        return Err(bad(
            "az:// needs a container: az://<container>/<prefix>".into()
        ));
    }
    if !valid_container_name(container) {
        return Err(bad(format!(
            "`{container}` is not a valid container name (3-63 lower-case letters, digits and \
             single hyphens, starting with a letter or digit)"
        )));
    }

    let mut settings = AccountSettings::default();
    let mut passthrough = Vec::new();
    let conn_from_env = std::env::var("AZURE_STORAGE_CONNECTION_STRING").ok();
    if let Some(conn) = options.get("connection_string").or(conn_from_env.as_ref()) {
        settings = parse_connection_string(conn).map_err(|e| bad(e.message().to_string()))?;
    }
    for (k, v) in options {
        match k.as_str() {
            "connection_string" => {}
            "account" | "account_name" => settings.account = Some(v.clone()),
            "key" | "account_key" | "access_key" => settings.key = Some(v.clone()),
            "sas" | "sas_token" | "sas_key" => settings.sas = Some(v.clone()),
            "endpoint" | "blob_endpoint" => {
                settings.endpoint = Some(v.trim_end_matches('/').into())
            }
            "queue_endpoint" => settings.queue_endpoint = Some(v.trim_end_matches('/').into()),
            other => {
                let key: AzureConfigKey = other.parse().map_err(|_| {
                    bad(format!(
                        "unknown storage option `{other}` (known: connection_string, account, \
                         key, sas, endpoint, queue_endpoint, and object_store's azure_* keys)"
                    ))
                })?;
                passthrough.push((key, v.clone()));
            }
        }
    }

    // The TLS provider for reqwest (built without one, to keep a lean dependency tree).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // One retry policy: object_store retries each request with the storage policy's numbers.
    let per_request = redwood_stores::retry_config();
    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_container_name(container)
        .with_retry(per_request);
    if let Some(a) = &settings.account {
        builder = builder.with_account(a);
    }
    if let Some(k) = &settings.key {
        builder = builder.with_access_key(k);
    }
    if let Some(s) = &settings.sas {
        builder = builder.with_config(AzureConfigKey::SasKey, s);
    }
    if let Some(e) = &settings.endpoint {
        builder = builder
            .with_endpoint(e.clone())
            .with_allow_http(e.starts_with("http://"));
    }
    for (k, v) in passthrough {
        builder = builder.with_config(k, v);
    }
    let store = builder.build().map_err(|e| {
        bad(format!(
            "cannot build the Azure client: {e}; give credentials with storage_options \
             (connection_string, or account + key/sas + endpoint) or AZURE_STORAGE_CONNECTION_STRING"
        ))
    })?;
    let account = settings
        .account
        .clone()
        .or_else(|| std::env::var("AZURE_STORAGE_ACCOUNT_NAME").ok())
        .unwrap_or_default();
    let endpoint = settings
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
    let queue_endpoint = settings.queue_endpoint.clone().or_else(|| {
        (settings.endpoint.is_none() && !account.is_empty())
            .then(|| format!("https://{account}.queue.core.windows.net"))
    });
    let identity = format!("{endpoint}/{container}");
    let creator = Arc::new(AzureContainer {
        container: container.to_string(),
        account,
        endpoint,
        queue_endpoint,
        key: settings.key.clone(),
        sas: settings.sas.clone(),
        http: reqwest::Client::new(),
    });
    Ok(
        Storage::from_store(Arc::new(store), redact_url(url), prefix, true)
            .with_container(creator)
            .with_identity(identity),
    )
}

fn redact_url(url: &str) -> String {
    // az:// URLs carry no secrets; keep any query string (a SAS) out of logs all the same.
    url.split('?').next().unwrap_or(url).to_string()
}

fn valid_container_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.contains("--")
        && !name.ends_with('-')
}

/// Creates the container a store writes to, with the account key (SharedKey) or a SAS.
struct AzureContainer {
    container: String,
    account: String,
    endpoint: String,
    /// The account's queue service, when known (from a connection string, or Azure's default
    /// for the account).
    queue_endpoint: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    http: reqwest::Client,
}

impl fmt::Debug for AzureContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureContainer")
            .field("container", &self.container)
            .field("account", &self.account)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AzureContainer {
    /// The SharedKey `Authorization` header of a container-create request.
    fn shared_key(&self, key: &str, path: &str, date: &str) -> Result<String> {
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{}{path}\nrestype:container",
            self.account
        );
        let signature =
            sign_with_key(key, &to_sign).map_err(|e| e.with_context("account", &self.account))?;
        Ok(format!("SharedKey {}:{signature}", self.account))
    }
}

#[async_trait]
impl Container for AzureContainer {
    fn is_missing(&self, e: &object_store::Error) -> bool {
        matches!(e, object_store::Error::NotFound { .. })
            || e.to_string().contains("ContainerNotFound")
    }

    /// Azurite answers a batch delete (which object_store also uses for a single delete) too
    /// slowly under load for the client's timeout, so on a loopback endpoint objects are
    /// deleted with plain `DELETE` requests instead.
    fn bulk_delete(&self) -> bool {
        let host = reqwest::Url::parse(&self.endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        !(host == "localhost" || host.starts_with("127.") || host == "[::1]")
    }

    fn name(&self) -> &str {
        &self.container
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    async fn delete_each(&self, blobs: Vec<String>) -> Result<()> {
        use futures::StreamExt;
        let url = self.sas_url(None, "d", SystemTime::now() + Duration::from_secs(3600))?;
        let (base, sas) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let span = tracing::debug_span!("azure.delete_each", container = %self.container, blobs = blobs.len());
        let deletes = futures::stream::iter(blobs)
            .map(|blob| {
                let target = format!("{base}/{}?{sas}", encode_path(&blob));
                RetryPolicy::STORAGE.run("azure.delete", move || {
                    let request = self
                        .http
                        .delete(target.clone())
                        .header("x-ms-version", API_VERSION);
                    let blob = blob.clone();
                    async move {
                        let failed = |why: String, transient: bool| {
                            Error::new(ErrorKind::Storage, format!("cannot delete `{blob}`: {why}"))
                                .set_retryable(transient)
                        };
                        match request.send().await {
                            Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => {
                                Ok(())
                            }
                            Ok(r) => Err(failed(
                                format!("HTTP {}", r.status()),
                                is_transient_status(r.status().as_u16()),
                            )),
                            Err(e) => Err(failed(redwood_core::redact::transport_error(&e), true)),
                        }
                    }
                })
            })
            .buffer_unordered(32);
        let results: Vec<Result<()>> = deletes.collect().instrument(span).await;
        results.into_iter().collect()
    }

    fn signed_url(&self, blob: Option<&str>, access: Access, expiry: SystemTime) -> Result<String> {
        // Azure's permission letters, in the order the service requires.
        let mut permissions = String::new();
        for (granted, letter) in [(access.read, 'r'), (access.write, 'w'), (access.list, 'l')] {
            if granted {
                permissions.push(letter);
            }
        }
        self.sas_url(blob, &permissions, expiry)
    }

    async fn create(&self) -> Result<()> {
        let span = tracing::info_span!("azure.create_container", container = %self.container);
        RetryPolicy::STORAGE
            .run("azure.create_container", || self.create_once())
            .instrument(span)
            .await
    }
}

/// Refuses a store other than Azure Blob for `backend`, whose `workers` (nodes, a function
/// app) reach it through signed URLs.
pub(crate) fn require_blob_storage(storage: &Storage, backend: &str, workers: &str) -> Result<()> {
    if storage.url().starts_with("az://") || storage.url().starts_with("azure://") {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "backend `{backend}` needs Azure Blob storage (az://...) that {workers} can reach; {} \
             is not",
            storage.url()
        ),
    ))
}

/// Whether an HTTP status is worth another attempt: 5xx, 408 and 429.
pub(crate) fn is_transient_status(status: u16) -> bool {
    (500..600).contains(&status) || matches!(status, 408 | 429)
}

impl AzureContainer {
    /// A service SAS URL with Azure's permission letters (`r`, `w`, `l`, `d`, ...).
    fn sas_url(&self, blob: Option<&str>, permissions: &str, expiry: SystemTime) -> Result<String> {
        let key = self.key.as_deref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "signing URLs needs the account key of `{}` (a SAS cannot mint another)",
                    self.account
                ),
            )
        })?;
        let base = format!("{}/{}", self.endpoint.trim_end_matches('/'), self.container);
        let url = match blob {
            Some(b) => format!("{base}/{}", encode_path(b)),
            None => base,
        };
        let query = service_sas(
            &self.account,
            key,
            &self.container,
            blob,
            permissions,
            expiry,
        )?;
        Ok(format!("{url}?{query}"))
    }

    /// One attempt at creating the container (409 — it exists — counts as success).
    async fn create_once(&self) -> Result<()> {
        let base = format!("{}/{}", self.endpoint.trim_end_matches('/'), self.container);
        let path = reqwest::Url::parse(&base)
            .map_err(|e| Error::new(ErrorKind::Config, format!("bad endpoint {base}: {e}")))?
            .path()
            .to_string();
        let date = httpdate::fmt_http_date(SystemTime::now());
        let mut request = self
            .http
            .put(format!("{base}?restype=container"))
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION)
            .header("Content-Length", "0");
        if let Some(key) = &self.key {
            request = request.header("Authorization", self.shared_key(key, &path, &date)?);
        } else if let Some(sas) = &self.sas {
            request = self
                .http
                .put(format!(
                    "{base}?restype=container&{}",
                    sas.trim_start_matches('?')
                ))
                .header("x-ms-version", API_VERSION)
                .header("Content-Length", "0");
        } else {
            return Err(Error::new(
                ErrorKind::Storage,
                format!(
                    "container `{}` does not exist, and without an account key or SAS Redwood \
                     cannot create it: create it, or give a key or SAS",
                    self.container
                ),
            ));
        }
        let response = request.send().await.map_err(|e| {
            Error::new(
                ErrorKind::Storage,
                format!(
                    "cannot reach {base}: {}",
                    redwood_core::redact::transport_error(&e)
                ),
            )
            .set_retryable(true)
        })?;
        let status = response.status();
        if status.is_success() || status.as_u16() == 409 {
            tracing::info!(container = %self.container, "container ready");
            return Ok(());
        }
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let why = if status.as_u16() == 403 {
            "the credentials may not create containers (or the key is wrong)"
        } else {
            "the service refused"
        };
        Err(Error::new(
            ErrorKind::Storage,
            format!(
                "cannot create container `{}` in account `{}`: {why} (HTTP {status} {code})",
                self.container, self.account
            ),
        )
        .set_retryable(is_transient_status(status.as_u16())))
    }
}

/// The queue service of the storage account an `az://` store writes to, signed as the store
/// is (its account key, or the SAS it was given).
pub(crate) fn queue_service(storage: &Storage) -> Result<crate::queue::QueueService> {
    let container = storage
        .container()
        .and_then(|c| c.as_any())
        .and_then(|c| c.downcast_ref::<AzureContainer>())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "storage {} is not an Azure storage account (az://): it has no queues",
                    storage.url()
                ),
            )
        })?;
    let queue_endpoint = container.queue_endpoint.clone().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "the queue service of storage {} is not known: give a connection string, or the \
                 storage option `queue_endpoint`",
                storage.url()
            ),
        )
    })?;
    crate::queue::QueueService::new(&AccountSettings {
        account: Some(container.account.clone()),
        key: container.key.clone(),
        sas: container.sas.clone(),
        endpoint: Some(container.endpoint.clone()),
        queue_endpoint: Some(queue_endpoint),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_accounts_with_one_container_name_are_two_stores() {
        let open_for = |account: &str| {
            let options = BTreeMap::from([
                ("account".to_string(), account.to_string()),
                ("key".to_string(), "a2V5".to_string()),
                (
                    "endpoint".to_string(),
                    format!("http://127.0.0.1:10000/{account}"),
                ),
            ]);
            open("az://redwood/jobs", &options).unwrap()
        };
        let (east, west) = (open_for("east"), open_for("west"));
        assert_eq!(east.url(), west.url());
        assert_eq!(east.identity(), "http://127.0.0.1:10000/east/redwood");
        assert_ne!(east.identity(), west.identity());
        assert!(!east.identity().contains("a2V5"));
    }

    #[test]
    fn container_names() {
        assert!(valid_container_name("redwood-1"));
        assert!(!valid_container_name("Redwood"));
        assert!(!valid_container_name("ab"));
        assert!(!valid_container_name("a--b"));
        assert!(!valid_container_name("-ab"));
    }

    #[test]
    fn bad_urls_name_the_problem() {
        let none = BTreeMap::new();
        let e = open("az://", &none).unwrap_err().to_string();
        assert!(e.contains("needs a container"), "{e}");
        let e = open("az://Bad_Name/x", &none).unwrap_err().to_string();
        assert!(e.contains("not a valid container name"), "{e}");
        let mut opts = BTreeMap::new();
        opts.insert("acount".to_string(), "x".to_string());
        let e = open("az://good/x", &opts).unwrap_err().to_string();
        assert!(e.contains("unknown storage option `acount`"), "{e}");
    }
}
