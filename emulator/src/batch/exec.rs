//! Running one task: its command line under `/bin/sh -c` in its working directory with the
//! `AZ_BATCH_*` environment, in its own process group; `maxWallClockTime`; stopping it
//! (terminate, requeue, delete); and recording how it ended, retrying up to
//! `maxTaskRetryCount`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::files;
use super::multi_instance::{MPI_BIN, coordinate};
use super::placement::{Placement, complete_job_if_done};
use super::preparation::{download, job_prep_dir, prepare_job};
use super::resources::now_string;
use super::server::AccountState;

/// Why a running task's process was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `terminate`: the task ends as completed (failed).
    Terminate,
    /// Its node was lost: the task goes back to the queue, as the service does.
    Requeue,
    /// `delete`: the task is gone.
    Delete,
}

/// The stop switches of running tasks, by (job, task), lower-cased, with the run they stop.
pub type Running = HashMap<(String, String), (u64, tokio::sync::oneshot::Sender<Stop>)>;

/// Stops a running task; returns whether one was running.
pub fn stop_task(state: &AccountState, job: &str, task: &str, why: Stop) -> bool {
    let switch = state
        .running()
        .remove(&(job.to_lowercase(), task.to_lowercase()));
    switch.is_some_and(|(_, s)| s.send(why).is_ok())
}

/// Parses an ISO 8601 duration such as `PT05M00S`, `PT1.5S` or `P1DT2H`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut secs = 0.0f64;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
            } else {
                let (_, factor) = units.iter().find(|(u, _)| *u == c)?;
                secs += number.parse::<f64>().ok()? * factor;
                number.clear();
            }
        }
        number.is_empty().then_some(())
    };
    take(date, &[('D', 86_400.0), ('W', 604_800.0)])?;
    take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    // Too large for a Duration (or not a number): not a duration this emulator takes.
    Duration::try_from_secs_f64(secs).ok()
}

/// Runs one placed task to its end and records the outcome.
pub(super) async fn run(state: Arc<AccountState>, mut p: Placement) {
    let task_dir = p.task_dir(&p.node_dir);
    let wd = task_dir.join("wd");
    let key = (p.job.to_lowercase(), p.task.to_lowercase());
    let (_, unused) = tokio::sync::oneshot::channel();
    let stop = std::mem::replace(&mut p.stop, unused);
    let outcome = execute(&state, &p, &task_dir, &wd, stop).await;
    {
        // Only this run's switch: a later run of the same task may have registered its own.
        let mut running = state.running();
        if running.get(&key).is_some_and(|(run, _)| *run == p.run) {
            running.remove(&key);
        }
    }
    {
        let mut data = state.data();
        if let Some(nodes) = data.nodes.get_mut(&p.pool.to_lowercase()) {
            for (id, _) in p.instances() {
                if let Some(node) = nodes.iter_mut().find(|n| n.id == id) {
                    node.slots_used -= p.slots;
                }
            }
        }
        super::pool_update::drop_left_nodes(&mut data, &p.pool);
        // Only a job that acts on its tasks' exit conditions is looked at again.
        let acting_job = data
            .jobs
            .get(&p.job)
            .filter(|j| j.state() == "active")
            .filter(|j| {
                j.str("onTaskFailure")
                    .is_some_and(|m| m.eq_ignore_ascii_case("performexitoptionsjobaction"))
            })
            .map(|j| j.body.clone());
        let mut action = None;
        if let Some(task) = data
            .tasks
            .get_mut(&p.job.to_lowercase())
            .and_then(|t| t.get_mut(&p.task))
            .filter(|t| t.run == p.run)
        {
            finish(task, outcome);
            end_subtasks(task);
            if task.state() == "completed"
                && let Some(job) = &acting_job
            {
                action = job_action_after(job, task);
            }
        }
        let stopped = match action {
            Some("terminate") => super::jobs::end_job(&mut data, &p.job, "TaskFailed"),
            Some(_) => super::job_update::disable(&mut data, &p.job),
            None => {
                complete_job_if_done(&mut data, &p.job);
                Vec::new()
            }
        };
        let stop = if action == Some("terminate") {
            Stop::Terminate
        } else {
            Stop::Requeue
        };
        let ended = data
            .jobs
            .get(&p.job)
            .is_some_and(|j| j.state() == "completed");
        drop(data);
        for task in stopped {
            stop_task(&state, &p.job, &task, stop);
        }
        if ended {
            super::release::release_job(&state, &p.job);
        }
    }
    state.changed.notify_one();
}

