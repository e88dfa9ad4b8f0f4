//! The settings of an `azure-functions` region (`[[regions]]` in `Redwood.toml`, or the
//! `REDWOOD_FUNCTIONS_*` variables): the queue the function app's `redwood-task` function is
//! triggered by, the storage account that holds it, and what the app's `host.json` says.

use std::time::Duration;

use redwood_core::config::LoadedConfig;
use redwood_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// One region of the `azure-functions` backend. `Debug` hides the connection string.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionsConfig {
    /// A name for messages.
    #[serde(default)]
    pub name: String,
    /// The queue `redwood-task` is triggered by (default `redwood-tasks`;
    /// `REDWOOD_FUNCTIONS_QUEUE`).
    #[serde(default)]
    pub queue: Option<String>,
    /// The connection string of the storage account holding the queue (the app's
    /// `AzureWebJobsStorage`; `REDWOOD_FUNCTIONS_QUEUE_CONNECTION_STRING`, else
    /// `AZURE_STORAGE_CONNECTION_STRING`).
    #[serde(default)]
    pub queue_connection_string: Option<String>,
    /// The app's `functionTimeout` (humantime, default `5m`, the Consumption plan's):
    /// the longest a group of tasks may run.
    #[serde(default)]
    pub function_timeout: Option<String>,
    /// The most tasks one message carries (default 64; `1` sends one message per task).
    #[serde(default)]
    pub group_size: Option<u32>,
    /// The app's `extensions.queues.messageEncoding`: `base64` (the default) or `none`.
    #[serde(default)]
    pub message_encoding: Option<String>,
    /// How often the job's stored outcomes are listed (humantime, default `100ms`).
    #[serde(default)]
    pub poll_interval: Option<String>,
    /// How long the signed URLs in messages stay valid (humantime, default `2days`).
    #[serde(default)]
    pub sas_valid_for: Option<String>,
    /// How many tasks the app runs at once (instances × per-instance concurrency), for
    /// placement across regions; unknown when unset.
    #[serde(default)]
    pub slots: Option<u64>,
    /// How tasks reach the app: `queue` (the default) or `http`, which sends small launches
    /// (a `call`, a retry) to the HTTP-triggered function `redwood-call` for latency and the
    /// rest through the queue (`REDWOOD_FUNCTIONS_INVOKE`).
    #[serde(default)]
    pub invoke: Option<String>,
    /// The app's base URL, for `invoke = "http"` (`https://<app>.azurewebsites.net`;
    /// `REDWOOD_FUNCTIONS_URL`).
    #[serde(default)]
    pub url: Option<String>,
    /// A key of `redwood-call` (or the app's master key), for `invoke = "http"`
    /// (`REDWOOD_FUNCTIONS_KEY`, else `REDWOOD_FUNCTIONS_MASTER_KEY`).
    #[serde(default)]
    pub function_key: Option<String>,
}

impl std::fmt::Debug for FunctionsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionsConfig")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field(
                "queue_connection_string",
                &self.queue_connection_string.as_ref().map(|_| "<redacted>"),
            )
            .field("function_timeout", &self.function_timeout)
            .field("group_size", &self.group_size)
            .field("message_encoding", &self.message_encoding)
            .field("poll_interval", &self.poll_interval)
            .field("sas_valid_for", &self.sas_valid_for)
            .field("slots", &self.slots)
            .field("invoke", &self.invoke)
            .field("url", &self.url)
            .field(
                "function_key",
                &self.function_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How tasks reach the function app.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Invoke {
    /// Every group through the queue.
    #[default]
    Queue,
    /// Small launches through the HTTP-triggered `redwood-call`, the rest through the queue.
    Http {
        /// The app's base URL (no trailing `/`).
        url: String,
        /// The key sent as `x-functions-key`, if any.
        key: Option<String>,
    },
}

impl std::fmt::Debug for Invoke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invoke::Queue => f.write_str("Queue"),
            Invoke::Http { url, key } => f
                .debug_struct("Http")
                .field("url", url)
                .field("key", &key.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// The settings, resolved: defaults and variables applied, durations parsed.
#[derive(Clone)]
pub struct FunctionsSettings {
    /// The queue's name.
    pub queue: String,
    /// The queue's account.
    pub connection_string: String,
    /// The app's `functionTimeout`.
    pub function_timeout: Duration,
    /// The most tasks per message.
    pub group_size: u32,
    /// Messages are base64.
    pub base64: bool,
    /// How often outcomes are listed.
    pub poll_interval: Duration,
    /// How long signed URLs stay valid.
    pub sas_valid_for: Duration,
    /// Tasks at once, if known.
    pub slots: Option<u64>,
    /// Tasks of one group that run at once where it is taken (1 for an app's instance, whose
    /// groups share it; a node's slots for warm workers). Groups are sized so that their work
    /// there stays short.
    pub group_workers: u32,
    /// How tasks reach the app.
    pub invoke: Invoke,
    /// Who takes the groups off the queue (for what errors say).
    pub(crate) taker: Taker,
}

/// Who takes a queue's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taker {
    /// A Functions app's instances.
    FunctionsApp,
    /// Redwood's warm workers on Batch nodes.
    WarmWorkers,
}

impl Taker {
    /// Why a delivery can end without the handler's note.
    pub(crate) fn silent_delivery(self) -> &'static str {
        match self {
            Taker::FunctionsApp => {
                "the handler never answered: the host failed the invocation, its instance \
                 died, or it ran past functionTimeout"
            }
            Taker::WarmWorkers => {
                "the warm worker never answered: its node was lost or its process died while \
                 it held the group"
            }
        }
    }
}

