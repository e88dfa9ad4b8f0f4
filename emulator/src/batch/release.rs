//! A job's release task: once the job has ended (completed, terminated or deleted), it runs on
//! every node where the job's preparation task ran, under `/bin/sh -c` in the node's
//! `workitems/{job}/job-1/jobrelease` folder, and `jobpreparationandreleasetaskstatus` shows how
//! it went.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::node_task::NodeTask;
use super::placement::env_list;
use super::preparation::Prep;
use super::server::AccountState;

/// Starts the job's release task on each node where its preparation task ran, unless it has
/// started there already. Does nothing for a job without one.
pub(super) fn release_job(state: &Arc<AccountState>, job: &str) {
    let (spec, job_env, runs) = {
        let data = state.data();
        let Some(resource) = data.jobs.get(job) else {
            return;
        };
        let Some(spec) = resource.body.get("jobReleaseTask").cloned() else {
            return;
        };
        let job_env = env_list(resource.body.get("commonEnvironmentSettings"));
        let key = job.to_lowercase();
        let runs: Vec<(String, String, std::path::PathBuf, Arc<Prep>)> = state
            .preps()
            .iter()
            .filter(|((_, j), _)| *j == key)
            .filter_map(|((node, _), prep)| {
                let dir = data
                    .nodes
                    .get(&prep.pool().to_lowercase())?
                    .iter()
                    .find(|n| &n.id == node)?
                    .dir
                    .clone();
                Some((node.clone(), prep.pool().to_string(), dir, prep.clone()))
            })
            .filter(|(_, _, _, prep)| !prep.released.swap(true, Ordering::SeqCst))
            .collect();
        (spec, job_env, runs)
    };
    for (node, pool, node_dir, prep) in runs {
        let state = state.clone();
        let (spec, job_env, job) = (spec.clone(), job_env.clone(), job.to_string());
        tokio::spawn(async move {
            let dir = node_dir
                .join("workitems")
                .join(&job)
                .join("job-1")
                .join("jobrelease");
            let task = NodeTask {
                state: &state,
                pool: &pool,
                spec: &spec,
                dir: &dir,
            };
            let root = format!("workitems/{job}/job-1/jobrelease");
            let base = json!({
                "taskRootDirectory": root,
                "taskRootDirectoryUrl": format!("{}/pools/{pool}/nodes/{node}/files/{root}", state.url),
            });
            let command = || {
                let mut command = task.shell(&node, &node_dir);
                command
                    .envs(job_env.iter().cloned())
                    .env("AZ_BATCH_JOB_ID", &job)
                    .env(
                        "AZ_BATCH_JOB_PREP_DIR",
                        super::preparation::job_prep_dir(&node_dir, &job),
                    )
                    .env(
                        "AZ_BATCH_TASK_ID",
                        spec.get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("jobrelease"),
                    );
                command
            };
            task.run(base, command, |info| prep.set_release_info(info))
                .await;
        });
    }
}