/// A multi-instance task's subtasks end with its run: completed with the run's exit code,
/// whether the task itself completed or goes back to the queue for a retry.
fn end_subtasks(task: &mut super::resources::Resource) {
    let info = task.body.get("executionInfo");
    let exit_code = info.and_then(|e| e.get("exitCode")).cloned();
    let failed = exit_code.as_ref().and_then(Value::as_i64) != Some(0);
    let now = now_string();
    for sub in &mut task.subtasks {
        if sub.get("state").and_then(Value::as_str) == Some("completed") {
            continue;
        }
        sub["previousState"] = Value::from("running");
        sub["previousStateTransitionTime"] = sub["stateTransitionTime"].clone();
        sub["state"] = Value::from("completed");
        sub["stateTransitionTime"] = Value::from(now.clone());
        sub["endTime"] = Value::from(now.clone());
        sub["result"] = Value::from(if failed { "failure" } else { "success" });
        if let Some(code) = &exit_code {
            sub["exitCode"] = code.clone();
        }
    }
}

/// The job action a completed task's exit conditions ask for (see [`super::exit_conditions`]).
fn job_action_after(
    job: &serde_json::Map<String, Value>,
    task: &super::resources::Resource,
) -> Option<&'static str> {
    let info = task.body.get("executionInfo");
    let exit_code = info.and_then(|e| e.get("exitCode")).and_then(Value::as_i64);
    let failure = info
        .and_then(|e| e.get("failureInfo"))
        .and_then(|f| f.get("code"))
        .and_then(Value::as_str);
    super::exit_conditions::job_action(job, &task.body, exit_code, failure)
}

/// How a run ended: the exit code, or why there is none.
pub(super) enum RunEnd {
    Exited(i32),
    TimedOut(Duration),
    NotStarted(String),
    Stopped(Stop),
    /// A resource file could not be downloaded; the command did not run.
    ResourceFiles(String),
    /// The command exited, but an output file could not be uploaded.
    Upload(i32, String),
    /// The job preparation task failed on (one of) its node(s): the task did not start and
    /// waits for another node.
    Ineligible,
}

