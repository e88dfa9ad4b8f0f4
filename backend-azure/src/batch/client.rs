//! [`BatchClient`]: signed requests to one Batch account, retried with backoff when the service
//! says it is busy, errors mapped once by `parse_error`, lists followed through `odata.nextLink`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use redwood_core::redact;
use redwood_core::retry::{RetryPolicy, Transient, Verdict};
use redwood_core::{Error, ErrorKind, Result};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde_json::Value;
use tracing::Instrument;

use super::auth::authorization;
use super::credential::TokenSource;

/// How requests are signed.
#[derive(Clone)]
enum Auth {
    /// The account's SharedKey.
    SharedKey(String),
    /// Entra ID bearer tokens.
    Token(TokenSource),
}
use super::error::{is_retryable, parse_error};

/// The api-version this client speaks.
pub const API_VERSION: &str = "2025-06-01";

/// How much of the end of a task's file [`BatchClient::file_tail`] reads.
const TAIL_BYTES: u64 = 64 * 1024;

/// A successful answer: its headers and body.
struct Answer {
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// A failed attempt at a request, with the `Retry-After` the service asked for, if any.
struct Failed {
    error: Error,
    retry_after: Option<Duration>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Failed {
        Failed {
            error,
            retry_after: None,
        }
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Transient for Failed {
    fn verdict(&self) -> Verdict {
        match (self.error.is_retryable(), self.retry_after) {
            (false, _) => Verdict::Permanent,
            (true, Some(wait)) => Verdict::RetryAfter(wait),
            (true, None) => Verdict::Transient,
        }
    }
}

/// A client of one Batch account.
#[derive(Clone)]
pub struct BatchClient {
    http: reqwest::Client,
    base: Url,
    account: String,
    auth: Auth,
    api_version: String,
    retry: RetryPolicy,
    /// Requests sent (each attempt counts), for benchmarks and stats.
    sent: Arc<AtomicU64>,
}

impl fmt::Debug for BatchClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchClient")
            .field("url", &self.base.as_str())
            .field("account", &self.account)
            .field(
                "auth",
                &match &self.auth {
                    Auth::SharedKey(_) => "shared key (redacted)",
                    Auth::Token(_) => "Entra ID",
                },
            )
            .finish()
    }
}

/// Builds a [`BatchClient`].
#[derive(Clone)]
pub struct BatchClientBuilder {
    url: String,
    account: String,
    auth: Auth,
    api_version: String,
    retry: RetryPolicy,
}

impl fmt::Debug for BatchClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchClientBuilder")
            .field("url", &self.url)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl BatchClientBuilder {
    /// A client of the account at `url` (e.g. `https://acct.westeurope.batch.azure.com`),
    /// signing with its SharedKey.
    pub fn new(url: impl Into<String>, account: impl Into<String>, key: impl Into<String>) -> Self {
        BatchClientBuilder {
            url: url.into(),
            account: account.into(),
            auth: Auth::SharedKey(key.into()),
            api_version: API_VERSION.into(),
            retry: RetryPolicy::BATCH,
        }
    }

    /// A client of the account at `url` that signs with Microsoft Entra ID bearer tokens from
    /// `credential` (scope `https://batch.core.windows.net//.default`), renewed before they expire.
    pub fn with_credential(
        url: impl Into<String>,
        account: impl Into<String>,
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
    ) -> Self {
        BatchClientBuilder {
            auth: Auth::Token(TokenSource::new(credential)),
            ..BatchClientBuilder::new(url, account, "")
        }
    }

    /// Retries a busy or failing request this many times (default 7).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.retry.attempts = n.saturating_add(1);
        self
    }

    /// The cap of the first retry's random wait; it doubles each time (default 200 ms).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.retry.first_backoff = backoff;
        self
    }

    /// The whole retry policy (default [`RetryPolicy::BATCH`]: transient failures — 5xx, 408,
    /// 429 with its `Retry-After`, `ServerBusy`, cut connections — with full-jitter backoff).
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Builds the client; a bad URL or key is an error naming the account.
    pub fn build(self) -> Result<BatchClient> {
        let bad = |why: String| {
            Error::new(ErrorKind::Config, why).with_context("batch account", &self.account)
        };
        let base = Url::parse(&self.url)
            .map_err(|e| bad(format!("`{}` is not a Batch account URL: {e}", self.url)))?;
        use base64::Engine;
        if let Auth::SharedKey(key) = &self.auth
            && base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_err()
        {
            return Err(bad("the account key is not valid base64".into()));
        }
        let http = crate::http_client::http_client(None, false)?;
        Ok(BatchClient {
            http,
            base,
            account: self.account,
            auth: self.auth,
            api_version: self.api_version,
            retry: self.retry,
            sent: Arc::default(),
        })
    }
}

