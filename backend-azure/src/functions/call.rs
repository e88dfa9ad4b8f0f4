//! `invoke = "http"`: a small launch's groups go to the app's HTTP-triggered `redwood-call`
//! instead of the queue, so a `call` pays one request instead of a queue poll and a listing.
//! The answer carries the stored outcomes; a refusal (a wrong key, no such function) ends the
//! group's tasks with an error saying so; any other failure sends the group through the queue
//! after all, so nothing is lost (a group that ran twice is stored once: the segment is
//! create-only).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use redwood_core::Result;

use super::CALL_FUNCTION;

/// How long past `functionTimeout` a call waits for its answer.
const ANSWER_GRACE: Duration = Duration::from_secs(30);

/// Calls `redwood-call` on one function app.
pub(super) struct Caller {
    http: reqwest::Client,
    /// `<app>/api/redwood-call`.
    url: String,
    key: Option<String>,
}

/// How a call went.
#[derive(Debug)]
pub(super) enum Answer {
    /// The group ran and is stored: its outcomes, when the answer carried them.
    Stored(Option<Bytes>),
    /// The app refused the call for good (HTTP 401, 403, 404): why, for the tasks' errors.
    Refused(String),
    /// The call failed (connection, timeout, 5xx, a failed group): why, for the log.
    Failed(String),
}

impl Caller {
    /// A caller of the app at `app_url` (its base URL) with `key` (a function or master key).
    pub(super) fn new(
        app_url: &str,
        key: Option<String>,
        function_timeout: Duration,
    ) -> Result<Caller> {
        let http = crate::http_client::http_client(
            Some(function_timeout.saturating_add(ANSWER_GRACE)),
            false,
        )?;
        Ok(Caller {
            http,
            url: format!("{}/api/{CALL_FUNCTION}", app_url.trim_end_matches('/')),
            key,
        })
    }

    /// Posts one group (its message as JSON) and waits for it to run.
    pub(super) async fn call(&self, group: String) -> Answer {
        let span = tracing::debug_span!("functions.call", url = %self.url);
        tracing::Instrument::instrument(self.post(group), span).await
    }

    async fn post(&self, group: String) -> Answer {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(group);
        if let Some(key) = &self.key {
            request = request.header("x-functions-key", key);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Failed(format!("no answer from {}: {e}", self.url)),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Answer::Failed(format!("the answer of {} broke off: {e}", self.url)),
        };
        let text = || String::from_utf8_lossy(&body[..body.len().min(2048)]).to_string();
        match status.as_u16() {
            200..=299 if body.is_empty() => Answer::Stored(None),
            200..=299 => match base64::engine::general_purpose::STANDARD.decode(&body) {
                Ok(outcomes) => Answer::Stored(Some(Bytes::from(outcomes))),
                // Stored all the same: the caller reads the segment.
                Err(_) => Answer::Stored(None),
            },
            401 | 403 => Answer::Refused(format!(
                "the function app refused the call to {} (HTTP {status}): the function key is \
                 wrong or missing (set `function_key` in the region, or REDWOOD_FUNCTIONS_KEY)",
                self.url
            )),
            404 => Answer::Refused(format!(
                "the function app has no function at {} (HTTP 404): deploy an app folder this \
                 build wrote (it has `{CALL_FUNCTION}`), or set `invoke = \"queue\"`",
                self.url
            )),
            _ => Answer::Failed(format!("{} answered HTTP {status}: {}", self.url, text())),
        }
    }
}
