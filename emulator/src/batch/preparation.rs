//! A job's preparation task: run once per node and job before the job's first task there, with
//! its retries; a node where it failed takes none of the job's tasks. Resource file downloads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use super::exec::shell;
use super::files;
use super::placement::Placement;
use super::server::AccountState;

/// A job's preparation task on one node.
#[derive(Debug, Default)]
pub struct Prep {
    /// Held while it runs: the job's tasks placed on the node wait for it.
    run: tokio::sync::Mutex<()>,
    /// Its `jobPreparationTaskExecutionInfo`, once it started.
    info: std::sync::Mutex<Option<Value>>,
    /// The pool of the node.
    pool: String,
    /// Its job's release task started on the node (it runs once).
    pub(super) released: std::sync::atomic::AtomicBool,
    /// The release task's `jobReleaseTaskExecutionInfo`, once it started.
    release_info: std::sync::Mutex<Option<Value>>,
}

impl Prep {
    /// Its `jobPreparationTaskExecutionInfo`, once it started.
    pub fn info(&self) -> Option<Value> {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The pool of the node it ran on.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Whether it ended in failure: the node then runs none of the job's tasks (until it is
    /// reimaged, which the emulator does not do).
    pub fn failed(&self) -> bool {
        let info = self.info.lock().unwrap_or_else(|p| p.into_inner());
        info.as_ref()
            .is_some_and(|i| i.get("result").and_then(Value::as_str) == Some("failure"))
    }

    /// The job release task's `jobReleaseTaskExecutionInfo`, once it started.
    pub fn release_info(&self) -> Option<Value> {
        self.release_info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_release_info(&self, info: Value) {
        *self.release_info.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    }

    fn set_info(&self, info: Value) {
        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    }
}

/// Job preparation tasks by (node, job), lower-cased.
pub type Preps = HashMap<(String, String), Arc<Prep>>;

/// Runs the job preparation task on a node unless it already ran there (once per node and
/// job, as the service does; tasks of the job on that node wait for it), retried up to its
/// `maxTaskRetryCount`. Returns whether it succeeded; after a failure the node takes none of
/// the job's tasks. `jobPreparationTaskExecutionInfo` records how it went.
pub(super) async fn prepare_job(
    state: &AccountState,
    p: &Placement,
    prep: &Value,
    node: &str,
    node_dir: &std::path::Path,
) -> bool {
    let slot = state
        .preps()
        .entry((node.to_string(), p.job.to_lowercase()))
        .or_insert_with(|| {
            Arc::new(Prep {
                pool: p.pool.clone(),
                ..Prep::default()
            })
        })
        .clone();
    let _running = slot.run.lock().await;
    if let Some(info) = slot.info() {
        return info.get("result").and_then(Value::as_str) == Some("success");
    }
    let dir = job_prep_dir(node_dir, &p.job);
    let root = format!("workitems/{}/job-1/jobpreparation", p.job);
    let task = super::node_task::NodeTask {
        state,
        pool: &p.pool,
        spec: prep,
        dir: &dir,
    };
    let base = json!({
        "taskRootDirectory": root,
        "taskRootDirectoryUrl": format!("{}/pools/{}/nodes/{node}/files/{root}", state.url, p.pool),
    });
    let info = task
        .run(
            base,
            || preparation_shell(state, p, &task, (node, node_dir), &dir),
            |info| slot.set_info(info),
        )
        .await;
    info["result"] == "success"
}

/// Downloads resource files onto a node of `pool`, unless an admin call made storage refuse
/// that pool's nodes.
pub(super) async fn download(
    state: &AccountState,
    pool: &str,
    files: &[Value],
    wd: &std::path::Path,
) -> Result<(), String> {
    let refused = state
        .data()
        .storage_refused
        .get(&pool.to_lowercase())
        .copied();
    if let (Some(status), Some(file)) = (refused, files.first()) {
        let url = ["httpUrl", "storageContainerUrl"]
            .iter()
            .find_map(|k| file.get(*k).and_then(Value::as_str))
            .unwrap_or("");
        let shown = url.split('?').next().unwrap_or(url);
        return Err(format!(
            "GET {shown}: HTTP {status} (storage does not let this node in)"
        ));
    }
    files::download(&state.http, &state.downloads, files, wd).await
}

/// The job preparation task's folder on a node.
pub(super) fn job_prep_dir(node_dir: &std::path::Path, job: &str) -> PathBuf {
    node_dir
        .join("workitems")
        .join(job)
        .join("job-1")
        .join("jobpreparation")
}

/// The job preparation task's command: the job's environment and the task's `AZ_BATCH_*`
/// variables, without those of the task whose start ran it.
fn preparation_shell(
    state: &AccountState,
    p: &Placement,
    task: &super::node_task::NodeTask<'_>,
    node: (&str, &std::path::Path),
    dir: &std::path::Path,
) -> tokio::process::Command {
    let mut command = shell(state, p, task.command_line(), node, dir);
    for (name, _) in &p.env {
        command.env_remove(name);
    }
    for (name, value) in p.job_env.iter() {
        command.env(name, value);
    }
    let id = task
        .spec
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("jobpreparation");
    command.env("AZ_BATCH_TASK_ID", id);
    command
}