impl std::fmt::Debug for FunctionsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionsSettings")
            .field("queue", &self.queue)
            .field("function_timeout", &self.function_timeout)
            .field("group_size", &self.group_size)
            .field("group_workers", &self.group_workers)
            .field("base64", &self.base64)
            .field("poll_interval", &self.poll_interval)
            .field("invoke", &self.invoke)
            .finish_non_exhaustive()
    }
}

impl FunctionsSettings {
    /// Settings for the queue `queue` of the account `connection_string`, with defaults.
    pub fn new(queue: impl Into<String>, connection_string: impl Into<String>) -> Self {
        FunctionsSettings {
            queue: queue.into(),
            connection_string: connection_string.into(),
            function_timeout: Duration::from_secs(300),
            group_size: 64,
            base64: true,
            poll_interval: Duration::from_millis(100),
            sas_valid_for: Duration::from_secs(2 * 24 * 3600),
            slots: None,
            group_workers: 1,
            invoke: Invoke::Queue,
            taker: Taker::FunctionsApp,
        }
    }

    /// Resolves a region's keys, its `REDWOOD_FUNCTIONS_*_<REGION>` and `REDWOOD_FUNCTIONS_*`
    /// variables, and the defaults; errors name the key.
    pub fn from_config(config: &LoadedConfig) -> Result<FunctionsSettings> {
        let region: FunctionsConfig = config.region_settings()?;
        let env =
            |value: &Option<String>, var: &str| crate::env::from_env_or(&region.name, value, var);
        let queue = env(&region.queue, "REDWOOD_FUNCTIONS_QUEUE")
            .unwrap_or_else(|| "redwood-tasks".to_string());
        let connection_string = env(
            &region.queue_connection_string,
            "REDWOOD_FUNCTIONS_QUEUE_CONNECTION_STRING",
        )
        .or_else(|| std::env::var("AZURE_STORAGE_CONNECTION_STRING").ok())
        .ok_or_else(|| {
            config.error(
                "regions",
                &region.name,
                "backend `azure-functions` needs the connection string of the storage account \
                 holding its queue: set `queue_connection_string` in the region, or \
                 REDWOOD_FUNCTIONS_QUEUE_CONNECTION_STRING (or AZURE_STORAGE_CONNECTION_STRING)",
            )
        })?;
        let duration = |value: Option<String>, key: &'static str, default: Duration| match value {
            None => Ok(default),
            Some(text) => humantime::parse_duration(&text).map_err(|e| {
                config.error(
                    key,
                    &text,
                    format!("`{key}` = `{text}` is not a duration: {e}"),
                )
            }),
        };
        let base64 = match env(
            &region.message_encoding,
            "REDWOOD_FUNCTIONS_MESSAGE_ENCODING",
        )
        .as_deref()
        {
            None | Some("base64") => true,
            Some("none") => false,
            Some(other) => {
                return Err(config.error(
                    "message_encoding",
                    other,
                    "`message_encoding` is `base64` or `none` (the app's host.json \
                     extensions.queues.messageEncoding)",
                ));
            }
        };
        let group_size = region.group_size.unwrap_or(64);
        if group_size == 0 {
            return Err(config.error("group_size", "0", "`group_size` must be at least 1"));
        }
        let mut s = FunctionsSettings::new(queue, connection_string);
        s.function_timeout = duration(
            env(&region.function_timeout, "REDWOOD_FUNCTIONS_TIMEOUT"),
            "function_timeout",
            s.function_timeout,
        )?;
        s.poll_interval = duration(region.poll_interval, "poll_interval", s.poll_interval)?;
        s.sas_valid_for = duration(region.sas_valid_for, "sas_valid_for", s.sas_valid_for)?;
        s.group_size = group_size;
        s.base64 = base64;
        s.slots = region.slots;
        s.invoke = match env(&region.invoke, "REDWOOD_FUNCTIONS_INVOKE").as_deref() {
            None | Some("queue") => Invoke::Queue,
            Some("http") => {
                let url = env(&region.url, "REDWOOD_FUNCTIONS_URL").ok_or_else(|| {
                    config.error(
                        "url",
                        &region.name,
                        "`invoke = \"http\"` needs the function app's base URL: set `url` in \
                         the region, or REDWOOD_FUNCTIONS_URL",
                    )
                })?;
                match reqwest::Url::parse(&url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => {
                        return Err(config.error(
                            "url",
                            &url,
                            format!("`url` = `{url}` is not an http(s) URL"),
                        ));
                    }
                }
                let key = env(&region.function_key, "REDWOOD_FUNCTIONS_KEY")
                    .or_else(|| env(&None, "REDWOOD_FUNCTIONS_MASTER_KEY"));
                Invoke::Http {
                    url: url.trim_end_matches('/').to_string(),
                    key,
                }
            }
            Some(other) => {
                return Err(config.error("invoke", other, "`invoke` is `queue` or `http`"));
            }
        };
        if !crate::queue::valid_queue_name(&s.queue) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("`{}` is not a valid queue name", s.queue),
            )
            .with_context("key", "queue"));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &std::path::Path, text: &str) -> LoadedConfig {
        let file = dir.join("Redwood.toml");
        std::fs::write(&file, text).unwrap();
        LoadedConfig::load_from(Some(file), "default", false).unwrap()
    }

    #[test]
    fn a_region_reads_its_keys_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let conn = "AccountName=a;AccountKey=c2VjcmV0;QueueEndpoint=http://127.0.0.1:1/a";
        let loaded = load(
            dir.path(),
            &format!(
                "[default]\nbackend = \"azure-functions\"\n[[default.regions]]\nname = \"fn\"\n\
                 queue = \"my-tasks\"\nqueue_connection_string = \"{conn}\"\n\
                 function_timeout = \"10m\"\ngroup_size = 8\nslots = 40\n"
            ),
        );
        let s = FunctionsSettings::from_config(&loaded).unwrap();
        assert_eq!(s.queue, "my-tasks");
        assert_eq!(s.function_timeout, Duration::from_secs(600));
        assert_eq!((s.group_size, s.slots, s.base64), (8, Some(40), true));
        assert!(!format!("{s:?}").contains("c2VjcmV0"));

        let bad = |keys: &str| {
            let loaded = load(
                dir.path(),
                &format!(
                    "[default]\n[[default.regions]]\nname = \"fn\"\n\
                     queue_connection_string = \"{conn}\"\n{keys}\n"
                ),
            );
            FunctionsSettings::from_config(&loaded)
                .unwrap_err()
                .to_string()
        };
        let e = bad("qeue = \"x\"");
        assert!(e.contains("qeue") && e.contains("region `fn`"), "{e}");
        let e = bad("function_timeout = \"soon\"");
        assert!(e.contains("function_timeout") && e.contains("soon"), "{e}");
        let e = bad("message_encoding = \"utf7\"");
        assert!(e.contains("base64") && e.contains("none"), "{e}");
        let e = bad("group_size = 0");
        assert!(e.contains("group_size"), "{e}");
        let e = bad("queue = \"Bad_Queue\"");
        assert!(e.contains("not a valid queue name"), "{e}");
        let e = bad("invoke = \"carrier-pigeon\"");
        assert!(e.contains("`queue` or `http`"), "{e}");
        let e = bad("invoke = \"http\"\nurl = \"ftp://app\"");
        assert!(e.contains("not an http(s) URL"), "{e}");
    }

    #[test]
    fn http_invocation_reads_the_url_and_hides_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let conn = "AccountName=a;AccountKey=c2VjcmV0;QueueEndpoint=http://127.0.0.1:1/a";
        let loaded = load(
            dir.path(),
            &format!(
                "[default]\n[[default.regions]]\nname = \"fn\"\n\
                 queue_connection_string = \"{conn}\"\ninvoke = \"http\"\n\
                 url = \"https://app.example/\"\nfunction_key = \"k3y-s3cret\"\n"
            ),
        );
        let s = FunctionsSettings::from_config(&loaded).unwrap();
        assert_eq!(
            s.invoke,
            Invoke::Http {
                url: "https://app.example".into(),
                key: Some("k3y-s3cret".into())
            }
        );
        assert!(!format!("{s:?}").contains("k3y-s3cret"));
        let region: FunctionsConfig = loaded.region_settings().unwrap();
        assert!(!format!("{region:?}").contains("k3y-s3cret"));
    }
}
