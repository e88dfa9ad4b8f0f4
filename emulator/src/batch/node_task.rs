//! What a node runs for itself rather than for a task: a pool's start task and a job's
//! preparation task. Both download their resource files into `wd` inside their folder, run
//! under `/bin/sh -c`, write `stdout.txt`/`stderr.txt` in their folder, are retried up to
//! their `maxTaskRetryCount`, and report their execution information with the same fields.

use std::path::Path;

use serde_json::{Value, json};

use super::resources::now_string;
use super::server::AccountState;

/// A start or job preparation task to run on a node of `pool`.
pub(super) struct NodeTask<'a> {
    pub state: &'a AccountState,
    pub pool: &'a str,
    /// Its definition (`commandLine`, `resourceFiles`, `environmentSettings`, and
    /// `maxTaskRetryCount` for a start task or `constraints` for a preparation task).
    pub spec: &'a Value,
    /// Its folder; the working directory is `wd` inside.
    pub dir: &'a Path,
}

impl NodeTask<'_> {
    /// Its command line.
    pub fn command_line(&self) -> &str {
        self.spec
            .get("commandLine")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `/bin/sh -c` with its command line in its `wd`, with the `AZ_BATCH_*` variables every
    /// task on `node` (whose root folder is `node_dir`) sees; callers add their own.
    pub fn shell(&self, node: &str, node_dir: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(self.command_line())
            .current_dir(self.dir.join("wd"))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .env("AZ_BATCH_ACCOUNT_NAME", &self.state.account.name)
            .env("AZ_BATCH_ACCOUNT_URL", &self.state.url)
            .env("AZ_BATCH_POOL_ID", self.pool)
            .env("AZ_BATCH_NODE_ID", node)
            .env("AZ_BATCH_NODE_ROOT_DIR", node_dir)
            .env("AZ_BATCH_NODE_SHARED_DIR", node_dir.join("shared"))
            .env("AZ_BATCH_TASK_DIR", self.dir)
            .env("AZ_BATCH_TASK_WORKING_DIR", self.dir.join("wd"));
        command
    }

    /// Runs it until it succeeds or its retries are used up. `command` makes a try's
    /// `/bin/sh -c` command (working directory and `AZ_BATCH_*` environment set); `record` gets
    /// the execution information whenever it changes, `base`'s fields included. Returns the
    /// final execution information (`result` says how it ended).
    pub async fn run(
        &self,
        base: Value,
        command: impl Fn() -> tokio::process::Command,
        record: impl Fn(Value),
    ) -> Value {
        // A start task names its retries itself; a job preparation task in its constraints.
        let max_retries = match self.spec.get("maxTaskRetryCount").and_then(Value::as_i64) {
            Some(n) => n,
            None => super::exec::max_task_retries(self.spec.get("constraints")),
        };
        let started = now_string();
        let mut retry = 0i64;
        loop {
            let mut info = base.clone();
            info["startTime"] = Value::from(started.clone());
            info["state"] = Value::from("running");
            info["retryCount"] = Value::from(retry);
            if retry > 0 {
                info["lastRetryTime"] = Value::from(now_string());
            }
            record(info.clone());
            let (exit_code, failure) = self.run_once(command()).await;
            info["state"] = Value::from("completed");
            info["endTime"] = Value::from(now_string());
            if let Some(code) = exit_code {
                info["exitCode"] = Value::from(code);
            }
            match failure {
                Some(_) if max_retries == -1 || retry < max_retries => retry += 1,
                Some(failure) => {
                    info["result"] = Value::from("failure");
                    info["failureInfo"] = failure;
                    record(info.clone());
                    return info;
                }
                None => {
                    info["result"] = Value::from("success");
                    record(info.clone());
                    return info;
                }
            }
        }
    }

    /// One try: its exit code (when it ran) and its `failureInfo` (when it failed).
    async fn run_once(&self, mut command: tokio::process::Command) -> (Option<i32>, Option<Value>) {
        let not_started = |why: String| {
            (
                None,
                Some(json!({"category": "servererror", "code": "TaskStartFailed", "message": why})),
            )
        };
        let wd = self.dir.join("wd");
        if let Err(e) = std::fs::create_dir_all(&wd) {
            return not_started(format!("cannot create {}: {e}", wd.display()));
        }
        let files = self
            .spec
            .get("resourceFiles")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Err(why) = super::preparation::download(self.state, self.pool, &files, &wd).await {
            return (
                None,
                Some(
                    json!({"category": "usererror", "code": "BlobDownloadMiscError",
                    "message": "Miscellaneous error encountered while downloading one of the specified Azure Blob(s)",
                    "details": [{"name": "Message", "value": why}]}),
                ),
            );
        }
        let (Ok(stdout), Ok(stderr)) = (
            std::fs::File::create(self.dir.join("stdout.txt")),
            std::fs::File::create(self.dir.join("stderr.txt")),
        ) else {
            return not_started("cannot create its stdout.txt/stderr.txt".into());
        };
        command.stdout(stdout).stderr(stderr);
        for (name, value) in super::placement::env_list(self.spec.get("environmentSettings")) {
            command.env(name, value);
        }
        match command.status().await {
            Ok(status) if status.success() => (Some(0), None),
            Ok(status) => (
                Some(status.code().unwrap_or(-1)),
                Some(json!({"category": "usererror", "code": "FailureExitCode",
                    "message": "The task exited with an exit code representing a failure"})),
            ),
            Err(e) => not_started(format!("cannot start /bin/sh: {e}")),
        }
    }
}
