//! A function app folder as the Functions host reads it: `host.json` (the custom handler, the
//! queue extension's settings, `functionTimeout`, the HTTP route prefix), one folder per
//! function with its `function.json`, and `%SETTING%` references resolved from app settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The queue trigger's settings (`extensions.queues` in `host.json`), with the service's
/// defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// Messages received at once per instance (default 16, at most 32).
    pub batch_size: u32,
    /// Received again when this many are left running (default `batch_size / 2`).
    pub new_batch_threshold: u32,
    /// Deliveries before a message goes to `<queue>-poison` (default 5).
    pub max_dequeue_count: u32,
    /// How long a failed message stays hidden before its next delivery (default 0).
    pub visibility_timeout: Duration,
    /// The longest wait between polls of an empty queue (default 1 minute; 2 s is common
    /// locally; at least 100 ms).
    pub max_polling_interval: Duration,
    /// Messages are base64 (the default) or plain text (`none`).
    pub base64: bool,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            batch_size: 16,
            new_batch_threshold: 8,
            max_dequeue_count: 5,
            visibility_timeout: Duration::ZERO,
            max_polling_interval: Duration::from_secs(60),
            base64: true,
        }
    }
}

/// What starts a function.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// A queue trigger.
    Queue {
        /// The binding's name (the key in the request's `Data`).
        binding: String,
        /// The queue, `%SETTING%`s resolved.
        queue: String,
        /// The app setting holding the storage connection string.
        connection: String,
    },
    /// An HTTP trigger.
    Http {
        /// The binding's name (the key in the request's `Data`).
        binding: String,
        /// `anonymous`, `function` or `admin`.
        auth_level: AuthLevel,
        /// Allowed methods (upper case); empty: all.
        methods: Vec<String>,
        /// The route after the prefix (default: the function's name).
        route: String,
    },
}

/// Who may call an HTTP trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    /// Anyone.
    Anonymous,
    /// A function key, a host key or the master key.
    Function,
    /// The master key only.
    Admin,
}

/// An output binding the host fills from the handler's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// `http` out: the HTTP response (`$return` takes the handler's `ReturnValue`).
    Http {
        /// The binding's name.
        name: String,
    },
    /// `queue` out: messages put in a queue.
    Queue {
        /// The binding's name.
        name: String,
        /// The queue.
        queue: String,
        /// The app setting holding the storage connection string.
        connection: String,
    },
}

/// One function of the app.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// Its name (the folder's).
    pub name: String,
    /// What starts it.
    pub trigger: Trigger,
    /// Its output bindings.
    pub outputs: Vec<Output>,
    /// `"disabled": true` in `function.json`.
    pub disabled: bool,
}

/// A function app folder, read.
#[derive(Debug, Clone)]
pub struct App {
    /// The folder.
    pub root: PathBuf,
    /// The handler executable (inside the folder).
    pub executable: PathBuf,
    /// Its arguments, `%SETTING%`s resolved.
    pub arguments: Vec<String>,
    /// Its working directory.
    pub working_dir: PathBuf,
    /// HTTP requests are forwarded to the handler as they came (`enableForwardingHttpRequest`).
    pub forward_http: bool,
    /// The longest an invocation may run (`functionTimeout`; `None`: unbounded).
    pub function_timeout: Option<Duration>,
    /// The queue trigger's settings.
    pub queues: QueueSettings,
    /// The HTTP route prefix (default `api`).
    pub route_prefix: String,
    /// The functions, by name.
    pub functions: BTreeMap<String, Function>,
}

/// The host's default `functionTimeout` (the Consumption plan's: 5 minutes).
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(300);