/// The outcome of one task in an `addtaskcollection` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskAddResult {
    /// The task id.
    pub task_id: String,
    /// Whether the service took the task. `TaskExists` on a retried request counts as taken.
    pub added: bool,
    /// The service's error code, when it did not.
    pub error_code: Option<String>,
    /// The service's error message, when it did not.
    pub error_message: Option<String>,
    /// Whether sending it again may succeed (a server error for that task).
    pub retryable: bool,
}

impl BatchClient {
    /// The account name.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// How many HTTP requests this client (and its clones) sent, retries included.
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url> {
        let mut url = self.base.join(path.trim_start_matches('/')).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("bad Batch path `{path}`: {e}"),
            )
        })?;
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("api-version", &self.api_version);
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Sends one request (signed, retried while the service is busy) and returns its JSON body
    /// (`Null` when empty, a string when the body is not JSON, e.g. a task file).
    pub async fn request(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = self.url(path, query)?;
        self.request_url(operation, method, url, body).await
    }

    async fn request_url(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Value> {
        let body = body.map(|b| b.to_string().into_bytes());
        let answer = self
            .send(operation, method, url, body, HeaderMap::new())
            .await?;
        let bytes = answer.body;
        Ok(if bytes.is_empty() {
            Value::Null
        } else {
            // A task file is text, not JSON.
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        })
    }

    /// Sends a request with extra (signed) headers, retried as the policy says; the answer's
    /// headers and body as they came.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        extra: HeaderMap,
    ) -> Result<Answer> {
        let span = tracing::debug_span!("batch.request", operation, account = %self.account, %method, path = url.path());
        let attempts = AtomicU32::new(0);
        self.retry
            .run(operation, || {
                attempts.fetch_add(1, Ordering::Relaxed);
                self.send_once(operation, &method, &url, body.as_deref(), &extra)
            })
            .instrument(span)
            .await
            .map_err(|failed| {
                let attempts = attempts.load(Ordering::Relaxed);
                failed.error.with_context("attempts", attempts)
            })
    }

    /// One attempt; an error comes with the `Retry-After` the service asked for, if any.
    async fn send_once(
        &self,
        operation: &'static str,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        extra: &HeaderMap,
    ) -> std::result::Result<Answer, Failed> {
        let mut headers = extra.clone();
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        if let Ok(v) = HeaderValue::from_str(&date) {
            headers.insert("ocp-date", v);
        }
        if let Some(b) = body {
            headers.insert(
                "content-type",
                HeaderValue::from_static("application/json; odata=minimalmetadata"),
            );
            headers.insert("content-length", HeaderValue::from(b.len()));
        }
        // A cached token the service refuses may have been revoked: forget it and try again.
        let (auth, cached_token) = match &self.auth {
            Auth::SharedKey(key) => (
                authorization(&self.account, key, method, url, &headers)
                    .map_err(|why| Failed::from(Error::new(ErrorKind::Config, why)))?,
                None,
            ),
            Auth::Token(source) => {
                let (value, fresh) = source
                    .authorization(&self.account)
                    .await
                    .map_err(Failed::from)?;
                (value, (!fresh).then_some(source))
            }
        };
        self.sent.fetch_add(1, Ordering::Relaxed);
        let mut request = self.http.request(method.clone(), url.clone());
        for (name, value) in &headers {
            if name != "content-length" {
                request = request.header(name, value);
            }
        }
        request = request.header("authorization", auth);
        if let Some(b) = body {
            request = request.body(b.to_vec());
        }
        let response = request.send().await.map_err(|e| {
            Failed::from(
                Error::new(
                    ErrorKind::Backend,
                    format!(
                        "cannot reach Batch account `{}`: {}",
                        self.account,
                        redact::transport_error(&e)
                    ),
                )
                .with_operation(operation)
                .set_retryable(true),
            )
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let answer_headers = response.headers().clone();
        let request_id = response
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response.bytes().await.map_err(|e| {
            Failed::from(
                Error::new(
                    ErrorKind::Backend,
                    format!(
                        "the Batch response broke off: {}",
                        redact::transport_error(&e)
                    ),
                )
                .with_operation(operation)
                .set_retryable(true),
            )
        })?;
        if status.is_success() {
            return Ok(Answer {
                headers: answer_headers,
                body: bytes,
            });
        }
        let mut error = parse_error(
            &self.account,
            operation,
            status,
            request_id.as_deref(),
            &bytes,
        );
        let refused = status == reqwest::StatusCode::UNAUTHORIZED
            || (status == reqwest::StatusCode::FORBIDDEN
                && error.service_code() == Some("AuthenticationFailed"));
        if refused && let Some(source) = cached_token {
            source.forget().await;
            error = error.set_retryable(true);
        }
        let retry_after = if is_retryable(status, "") {
            retry_after
        } else {
            None
        };
        Err(Failed { error, retry_after })
    }

    /// `GET` a resource.
    pub async fn get(&self, operation: &'static str, path: &str) -> Result<Value> {
        self.request(operation, Method::GET, path, &[], None).await
    }

    /// The last `lines` lines of a text file read through a file API path (a task's or a
    /// node's), or `None` when it cannot be read or is empty.
    pub async fn file_tail(
        &self,
        operation: &'static str,
        path: &str,
        lines: usize,
    ) -> Option<String> {
        // Only the end of the file is read (`ocp-range`): a task may have printed gigabytes.
        let url = self.url(path, &[]).ok()?;
        let head = self
            .send(operation, Method::HEAD, url.clone(), None, HeaderMap::new())
            .await
            .ok()?;
        let size: u64 = head
            .headers
            .get("content-length")?
            .to_str()
            .ok()?
            .parse()
            .ok()?;
        let last = size.checked_sub(1)?;
        let first = size.saturating_sub(TAIL_BYTES);
        let mut range = HeaderMap::new();
        range.insert(
            "ocp-range",
            HeaderValue::from_str(&format!("bytes={first}-{last}")).ok()?,
        );
        let got = self
            .send(operation, Method::GET, url, None, range)
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&got.body);
        let all: Vec<&str> = text.lines().collect();
        // A read that starts mid-file starts mid-line: that piece is dropped.
        let whole = if first > 0 {
            &all[1.min(all.len())..]
        } else {
            &all[..]
        };
        let tail = redact::secrets(&whole[whole.len().saturating_sub(lines)..].join("\n"));
        (!tail.trim().is_empty()).then_some(tail)
    }

    /// `POST` a body.
    pub async fn post(&self, operation: &'static str, path: &str, body: &Value) -> Result<Value> {
        self.request(operation, Method::POST, path, &[], Some(body))
            .await
    }

    /// `DELETE` a resource.
    pub async fn delete(&self, operation: &'static str, path: &str) -> Result<()> {
        self.request(operation, Method::DELETE, path, &[], None)
            .await
            .map(|_| ())
    }

    /// Every item of a list, following `odata.nextLink`.
    pub async fn list(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut page = self
            .request(operation, Method::GET, path, query, None)
            .await?;
        loop {
            if let Some(values) = page["value"].as_array() {
                items.extend(values.iter().cloned());
            }
            let Some(next) = page["odata.nextLink"].as_str() else {
                return Ok(items);
            };
            let url = Url::parse(next).map_err(|e| {
                Error::new(
                    ErrorKind::Backend,
                    format!("bad odata.nextLink `{next}`: {e}"),
                )
            })?;
            page = self.request_url(operation, Method::GET, url, None).await?;
        }
    }

    /// Adds up to 100 tasks in one request; a per-task `TaskExists` (a retried request whose
    /// first try got through) counts as added.
    pub async fn add_task_collection(
        &self,
        job: &str,
        tasks: &[Value],
    ) -> Result<Vec<TaskAddResult>> {
        if tasks.len() > 100 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} tasks in one addtaskcollection (at most 100)",
                    tasks.len()
                ),
            ));
        }
        let body = serde_json::json!({ "value": tasks });
        let path = format!("/jobs/{job}/addtaskcollection");
        let reply = self.post("addtaskcollection", &path, &body).await?;
        let results = reply["value"].as_array().cloned().unwrap_or_default();
        Ok(results
            .iter()
            .map(|r| {
                let status = r["status"].as_str().unwrap_or("").to_ascii_lowercase();
                let code = r["error"]["code"].as_str().map(str::to_string);
                let added = status == "success" || code.as_deref() == Some("TaskExists");
                TaskAddResult {
                    task_id: r["taskId"].as_str().unwrap_or("").to_string(),
                    added,
                    retryable: status == "servererror",
                    error_message: (!added)
                        .then(|| r["error"]["message"]["value"].as_str().map(str::to_string))
                        .flatten(),
                    error_code: if added { None } else { code },
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        let e = BatchClientBuilder::new("not a url", "acct", "a2V5")
            .build()
            .unwrap_err();
        assert!(
            e.to_string().contains("acct") && e.to_string().contains("not a url"),
            "{e}"
        );
        let e = BatchClientBuilder::new("http://x", "acct", "%%%")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
        let c = BatchClientBuilder::new("http://x", "acct", "a2V5")
            .build()
            .unwrap();
        assert!(!format!("{c:?}").contains("a2V5"));
    }
}
