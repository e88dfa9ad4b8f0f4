//! A pool's start task: run on each node when it joins the pool (and on a replacement node),
//! under `/bin/sh -c` in the node's `startup` folder, with its resource files, environment and
//! retries. Until it succeeds a node takes no tasks (when `waitForSuccess`, the default); when
//! it fails for good the node is `starttaskfailed`, as on the service.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use serde_json::{Value, json};

use super::exec::Startup;
use super::resources::now_string;
use super::server::AccountState;

/// A start task to launch on one node.
pub(super) struct Launch {
    pool: String,
    node: String,
    dir: PathBuf,
    spec: Value,
}

/// The start tasks due: nodes that joined a pool with one since the last call (marked as
/// running it).
pub(super) fn due(state: &AccountState) -> Vec<Launch> {
    let mut data = state.data();
    let data = &mut *data;
    let mut launches = Vec::new();
    for (pool, nodes) in data.nodes.iter_mut() {
        if !nodes.iter().any(|n| n.startup == Startup::Pending) {
            continue;
        }
        let Some(spec) = data
            .pools
            .get(pool)
            .and_then(|p| p.body.get("startTask").cloned())
        else {
            continue;
        };
        for node in nodes.iter_mut().filter(|n| n.startup == Startup::Pending) {
            node.startup = Startup::Running;
            launches.push(Launch {
                pool: pool.clone(),
                node: node.id.clone(),
                dir: node.dir.clone(),
                spec: spec.clone(),
            });
        }
    }
    launches
}

/// Runs a start task (retried up to its `maxTaskRetryCount`) and records how it went.
pub(super) async fn run(state: Arc<AccountState>, launch: Launch) {
    let max_retries = launch
        .spec
        .get("constraints")
        .and_then(|c| c.get("maxTaskRetryCount"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let started = now_string();
    let mut retry = 0i64;
    let info = loop {
        record(
            &state,
            &launch,
            None,
            json!({"state": "running", "startTime": started, "retryCount": retry}),
        );
        let (exit_code, failure) = run_once(&state, &launch).await;
        let mut info = json!({
            "state": "completed", "startTime": started, "endTime": now_string(),
            "retryCount": retry,
            "result": if failure.is_some() { "failure" } else { "success" },
        });
        if let Some(code) = exit_code {
            info["exitCode"] = Value::from(code);
        }
        if retry > 0 {
            info["lastRetryTime"] = Value::from(now_string());
        }
        match failure {
            Some(_) if max_retries == -1 || retry < max_retries => retry += 1,
            Some(f) => {
                info["failureInfo"] = f;
                break info;
            }
            None => break info,
        }
    };
    let ok = info["result"] == "success";
    record(
        &state,
        &launch,
        Some(if ok { Startup::Ready } else { Startup::Failed }),
        info,
    );
    state.changed.notify_one();
}

/// Sets the node's `startTaskInfo` (and where it is, once the start task ended), if the node
/// is still in the pool.
fn record(state: &AccountState, launch: &Launch, startup: Option<Startup>, info: Value) {
    let mut data = state.data();
    let node = data
        .nodes
        .get_mut(&launch.pool)
        .and_then(|nodes| nodes.iter_mut().find(|n| n.id == launch.node));
    if let Some(node) = node {
        node.start_info = Some(info);
        if let Some(startup) = startup {
            node.startup = startup;
        }
    }
}

/// One run: its exit code (when it ran) and its `failureInfo` (when it failed).
async fn run_once(state: &AccountState, launch: &Launch) -> (Option<i32>, Option<Value>) {
    let not_started = |why: String| {
        (
            None,
            Some(json!({"category": "ServerError", "code": "TaskStartFailed", "message": why})),
        )
    };
    let startup = launch.dir.join("startup");
    let wd = startup.join("wd");
    if let Err(e) = std::fs::create_dir_all(&wd) {
        return not_started(format!("cannot create {}: {e}", wd.display()));
    }
    let files = launch
        .spec
        .get("resourceFiles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Err(why) = super::exec::download(state, &launch.pool, &files, &wd).await {
        return (
            None,
            Some(
                json!({"category": "UserError", "code": "BlobDownloadMiscError",
                "message": "Miscellaneous error encountered while downloading one of the specified Azure Blob(s)",
                "details": [{"name": "Message", "value": why}]}),
            ),
        );
    }
    let (Ok(stdout), Ok(stderr)) = (
        std::fs::File::create(startup.join("stdout.txt")),
        std::fs::File::create(startup.join("stderr.txt")),
    ) else {
        return not_started("cannot create its stdout.txt/stderr.txt".into());
    };
    let command_line = launch
        .spec
        .get("commandLine")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(command_line)
        .current_dir(&wd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .env("AZ_BATCH_ACCOUNT_NAME", &state.account.name)
        .env("AZ_BATCH_ACCOUNT_URL", &state.url)
        .env("AZ_BATCH_POOL_ID", &launch.pool)
        .env("AZ_BATCH_NODE_ID", &launch.node)
        .env("AZ_BATCH_NODE_ROOT_DIR", &launch.dir)
        .env("AZ_BATCH_NODE_SHARED_DIR", launch.dir.join("shared"))
        .env("AZ_BATCH_NODE_STARTUP_DIR", &startup)
        .env("AZ_BATCH_TASK_DIR", &startup)
        .env("AZ_BATCH_TASK_WORKING_DIR", &wd)
        .env("AZ_BATCH_NODE_IS_DEDICATED", "true");
    for setting in launch
        .spec
        .get("environmentSettings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = setting.get("name").and_then(Value::as_str) {
            let value = setting.get("value").and_then(Value::as_str).unwrap_or("");
            command.env(name, value);
        }
    }
    match command.status().await {
        Ok(status) if status.success() => (Some(0), None),
        Ok(status) => (
            Some(status.code().unwrap_or(-1)),
            Some(json!({"category": "UserError", "code": "FailureExitCode",
                "message": "The task exited with an exit code representing a failure"})),
        ),
        Err(e) => not_started(format!("cannot start /bin/sh: {e}")),
    }
}
