//! The scheduler: places active tasks into free task slots of nodes that can take them (start
//! task done, job preparation not failed there), honouring `maxParallelTasks` and task
//! dependencies, and completes a job whose tasks are all done when it asks for that.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::dependencies;
use super::exec::{Stop, parse_duration, run};
use super::resources::now_string;
use super::server::AccountState;

/// The nodes on which a job's preparation task failed: the job's tasks are not placed there.
fn ineligible_nodes(state: &AccountState, job: &str) -> std::collections::HashSet<String> {
    let job = job.to_lowercase();
    state
        .preps()
        .iter()
        .filter(|((_, j), prep)| *j == job && prep.failed())
        .map(|((node, _), _)| node.clone())
        .collect()
}

/// A task placed on a node, ready to run.
pub(super) struct Placement {
    pub(super) job: String,
    pub(super) task: String,
    pub(super) pool: String,
    pub(super) node: String,
    pub(super) node_dir: PathBuf,
    pub(super) command: String,
    /// The job's `commonEnvironmentSettings` (the job preparation task gets these too).
    pub(super) job_env: Arc<Vec<(String, String)>>,
    /// The task's own environment (it overrides the job's).
    pub(super) env: Vec<(String, String)>,
    pub(super) wall_clock: Option<Duration>,
    pub(super) slots: i64,
    pub(super) resource_files: Vec<Value>,
    pub(super) output_files: Vec<Value>,
    /// A multi-instance task (it gets the host list and the emulator's `mpirun`).
    pub(super) multi_instance: bool,
    /// Multi-instance: files every instance downloads into its task folder.
    pub(super) common_files: Vec<Value>,
    /// Multi-instance: the command every instance runs first.
    pub(super) coordination: Option<String>,
    /// Multi-instance: the nodes of the instances other than the primary.
    pub(super) others: Vec<(String, PathBuf)>,
    /// The job's preparation task, run once on each node before the job's first task there.
    pub(super) job_prep: Option<Value>,
    /// Which run of the task this is (see [`Resource::run`](super::resources::Resource::run)).
    pub(super) run: u64,
    /// Receives why the task is stopped from outside. Its switch is registered while the task
    /// is placed, so a node lost before the process starts still stops it.
    pub(super) stop: tokio::sync::oneshot::Receiver<Stop>,
}

impl Placement {
    /// Every instance's node: the primary's first.
    pub(super) fn instances(&self) -> Vec<(String, PathBuf)> {
        std::iter::once((self.node.clone(), self.node_dir.clone()))
            .chain(self.others.iter().cloned())
            .collect()
    }

    pub(super) fn task_dir(&self, node_dir: &std::path::Path) -> PathBuf {
        node_dir
            .join("workitems")
            .join(&self.job)
            .join("job-1")
            .join(&self.task)
    }
}

/// What every task of a job shares.
struct JobExtras {
    /// `commonEnvironmentSettings`.
    pub(super) env: Arc<Vec<(String, String)>>,
    /// `jobPreparationTask`.
    pub(super) prep: Option<Value>,
    /// `usesTaskDependencies`: a waiting task starts only once its dependencies allow.
    dependencies: bool,
}