async fn execute(
    state: &AccountState,
    p: &Placement,
    task_dir: &std::path::Path,
    wd: &std::path::Path,
    stop: tokio::sync::oneshot::Receiver<Stop>,
) -> RunEnd {
    if let Err(e) = std::fs::create_dir_all(wd) {
        return RunEnd::NotStarted(format!("cannot create {}: {e}", wd.display()));
    }
    let files = (
        std::fs::File::create(task_dir.join("stdout.txt")),
        std::fs::File::create(task_dir.join("stderr.txt")),
    );
    let (Ok(stdout), Ok(stderr)) = files else {
        return RunEnd::NotStarted("cannot create stdout.txt/stderr.txt".into());
    };
    if let Some(prep) = &p.job_prep {
        for (node, node_dir) in p.instances() {
            if !prepare_job(state, p, prep, &node, &node_dir).await {
                return RunEnd::Ineligible;
            }
        }
    }
    if let Err(why) = download(state, &p.pool, &p.resource_files, wd).await {
        return RunEnd::ResourceFiles(why);
    }
    for (_, node_dir) in p.instances().iter().filter(|_| p.multi_instance) {
        // Common resource files go to every instance's task folder, above its working folder.
        let dir = p.task_dir(node_dir);
        if let Err(e) = std::fs::create_dir_all(dir.join("wd")) {
            return RunEnd::NotStarted(format!("cannot create {}: {e}", dir.display()));
        }
        if let Err(why) = download(state, &p.pool, &p.common_files, &dir).await {
            return RunEnd::ResourceFiles(why);
        }
    }
    if let Some(coordination) = &p.coordination
        && let Err(end) = coordinate(state, p, coordination).await
    {
        return end;
    }
    if !state.task_start_latency.is_zero() {
        // The service's own start-up of a task (see `BatchOptions::task_start_latency`).
        tokio::time::sleep(state.task_start_latency).await;
    }
    let mut command = shell(state, p, &p.command, (&p.node, &p.node_dir), task_dir);
    command.stdout(stdout).stderr(stderr);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return RunEnd::NotStarted(format!("cannot start /bin/sh: {e}")),
    };
    let wall_clock = async {
        match p.wall_clock {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let stopped = async {
        match stop.await {
            Ok(why) => why,
            Err(_) => std::future::pending().await, // nobody can stop it any more
        }
    };
    let waited = tokio::select! {
        status = child.wait() => status,
        () = wall_clock => {
            kill_group(&mut child).await;
            return RunEnd::TimedOut(p.wall_clock.unwrap_or_default());
        }
        why = stopped => {
            kill_group(&mut child).await;
            return RunEnd::Stopped(why);
        }
    };
    let code = match waited {
        Ok(status) => status.code().unwrap_or(-1),
        Err(e) => return RunEnd::NotStarted(format!("lost the process: {e}")),
    };
    match files::upload(&state.http, &p.output_files, wd, Some(code)).await {
        Ok(_) => RunEnd::Exited(code),
        Err(why) => RunEnd::Upload(code, why),
    }
}

/// `/bin/sh -c COMMAND` in an instance's working directory, with the `AZ_BATCH_*` environment
/// (and, for a multi-instance task, the host list and which instance is the master).
pub(super) fn shell(
    state: &AccountState,
    p: &Placement,
    command_line: &str,
    (node, node_dir): (&str, &std::path::Path),
    task_dir: &std::path::Path,
) -> tokio::process::Command {
    let wd = task_dir.join("wd");
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(command_line)
        .current_dir(&wd)
        .stdin(Stdio::null())
        // Its own process group: stopping the task stops what its shell started too.
        .process_group(0)
        .kill_on_drop(true)
        .env("AZ_BATCH_ACCOUNT_NAME", &state.account.name)
        .env("AZ_BATCH_ACCOUNT_URL", &state.url)
        .env("AZ_BATCH_POOL_ID", &p.pool)
        .env("AZ_BATCH_NODE_ID", node)
        .env("AZ_BATCH_NODE_ROOT_DIR", node_dir)
        .env("AZ_BATCH_NODE_SHARED_DIR", node_dir.join("shared"))
        .env("AZ_BATCH_JOB_ID", &p.job)
        .env("AZ_BATCH_TASK_ID", &p.task)
        .env("AZ_BATCH_TASK_DIR", task_dir)
        .env("AZ_BATCH_TASK_WORKING_DIR", &wd)
        .env("AZ_BATCH_NODE_IS_DEDICATED", "true");
    if p.job_prep.is_some() {
        let prep = job_prep_dir(node_dir, &p.job);
        command
            .env("AZ_BATCH_JOB_PREP_WORKING_DIR", prep.join("wd"))
            .env("AZ_BATCH_JOB_PREP_DIR", prep);
    }
    if p.multi_instance {
        let instances = p.instances();
        let path = std::env::var("PATH").unwrap_or_default();
        let mpi_bin = state.root.path().join(MPI_BIN);
        let hosts = vec!["127.0.0.1"; instances.len()].join(",");
        let nodes: Vec<String> = instances.iter().map(|(id, _)| id.clone()).collect();
        command
            .env("AZ_BATCH_HOST_LIST", hosts)
            .env("AZ_BATCH_NODE_LIST", nodes.join(";"))
            .env("AZ_BATCH_MASTER_NODE", "127.0.0.1:6000")
            .env(
                "AZ_BATCH_IS_CURRENT_NODE_MASTER",
                (node == p.node).to_string(),
            )
            .env("AZ_BATCH_TASK_SHARED_DIR", task_dir)
            .env("PATH", format!("{}:{path}", mpi_bin.display()));
    }
    // The job's common environment first: the task's own settings override it.
    for (k, v) in p.job_env.iter().chain(&p.env) {
        command.env(k, v);
    }
    command
}

/// A `constraints` object's `maxTaskRetryCount` (0 when absent; -1 means no limit).
pub(super) fn max_task_retries(constraints: Option<&Value>) -> i64 {
    constraints
        .and_then(|c| c.get("maxTaskRetryCount"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// Puts a running task back in the queue (active), with its execution information.
fn back_to_queue(task: &mut super::resources::Resource, now: String, info: Value) {
    task.update([
        ("state", Value::from("active")),
        ("previousState", Value::from("running")),
        ("stateTransitionTime", Value::from(now)),
        ("executionInfo", info),
    ]);
}

/// Kills a task's process group (its shell and everything it started) and reaps the shell.
async fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: signalling the process group our child leads (it was spawned with
        // `process_group(0)` and is not reaped yet, so the id is still its own).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

/// Ends a task that is not running any more or never will: completed, failed with
/// `TaskEnded` and `message` (a terminated task or job).
pub(super) fn end_task(task: &mut super::resources::Resource, message: &str) {
    let now = now_string();
    let mut info = task
        .body
        .get("executionInfo")
        .cloned()
        .unwrap_or_else(|| json!({"retryCount": 0, "requeueCount": 0}));
    info["endTime"] = Value::from(now.clone());
    info["result"] = Value::from("failure");
    info["failureInfo"] = json!({"category": "usererror", "code": "TaskEnded", "message": message});
    let previous = task.str("state").unwrap_or("active").to_string();
    task.update([
        ("state", Value::from("completed")),
        ("previousState", Value::from(previous)),
        ("stateTransitionTime", Value::from(now)),
        ("executionInfo", info),
    ]);
}

/// Records the end of a run: completed, or back to active for a retry. A task already
/// completed (terminated while it ran) stays as it is.
pub(super) fn finish(task: &mut super::resources::Resource, end: RunEnd) {
    if task.str("state") == Some("completed") {
        return;
    }
    let info = task
        .body
        .get("executionInfo")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let retry = info.get("retryCount").and_then(Value::as_i64).unwrap_or(0);
    let max_retries = max_task_retries(task.body.get("constraints"));
    let now = now_string();
    let (exit_code, failure) = match &end {
        RunEnd::Exited(0) => (Some(0), None),
        RunEnd::Exited(code) => (
            Some(*code),
            Some(json!({"category": "usererror", "code": "FailureExitCode",
                "message": "The task exited with an exit code representing a failure"})),
        ),
        RunEnd::TimedOut(limit) => (
            None,
            Some(
                json!({"category": "usererror", "code": "MaxWallClockTimeExceeded",
                "message": format!("The task ran longer than its maxWallClockTime of {limit:?}")}),
            ),
        ),
        RunEnd::NotStarted(why) => (
            None,
            Some(json!({"category": "servererror", "code": "TaskStartFailed", "message": why})),
        ),
        RunEnd::Stopped(Stop::Terminate) => (
            None,
            Some(json!({"category": "usererror", "code": "TaskEnded",
                "message": "The task was terminated by a request"})),
        ),
        RunEnd::Stopped(Stop::Requeue) => {
            // Its node was lost: back to the queue, counted as a requeue, not a retry.
            let mut info = info;
            let requeues = info
                .get("requeueCount")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            info["requeueCount"] = Value::from(requeues + 1);
            return back_to_queue(task, now, info);
        }
        RunEnd::Stopped(Stop::Delete) => return,
        // Not the task's fault: back to the queue for another node, nothing counted.
        RunEnd::Ineligible => return back_to_queue(task, now, info),
        RunEnd::ResourceFiles(why) => (
            None,
            Some(json!({"category": "usererror", "code": "BlobDownloadMiscError", "message": why})),
        ),
        RunEnd::Upload(code, why) => (
            Some(*code),
            Some(json!({"category": "usererror", "code": "FileUploadMiscError", "message": why})),
        ),
    };
    let retryable = matches!(end, RunEnd::Exited(c) if c != 0);
    let mut info = info;
    info["endTime"] = Value::from(now.clone());
    if let Some(code) = exit_code {
        info["exitCode"] = Value::from(code);
    }
    if retryable && (max_retries == -1 || retry < max_retries) {
        info["retryCount"] = Value::from(retry + 1);
        info["lastRetryTime"] = Value::from(now.clone());
        task.update([
            ("state", Value::from("active")),
            ("previousState", Value::from("running")),
            ("stateTransitionTime", Value::from(now)),
            ("executionInfo", info),
        ]);
        return;
    }
    info["result"] = Value::from(if failure.is_some() {
        "failure"
    } else {
        "success"
    });
    if let Some(f) = failure {
        info["failureInfo"] = f;
    }
    task.update([
        ("state", Value::from("completed")),
        ("previousState", Value::from("running")),
        ("stateTransitionTime", Value::from(now)),
        ("executionInfo", info),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT05M00S"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("PT1.5S"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("P1DT2H"), Some(Duration::from_secs(93_600)));
        assert_eq!(parse_duration("PT"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(parse_duration("PT5X"), None);
    }
}