impl App {
    /// Reads the app in `root`, resolving `%NAME%` from `settings`. Errors name the file and
    /// what is wrong in it.
    pub fn read(root: &Path, settings: &BTreeMap<String, String>) -> Result<App, String> {
        let root = root
            .canonicalize()
            .map_err(|e| format!("the function app folder {}: {e}", root.display()))?;
        let host_path = root.join("host.json");
        let host = read_json(&host_path)?;
        let bad = |what: String| format!("{}: {what}", host_path.display());
        let description = &host["customHandler"]["description"];
        let exe = description["defaultExecutablePath"]
            .as_str()
            .ok_or_else(|| {
                bad("customHandler.description.defaultExecutablePath is missing".into())
            })?;
        let exe = resolve(exe, settings).map_err(&bad)?;
        let working_dir = match description["workingDirectory"].as_str() {
            Some(dir) => inside(&root, &resolve(dir, settings).map_err(&bad)?)
                .map_err(|e| bad(format!("customHandler.description.workingDirectory: {e}")))?,
            None => root.clone(),
        };
        let executable = inside(&working_dir, &exe)
            .or_else(|_| inside(&root, &exe))
            .map_err(|e| {
                bad(format!(
                    "customHandler.description.defaultExecutablePath: {e}"
                ))
            })?;
        let arguments = match &description["arguments"] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|a| {
                    a.as_str()
                        .ok_or_else(|| {
                            bad("customHandler.description.arguments must be strings".into())
                        })
                        .and_then(|a| resolve(a, settings).map_err(&bad))
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(bad(
                    "customHandler.description.arguments must be an array".into()
                ));
            }
        };
        let function_timeout = match host.get("functionTimeout") {
            None | Some(Value::Null) => Some(DEFAULT_FUNCTION_TIMEOUT),
            Some(Value::String(s)) if s.trim() == "-1" => None,
            Some(Value::String(s)) => Some(
                parse_timespan(s)
                    .ok_or_else(|| bad(format!("functionTimeout `{s}` is not hh:mm:ss")))?,
            ),
            Some(other) => return Err(bad(format!("functionTimeout {other} is not a string"))),
        };
        let queues = queue_settings(&host["extensions"]["queues"]).map_err(&bad)?;
        let route_prefix = host["extensions"]["http"]["routePrefix"]
            .as_str()
            .unwrap_or("api")
            .trim_matches('/')
            .to_string();
        let forward_http = host["customHandler"]["enableForwardingHttpRequest"]
            .as_bool()
            .unwrap_or(false);
        let mut functions = BTreeMap::new();
        let entries = std::fs::read_dir(&root).map_err(|e| {
            format!(
                "cannot list the function app folder {}: {e}",
                root.display()
            )
        })?;
        for entry in entries.flatten() {
            let path = entry.path().join("function.json");
            if !path.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            let function = read_function(&name, &path, settings)?;
            functions.insert(name, function);
        }
        if functions.is_empty() {
            return Err(format!(
                "the function app folder {} has no function (a folder with a function.json)",
                root.display()
            ));
        }
        Ok(App {
            root,
            executable,
            arguments,
            working_dir,
            forward_http,
            function_timeout,
            queues,
            route_prefix,
            functions,
        })
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

/// `path` (relative to `base`, or absolute) as a path inside `base`: nothing outside the app
/// folder runs.
fn inside(base: &Path, path: &str) -> Result<PathBuf, String> {
    let joined = base.join(path);
    let real = joined
        .canonicalize()
        .map_err(|e| format!("{}: {e}", joined.display()))?;
    if !real.starts_with(base) {
        return Err(format!(
            "{} is outside the app folder {}",
            real.display(),
            base.display()
        ));
    }
    Ok(real)
}

/// Replaces each `%NAME%` with the app setting `NAME`.
pub fn resolve(text: &str, settings: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else { break };
        let name = &after[..end];
        let value = settings
            .get(name)
            .ok_or_else(|| format!("`%{name}%` names an app setting that is not set"))?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A .NET TimeSpan as host.json writes it: `[d.]hh:mm:ss[.fffffff]`.
pub fn parse_timespan(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (days, rest) = match text.split_once('.') {
        Some((d, rest)) if !d.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, text),
    };
    let mut parts = rest.split(':');
    let hours: u64 = parts.next()?.parse().ok()?;
    let minutes: u64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || minutes >= 60 || !(0.0..60.0).contains(&seconds) {
        return None;
    }
    let whole = days
        .checked_mul(86_400)?
        .checked_add(hours.checked_mul(3600)?)?
        .checked_add(minutes * 60)?;
    Some(Duration::from_secs(whole) + Duration::from_secs_f64(seconds))
}

fn queue_settings(v: &Value) -> Result<QueueSettings, String> {
    let mut q = QueueSettings::default();
    if v.is_null() {
        return Ok(q);
    }
    let number = |key: &str, max: u64| -> Result<Option<u32>, String> {
        match &v[key] {
            Value::Null => Ok(None),
            n => n
                .as_u64()
                .filter(|n| *n <= max)
                .map(|n| Some(n as u32))
                .ok_or_else(|| format!("extensions.queues.{key} must be a number from 0 to {max}")),
        }
    };
    let span = |key: &str| -> Result<Option<Duration>, String> {
        match &v[key] {
            Value::Null => Ok(None),
            Value::String(s) => parse_timespan(s)
                .map(Some)
                .ok_or_else(|| format!("extensions.queues.{key} `{s}` is not hh:mm:ss")),
            other => Err(format!("extensions.queues.{key} {other} is not a string")),
        }
    };
    if let Some(n) = number("batchSize", 32)? {
        if n == 0 {
            return Err("extensions.queues.batchSize must be at least 1".into());
        }
        q.batch_size = n;
        q.new_batch_threshold = n / 2;
    }
    if let Some(n) = number("newBatchThreshold", 1024)? {
        q.new_batch_threshold = n;
    }
    if let Some(n) = number("maxDequeueCount", 1024)? {
        q.max_dequeue_count = n.max(1);
    }
    if let Some(d) = span("visibilityTimeout")? {
        q.visibility_timeout = d;
    }
    if let Some(d) = span("maxPollingInterval")? {
        q.max_polling_interval = d.max(Duration::from_millis(100));
    }
    match v["messageEncoding"].as_str() {
        None | Some("base64") => q.base64 = true,
        Some("none") => q.base64 = false,
        Some(other) => {
            return Err(format!(
                "extensions.queues.messageEncoding `{other}` is neither `base64` nor `none`"
            ));
        }
    }
    Ok(q)
}

fn read_function(
    name: &str,
    path: &Path,
    settings: &BTreeMap<String, String>,
) -> Result<Function, String> {
    let json = read_json(path)?;
    let bad = |what: String| format!("{}: {what}", path.display());
    let bindings = json["bindings"]
        .as_array()
        .ok_or_else(|| bad("`bindings` must be an array".into()))?;
    let mut trigger = None;
    let mut outputs = Vec::new();
    for b in bindings {
        let kind = b["type"].as_str().unwrap_or_default();
        let binding = b["name"].as_str().unwrap_or_default().to_string();
        let connection = b["connection"]
            .as_str()
            .unwrap_or("AzureWebJobsStorage")
            .to_string();
        let queue_name = || -> Result<String, String> {
            let q = b["queueName"]
                .as_str()
                .ok_or_else(|| bad(format!("binding `{binding}` has no queueName")))?;
            resolve(q, settings).map_err(&bad)
        };
        match (kind, b["direction"].as_str().unwrap_or("in")) {
            ("queueTrigger", _) => {
                trigger = Some(Trigger::Queue {
                    queue: queue_name()?,
                    binding,
                    connection,
                })
            }
            ("httpTrigger", _) => {
                let auth_level = match b["authLevel"].as_str().unwrap_or("function") {
                    "anonymous" => AuthLevel::Anonymous,
                    "function" => AuthLevel::Function,
                    "admin" => AuthLevel::Admin,
                    other => {
                        return Err(bad(format!(
                            "authLevel `{other}` is not anonymous, function or admin"
                        )));
                    }
                };
                let methods = b["methods"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_ascii_uppercase)
                            .collect()
                    })
                    .unwrap_or_default();
                let route = b["route"]
                    .as_str()
                    .unwrap_or(name)
                    .trim_matches('/')
                    .to_string();
                trigger = Some(Trigger::Http {
                    binding,
                    auth_level,
                    methods,
                    route,
                });
            }
            ("http", "out") => outputs.push(Output::Http { name: binding }),
            ("queue", "out") => outputs.push(Output::Queue {
                queue: queue_name()?,
                name: binding,
                connection,
            }),
            (other, direction) => {
                return Err(bad(format!(
                    "binding `{binding}` of type `{other}` ({direction}) is not one this host serves \
                     (queueTrigger, httpTrigger, http out, queue out)"
                )));
            }
        }
    }
    let trigger = trigger.ok_or_else(|| bad("no queueTrigger or httpTrigger binding".into()))?;
    Ok(Function {
        name: name.to_string(),
        trigger,
        outputs,
        disabled: json["disabled"].as_bool().unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("00:05:00"), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_timespan("00:00:00.100"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            parse_timespan("1.02:00:00"),
            Some(Duration::from_secs(93_600))
        );
        assert_eq!(parse_timespan("5m"), None);
        assert_eq!(parse_timespan("00:61:00"), None);
    }

    #[test]
    fn settings_are_resolved_and_missing_ones_named() {
        let s = BTreeMap::from([("Q".to_string(), "tasks".to_string())]);
        assert_eq!(resolve("%Q%-in", &s).unwrap(), "tasks-in");
        assert_eq!(resolve("plain", &s).unwrap(), "plain");
        let e = resolve("%NOPE%", &s).unwrap_err();
        assert!(e.contains("NOPE"), "{e}");
    }

    #[test]
    fn an_app_folder_is_read_and_an_escape_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("handler"), "#!/bin/sh\n").unwrap();
        std::fs::write(
            root.join("host.json"),
            r#"{"version":"2.0","functionTimeout":"00:00:10",
               "customHandler":{"description":{"defaultExecutablePath":"handler","arguments":["%A%"]}},
               "extensions":{"queues":{"batchSize":4,"maxDequeueCount":2,"visibilityTimeout":"00:00:01","maxPollingInterval":"00:00:00.200"}}}"#,
        )
        .unwrap();
        std::fs::create_dir(root.join("work")).unwrap();
        std::fs::write(
            root.join("work/function.json"),
            r#"{"bindings":[{"type":"queueTrigger","direction":"in","name":"msg","queueName":"%Q%","connection":"Store"},
                            {"type":"queue","direction":"out","name":"$return","queueName":"done"}]}"#,
        )
        .unwrap();
        std::fs::create_dir(root.join("call")).unwrap();
        std::fs::write(
            root.join("call/function.json"),
            r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","authLevel":"function","methods":["post"]},
                            {"type":"http","direction":"out","name":"res"}]}"#,
        )
        .unwrap();
        let settings = BTreeMap::from([
            ("A".to_string(), "--fast".to_string()),
            ("Q".to_string(), "tasks".to_string()),
        ]);
        let app = App::read(root, &settings).unwrap();
        assert_eq!(app.arguments, ["--fast"]);
        assert_eq!(app.function_timeout, Some(Duration::from_secs(10)));
        assert_eq!(app.queues.batch_size, 4);
        assert_eq!(app.queues.new_batch_threshold, 2);
        assert_eq!(app.queues.max_dequeue_count, 2);
        assert_eq!(app.queues.max_polling_interval, Duration::from_millis(200));
        match &app.functions["work"].trigger {
            Trigger::Queue {
                queue,
                connection,
                binding,
            } => {
                assert_eq!(
                    (queue.as_str(), connection.as_str(), binding.as_str()),
                    ("tasks", "Store", "msg")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &app.functions["call"].trigger,
            Trigger::Http { auth_level: AuthLevel::Function, route, .. } if route == "call"
        ));
        let e = App::read(root, &BTreeMap::new()).unwrap_err();
        assert!(e.contains("%A%"), "{e}");

        std::fs::write(
            root.join("host.json"),
            r#"{"customHandler":{"description":{"defaultExecutablePath":"../../../bin/sh"}}}"#,
        )
        .unwrap();
        let e = App::read(root, &settings).unwrap_err();
        assert!(e.contains("outside the app folder"), "{e}");
    }
}