/// Name/value pairs of an `environmentSettings` list.
pub(super) fn env_list(list: Option<&Value>) -> Vec<(String, String)> {
    list.and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|e| {
                    Some((
                        e.get("name")?.as_str()?.to_string(),
                        e.get("value")?.as_str().unwrap_or("").to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Places active tasks into free slots and starts them; called whenever something changed.
pub fn schedule(state: &Arc<AccountState>) {
    for launch in super::start_task::due(state) {
        tokio::spawn(super::start_task::run(state.clone(), launch));
    }
    let placements = {
        let mut data = state.data();
        let data = &mut *data;
        let mut placements = Vec::new();
        let jobs: Vec<(String, String, Option<usize>, Arc<JobExtras>)> = data
            .jobs
            .all()
            .filter(|j| j.state() == "active")
            .filter_map(|j| {
                let pool = j.body.get("poolInfo")?.get("poolId")?.as_str()?.to_string();
                // maxParallelTasks: -1 (the default) means no limit.
                let limit = j
                    .body
                    .get("maxParallelTasks")
                    .and_then(Value::as_i64)
                    .filter(|&n| n >= 0)
                    .map(|n| n as usize);
                let extras = Arc::new(JobExtras {
                    env: Arc::new(env_list(j.body.get("commonEnvironmentSettings"))),
                    prep: j.body.get("jobPreparationTask").cloned(),
                    dependencies: j.body.get("usesTaskDependencies") == Some(&Value::Bool(true)),
                });
                Some((j.str("id")?.to_string(), pool, limit, extras))
            })
            .collect();
        for (job, pool, limit, extras) in jobs {
            let Some(pool_res) = data.pools.get(&pool) else {
                continue;
            };
            let slots_per_node = pool_res
                .body
                .get("taskSlotsPerNode")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let ineligible = if extras.prep.is_some() {
                ineligible_nodes(state, &job)
            } else {
                Default::default()
            };
            let Some(nodes) = data.nodes.get_mut(&pool.to_lowercase()) else {
                continue;
            };
            let Some(tasks) = data.tasks.get_mut(&job.to_lowercase()) else {
                continue;
            };
            // One pass over the job's tasks; only the earliest few waiting ones are sorted,
            // so a job of 10,000 tasks costs little per scheduling round.
            let free_slots: i64 = nodes
                .iter()
                .filter(|n| n.takes_tasks() && !ineligible.contains(&n.id))
                .map(|n| (slots_per_node - n.slots_used).max(0))
                .sum();
            if free_slots == 0 {
                continue;
            }
            let mut running = 0usize;
            let mut active: Vec<(&str, &str)> = Vec::new();
            for t in tasks.all() {
                match t.state() {
                    "active" if extras.dependencies && !dependencies::ready(t, tasks) => {}
                    "active" => active.push((t.created(), t.id())),
                    "running" => running += 1,
                    _ => {}
                }
            }
            // A multi-instance task that waits for nodes lets later ones pass: keep a margin.
            let take = free_slots as usize + 64;
            if take < active.len() {
                active.select_nth_unstable(take);
                active.truncate(take);
            }
            active.sort_unstable();
            let waiting: Vec<((), String)> = active
                .into_iter()
                .map(|(_, id)| ((), id.to_string()))
                .collect();
            for (_, task_id) in waiting {
                if limit.is_some_and(|max| running >= max) {
                    break;
                }
                let Some(task) = tasks.get_mut(&task_id) else {
                    continue;
                };
                let slots = task
                    .body
                    .get("requiredSlots")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                let instances = task
                    .body
                    .get("multiInstanceSettings")
                    .and_then(|m| m.get("numberOfInstances"))
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
                    .max(1) as usize;
                // One instance per node (a multi-instance task spans distinct nodes).
                let mut free: Vec<usize> = (0..nodes.len())
                    .filter(|&i| slots_per_node - nodes[i].slots_used >= slots)
                    .filter(|&i| nodes[i].takes_tasks() && !ineligible.contains(&nodes[i].id))
                    .collect();
                free.sort_by_key(|&i| nodes[i].slots_used);
                if free.len() < instances {
                    if instances == 1 {
                        break; // the pool is full
                    }
                    continue; // waits for enough free nodes
                }
                for &i in &free[..instances] {
                    nodes[i].slots_used += slots;
                }
                let others: Vec<(String, PathBuf)> = free[1..instances]
                    .iter()
                    .map(|&i| (nodes[i].id.clone(), nodes[i].dir.clone()))
                    .collect();
                let node = &nodes[free[0]];
                let started = now_string();
                task.subtasks = others
                    .iter()
                    .enumerate()
                    .map(|(i, (other, _))| {
                        json!({
                            "id": i + 1,
                            "nodeInfo": {
                                "affinityId": other, "poolId": pool, "nodeId": other,
                                "nodeUrl": format!("{}/pools/{pool}/nodes/{other}", state.url),
                                "taskRootDirectory": format!("workitems/{job}/job-1/{task_id}"),
                            },
                            "startTime": started, "state": "running",
                            "stateTransitionTime": started, "previousState": "preparing",
                        })
                    })
                    .collect();
                let counter = |name: &str| {
                    task.body
                        .get("executionInfo")
                        .and_then(|e| e.get(name))
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                };
                let (retry, requeues) = (counter("retryCount"), counter("requeueCount"));
                let root_dir = format!("workitems/{job}/job-1/{task_id}");
                let now = now_string();
                task.update([
                    ("state", Value::from("running")),
                    ("stateTransitionTime", Value::from(now.clone())),
                    ("previousState", Value::from("active")),
                    (
                        "executionInfo",
                        json!({"startTime": now, "retryCount": retry, "requeueCount": requeues}),
                    ),
                    (
                        "nodeInfo",
                        json!({
                            "affinityId": node.id, "nodeUrl": format!("{}/pools/{pool}/nodes/{}", state.url, node.id),
                            "poolId": pool, "nodeId": node.id, "taskRootDirectory": root_dir,
                        }),
                    ),
                ]);
                let mut env = env_list(task.body.get("environmentSettings"));
                env.push(("AZ_BATCH_TASK_RETRY_COUNT".into(), retry.to_string()));
                running += 1;
                let (switch, stop) = tokio::sync::oneshot::channel();
                let run = state.next_run();
                task.run = run;
                state
                    .running()
                    .insert((job.to_lowercase(), task_id.to_lowercase()), (run, switch));
                placements.push(Placement {
                    job: job.clone(),
                    task: task_id.clone(),
                    pool: pool.clone(),
                    node: node.id.clone(),
                    node_dir: node.dir.clone(),
                    command: task.str("commandLine").unwrap_or("").to_string(),
                    job_env: extras.env.clone(),
                    env,
                    wall_clock: task
                        .body
                        .get("constraints")
                        .and_then(|c| c.get("maxWallClockTime"))
                        .and_then(Value::as_str)
                        .and_then(parse_duration),
                    slots,
                    resource_files: list(&task.body, "resourceFiles"),
                    output_files: list(&task.body, "outputFiles"),
                    multi_instance: task.body.contains_key("multiInstanceSettings"),
                    common_files: task
                        .body
                        .get("multiInstanceSettings")
                        .and_then(|m| m.get("commonResourceFiles"))
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    coordination: task
                        .body
                        .get("multiInstanceSettings")
                        .and_then(|m| m.get("coordinationCommandLine"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    others,
                    run,
                    stop,
                    job_prep: extras.prep.clone(),
                });
            }
        }
        placements
    };
    for placement in placements {
        tokio::spawn(run(state.clone(), placement));
    }
}

pub(super) fn list(body: &serde_json::Map<String, Value>, name: &str) -> Vec<Value> {
    body.get(name)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Applies a job's `onAllTasksComplete: terminatejob` once every task completed.
pub(super) fn complete_job_if_done(data: &mut super::server::Data, job: &str) {
    let all_done = data
        .tasks
        .get(&job.to_lowercase())
        .is_some_and(|tasks| tasks.all().all(|t| t.state() == "completed"));
    let Some(resource) = data.jobs.get_mut(job) else {
        return;
    };
    let terminate = resource
        .str("onAllTasksComplete")
        .is_some_and(|v| v.eq_ignore_ascii_case("terminatejob"));
    if all_done && terminate && resource.state() == "active" {
        let now = now_string();
        resource.update([
            ("state", Value::from("completed")),
            ("previousState", Value::from("active")),
            ("stateTransitionTime", Value::from(now.clone())),
            (
                "executionInfo",
                json!({"endTime": now, "terminateReason": "AllTasksComplete"}),
            ),
        ]);
    }
}
