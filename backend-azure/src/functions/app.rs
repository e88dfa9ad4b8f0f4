//! The function app folder of a program: `host.json` (the custom handler, the queue
//! extension's settings, `functionTimeout`), `redwood-task/function.json` (a queue trigger on
//! the task queue), `redwood-call/function.json` (an HTTP trigger, function keys, for
//! `invoke = "http"`), `local.settings.json` for local runs, and the executable itself. Deploy the
//! folder (zipped) to a Function App whose OS can run the executable, or point the emulator's
//! Functions host at it.
//!
//! Any `#[redwood::main]` program writes its own: `REDWOOD_WORKER=functions-app
//! REDWOOD_FUNCTIONS_APP=<dir> <program>` (queue from `REDWOOD_FUNCTIONS_QUEUE`, timeout from
//! `REDWOOD_FUNCTIONS_TIMEOUT`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use redwood_core::{Error, ErrorKind, Result};
use serde_json::json;

use super::{CALL_FUNCTION, TASK_FUNCTION};

/// The worker mode that writes the running program's app folder and exits.
pub const MODE: &str = "functions-app";

inventory::submit! {
    redwood_core::raw::worker::WorkerMode { name: MODE, also_when: &[], serve }
}

/// Writes this program's app folder where `REDWOOD_FUNCTIONS_APP` says, prints its path, and
/// exits (code 2 with the reason on stderr when it cannot).
pub fn serve() -> ! {
    let written = (|| {
        let dir = std::env::var_os("REDWOOD_FUNCTIONS_APP").ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "REDWOOD_FUNCTIONS_APP (the folder to write) is not set",
            )
        })?;
        let mut options = AppOptions::default();
        if let Ok(queue) = std::env::var("REDWOOD_FUNCTIONS_QUEUE") {
            options.queue = queue;
        }
        if let Ok(text) = std::env::var("REDWOOD_FUNCTIONS_TIMEOUT") {
            options.function_timeout = humantime::parse_duration(&text).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("REDWOOD_FUNCTIONS_TIMEOUT `{text}` is not a duration: {e}"),
                )
            })?;
        }
        let dir = PathBuf::from(dir);
        write_app(&dir, &options)?;
        Ok::<_, Error>(dir)
    })();
    match written {
        Ok(dir) => {
            println!("{}", dir.display());
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("redwood: cannot write the function app: {e}");
            std::process::exit(2)
        }
    }
}

/// The name the executable gets in the folder.
pub const HANDLER_FILE: &str = "redwood-handler";

/// What goes into an app folder.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The task queue (default `redwood-tasks`).
    pub queue: String,
    /// The app's `functionTimeout` (default 5 minutes).
    pub function_timeout: Duration,
    /// Messages one instance receives at once (`batchSize`, default 16, at most 32).
    pub batch_size: u32,
    /// Deliveries before a message goes to the poison queue (default 5).
    pub max_dequeue_count: u32,
    /// The longest wait between polls of an empty queue (default 100 ms: a short wait for
    /// the first task, at the price of a queue request per 100 ms per idle instance).
    pub max_polling_interval: Duration,
    /// The executable (default: this program).
    pub executable: Option<PathBuf>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            queue: "redwood-tasks".into(),
            function_timeout: Duration::from_secs(300),
            batch_size: 16,
            max_dequeue_count: 5,
            max_polling_interval: Duration::from_millis(100),
            executable: None,
        }
    }
}

/// A duration as a .NET TimeSpan (`hh:mm:ss.fff`).
fn timespan(d: Duration) -> String {
    let ms = d.as_millis();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000
    )
}

/// Writes the app folder of a program into `dir` (created if missing); returns the
/// executable's path in it.
pub fn write_app(dir: &Path, options: &AppOptions) -> Result<PathBuf> {
    let io = |what: &str, e: std::io::Error| {
        Error::new(
            ErrorKind::Config,
            format!("cannot write the function app ({what}): {e}"),
        )
        .with_context("dir", dir.display())
    };
    if !crate::queue::valid_queue_name(&options.queue) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("`{}` is not a valid queue name", options.queue),
        ));
    }
    if !(1..=32).contains(&options.batch_size) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("batch_size {} is not between 1 and 32", options.batch_size),
        ));
    }
    for function in [TASK_FUNCTION, CALL_FUNCTION] {
        std::fs::create_dir_all(dir.join(function)).map_err(|e| io("folders", e))?;
    }
    let exe = match &options.executable {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| io("this program's path", e))?,
    };
    let target = dir.join(HANDLER_FILE);
    std::fs::copy(&exe, &target).map_err(|e| io(&exe.display().to_string(), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("permissions", e))?;
    }
    let host = json!({
        "version": "2.0",
        "functionTimeout": timespan(options.function_timeout),
        "customHandler": {
            "description": {"defaultExecutablePath": HANDLER_FILE, "arguments": []},
            "enableForwardingHttpRequest": false
        },
        "extensionBundle": {
            "id": "Microsoft.Azure.Functions.ExtensionBundle",
            "version": "[4.*, 5.0.0)"
        },
        "extensions": {"queues": {
            "batchSize": options.batch_size,
            "newBatchThreshold": options.batch_size / 2,
            "maxDequeueCount": options.max_dequeue_count,
            "visibilityTimeout": "00:00:00",
            "maxPollingInterval": timespan(options.max_polling_interval),
            "messageEncoding": "base64"
        }}
    });
    let function = json!({"bindings": [{
        "type": "queueTrigger",
        "direction": "in",
        "name": "task",
        "queueName": options.queue,
        "connection": "AzureWebJobsStorage"
    }]});
    let call = json!({"bindings": [
        {
            "type": "httpTrigger",
            "direction": "in",
            "name": "req",
            "authLevel": "function",
            "methods": ["post"]
        },
        {"type": "http", "direction": "out", "name": "res"}
    ]});
    let settings = json!({
        "IsEncrypted": false,
        "Values": {
            "FUNCTIONS_WORKER_RUNTIME": "custom",
            "AzureWebJobsStorage": "UseDevelopmentStorage=true"
        }
    });
    let write = |path: PathBuf, value: serde_json::Value| {
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        std::fs::write(&path, text).map_err(|e| io(&path.display().to_string(), e))
    };
    write(dir.join("host.json"), host)?;
    write(dir.join(TASK_FUNCTION).join("function.json"), function)?;
    write(dir.join(CALL_FUNCTION).join("function.json"), call)?;
    write(dir.join("local.settings.json"), settings)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_are_dotnet_style() {
        assert_eq!(timespan(Duration::from_secs(300)), "00:05:00.000");
        assert_eq!(timespan(Duration::from_millis(100)), "00:00:00.100");
        assert_eq!(timespan(Duration::from_secs(3 * 3600 + 61)), "03:01:01.000");
    }
}
