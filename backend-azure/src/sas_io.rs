//! Blob reads and writes through SAS URLs, for workers that never see an account key (a Batch
//! task, the Functions handler): reads under a container's read SAS, writes to exactly the URL
//! a client signed. Transient failures are retried with the storage policy; no error text
//! carries a URL's query (the signature).

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use redwood_core::redact;
use redwood_core::retry::RetryPolicy;
use redwood_core::{Error, ErrorKind, Result};

/// How a create-only write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    /// Written.
    Written,
    /// The blob exists already (a create-only write leaves it as it is).
    Existed,
}

/// A container's blobs through SAS URLs.
#[derive(Debug)]
pub(crate) struct SasBlobs {
    http: reqwest::Client,
    container: String,
    read_sas: String,
    pub(crate) retry: RetryPolicy,
}

impl SasBlobs {
    /// `plain_http`: every URL is `http://` (an emulator), so no root certificates are loaded,
    /// which would be most of a short task's start-up.
    pub(crate) fn new(container: &str, read_sas: &str, plain_http: bool) -> Result<SasBlobs> {
        let http = crate::http_client::http_client(Some(Duration::from_secs(300)), plain_http)?;
        Ok(SasBlobs {
            http,
            container: container.trim_end_matches('/').to_string(),
            read_sas: read_sas.trim_start_matches('?').to_string(),
            retry: RetryPolicy::STORAGE,
        })
    }

    fn url(&self, key: &str) -> String {
        format!(
            "{}/{}?{}",
            self.container,
            crate::sas::encode_path(key),
            self.read_sas
        )
    }

    /// Reads `key` (or a byte range of it) under the read SAS.
    pub(crate) async fn fetch(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let url = self.url(key);
        let (_, body) = self
            .send("read", key, &[], || {
                let mut request = self.http.get(&url).header("x-ms-version", "2021-08-06");
                if let Some(r) = &range {
                    if r.is_empty() {
                        return None;
                    }
                    request = request.header("Range", format!("bytes={}-{}", r.start, r.end - 1));
                }
                Some(request)
            })
            .await?;
        Ok(body)
    }

    /// Whether `key` exists (a read SAS allows the HEAD).
    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        self.exists_at(&self.url(key), key).await
    }

    /// Whether the blob a signed URL points at exists, asked under the read SAS (a write URL's
    /// own SAS may not read).
    pub(crate) async fn signed_url_exists(&self, url: &str) -> Result<bool> {
        let blob = url.split('?').next().unwrap_or(url);
        self.exists_at(&format!("{blob}?{}", self.read_sas), blob)
            .await
    }

    async fn exists_at(&self, url: &str, shown: &str) -> Result<bool> {
        let (status, _) = self
            .send("read", shown, &[404], || {
                Some(self.http.head(url).header("x-ms-version", "2021-08-06"))
            })
            .await?;
        Ok(status != 404)
    }

    /// Writes `bytes` to a signed blob URL; with `create_only`, an existing blob is kept (and
    /// `Put::Existed` says so).
    pub(crate) async fn put(&self, url: &str, bytes: Bytes, create_only: bool) -> Result<Put> {
        let shown = url.split('?').next().unwrap_or(url).to_string();
        let (status, _) = self
            .send("write", &shown, &[409], || {
                let mut request = self
                    .http
                    .put(url)
                    .header("x-ms-version", "2021-08-06")
                    .header("x-ms-blob-type", "BlockBlob")
                    .body(bytes.clone());
                if create_only {
                    request = request.header("If-None-Match", "*");
                }
                Some(request)
            })
            .await?;
        Ok(if status == 409 {
            Put::Existed
        } else {
            Put::Written
        })
    }

    /// Sends a request, its transient failures (throttling, server errors, broken
    /// connections) retried. `make` returns `None` when nothing needs to be sent (an empty
    /// range). Statuses in `fine` are answers, not errors.
    async fn send(
        &self,
        what: &str,
        shown: &str,
        fine: &[u16],
        make: impl Fn() -> Option<reqwest::RequestBuilder>,
    ) -> Result<(u16, Bytes)> {
        let failed = |why: String, transient: bool| {
            Error::new(ErrorKind::Storage, format!("cannot {what} {shown}: {why}"))
                .set_retryable(transient)
        };
        let attempt = || async {
            let Some(request) = make() else {
                return Ok((200, Bytes::new()));
            };
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    let status = r.status().as_u16();
                    r.bytes().await.map(|b| (status, b)).map_err(|e| {
                        failed(
                            format!("the body broke off: {}", redact::transport_error(&e)),
                            true,
                        )
                    })
                }
                Ok(r) if fine.contains(&r.status().as_u16()) => {
                    Ok((r.status().as_u16(), Bytes::new()))
                }
                Ok(r) => {
                    let status = r.status();
                    let code = r
                        .headers()
                        .get("x-ms-error-code")
                        .and_then(|v| v.to_str().ok())
                        .map(|c| format!(" {c}"))
                        .unwrap_or_default();
                    let transient = crate::blob::is_transient_status(status.as_u16());
                    Err(failed(format!("HTTP {status}{code}"), transient))
                }
                Err(e) => Err(failed(redact::transport_error(&e), true)),
            }
        };
        self.retry.run("worker.blob", attempt).await
    }
}
