//! Running tasks: each pool has emulated compute nodes (folders on this machine); a scheduler
//! places active tasks into free task slots and runs each command line under `/bin/sh -c` in
//! the task's working directory, with the `AZ_BATCH_*` environment, honouring
//! `maxTaskRetryCount` and `maxWallClockTime`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::files;
use super::resources::now_string;
use super::server::AccountState;

/// An emulated compute node.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node id.
    pub id: String,
    /// Task slots in use.
    pub slots_used: i64,
    /// Its root folder (`AZ_BATCH_NODE_ROOT_DIR`).
    pub dir: PathBuf,
    /// Where it is with its pool's start task.
    pub startup: Startup,
    /// Whether tasks wait for the start task to succeed (its `waitForSuccess`).
    pub wait_for_start: bool,
    /// The start task's `startTaskInfo`, once it started.
    pub start_info: Option<Value>,
}

/// Where a node is with its pool's start task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// No start task, or it succeeded.
    Ready,
    /// The start task is still to be launched.
    Pending,
    /// The start task runs.
    Running,
    /// The start task failed (after its retries).
    Failed,
}

impl Node {
    fn new(id: String, dir: PathBuf, start_task: Option<&Value>) -> Node {
        let _ = std::fs::create_dir_all(dir.join("shared"));
        Node {
            id,
            slots_used: 0,
            dir,
            startup: if start_task.is_some() {
                Startup::Pending
            } else {
                Startup::Ready
            },
            wait_for_start: start_task
                .and_then(|s| s.get("waitForSuccess"))
                .and_then(Value::as_bool)
                .unwrap_or(true),
            start_info: None,
        }
    }

    /// Whether tasks may be placed on it: its start task succeeded, or tasks need not wait.
    pub fn takes_tasks(&self) -> bool {
        self.startup == Startup::Ready || !self.wait_for_start
    }

    /// Its `state`, as the service reports it.
    fn state(&self) -> &'static str {
        if self.slots_used > 0 {
            return "running";
        }
        match (self.startup, self.wait_for_start) {
            (Startup::Pending | Startup::Running, true) => "waitingforstarttask",
            (Startup::Failed, true) => "starttaskfailed",
            _ => "idle",
        }
    }
}

/// Nodes by pool id (lower-cased).
pub type Nodes = HashMap<String, Vec<Node>>;

/// The folder (under the emulator's root) with the emulator's `mpirun`.
const MPI_BIN: &str = "mpi-bin";

/// Writes the emulator's `mpirun` (and `mpiexec`), which multi-instance tasks find first on
/// their `PATH`: it starts the ranks as local processes, since every node is this machine.
pub fn install_mpirun(root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(MPI_BIN);
    std::fs::create_dir_all(&dir)?;
    for name in ["mpirun", "mpiexec"] {
        let path = dir.join(name);
        std::fs::write(&path, include_str!("mpirun.sh"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

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

/// A job's preparation task on one node.
#[derive(Debug, Default)]
pub struct Prep {
    /// Held while it runs: the job's tasks placed on the node wait for it.
    run: tokio::sync::Mutex<()>,
    /// Its `jobPreparationTaskExecutionInfo`, once it started.
    info: std::sync::Mutex<Option<Value>>,
    /// The pool of the node.
    pool: String,
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

    fn set_info(&self, info: Value) {
        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    }
}

/// Job preparation tasks by (node, job), lower-cased.
pub type Preps = HashMap<(String, String), Arc<Prep>>;

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

/// The stop switches of running tasks, by (job, task), lower-cased.
pub type Running = HashMap<(String, String), tokio::sync::oneshot::Sender<Stop>>;

/// Stops a running task; returns whether one was running.
pub fn stop_task(state: &AccountState, job: &str, task: &str, why: Stop) -> bool {
    let switch = state
        .running()
        .remove(&(job.to_lowercase(), task.to_lowercase()));
    switch.is_some_and(|s| s.send(why).is_ok())
}

/// Makes a pool have `count` nodes: adds new ones (which run `start_task` first, when the
/// pool has one), removes idle ones from the end.
pub fn resize_nodes(
    nodes: &mut Nodes,
    root: &std::path::Path,
    pool: &str,
    count: usize,
    start_task: Option<&Value>,
) {
    let list = nodes.entry(pool.to_lowercase()).or_default();
    while list.len() < count {
        let id = format!("tvmps_{}_{:03}", pool.to_lowercase(), list.len());
        let dir = root.join(pool).join(&id);
        list.push(Node::new(id, dir, start_task));
    }
    while list.len() > count && list.last().is_some_and(|n| n.slots_used == 0) {
        list.pop();
    }
}

/// Adds a fresh node to a pool after one was lost (the service replaces lost nodes).
pub fn replace_lost_node(
    nodes: &mut Nodes,
    root: &std::path::Path,
    pool: &str,
    start_task: Option<&Value>,
) {
    let list = nodes.entry(pool.to_lowercase()).or_default();
    let serial = list.len() + LOST_NODE_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("tvmps_{}_r{serial:03}", pool.to_lowercase());
    let dir = root.join(pool).join(&id);
    list.push(Node::new(id, dir, start_task));
}

static LOST_NODE_SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The JSON of a node, as `GET /pools/{pool}/nodes` returns it.
pub fn node_json(url: &str, pool: &str, node: &Node) -> Value {
    let mut body = json!({
        "id": node.id,
        "url": format!("{url}/pools/{pool}/nodes/{}", node.id),
        "state": node.state(),
        "schedulingState": "enabled",
        "runningTasksCount": node.slots_used,
        "runningTaskSlotsCount": node.slots_used,
        "isDedicated": true,
    });
    if let Some(info) = &node.start_info {
        body["startTaskInfo"] = info.clone();
    }
    body
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

/// A task placed on a node, ready to run.
struct Placement {
    job: String,
    task: String,
    pool: String,
    node: String,
    node_dir: PathBuf,
    command: String,
    /// The job's `commonEnvironmentSettings` (the job preparation task gets these too).
    job_env: Arc<Vec<(String, String)>>,
    /// The task's own environment (it overrides the job's).
    env: Vec<(String, String)>,
    wall_clock: Option<Duration>,
    slots: i64,
    resource_files: Vec<Value>,
    output_files: Vec<Value>,
    /// A multi-instance task (it gets the host list and the emulator's `mpirun`).
    multi_instance: bool,
    /// Multi-instance: files every instance downloads into its task folder.
    common_files: Vec<Value>,
    /// Multi-instance: the command every instance runs first.
    coordination: Option<String>,
    /// Multi-instance: the nodes of the instances other than the primary.
    others: Vec<(String, PathBuf)>,
    /// The job's preparation task, run once on each node before the job's first task there.
    job_prep: Option<Value>,
    /// Receives why the task is stopped from outside. Its switch is registered while the task
    /// is placed, so a node lost before the process starts still stops it.
    stop: tokio::sync::oneshot::Receiver<Stop>,
}

impl Placement {
    /// Every instance's node: the primary's first.
    fn instances(&self) -> Vec<(String, PathBuf)> {
        std::iter::once((self.node.clone(), self.node_dir.clone()))
            .chain(self.others.iter().cloned())
            .collect()
    }

    fn task_dir(&self, node_dir: &std::path::Path) -> PathBuf {
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
    env: Arc<Vec<(String, String)>>,
    /// `jobPreparationTask`.
    prep: Option<Value>,
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
                state
                    .running()
                    .insert((job.to_lowercase(), task_id.to_lowercase()), switch);
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

fn list(body: &serde_json::Map<String, Value>, name: &str) -> Vec<Value> {
    body.get(name)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Runs one placed task to its end and records the outcome.
async fn run(state: Arc<AccountState>, mut p: Placement) {
    let task_dir = p.task_dir(&p.node_dir);
    let wd = task_dir.join("wd");
    let key = (p.job.to_lowercase(), p.task.to_lowercase());
    let (_, unused) = tokio::sync::oneshot::channel();
    let stop = std::mem::replace(&mut p.stop, unused);
    let outcome = execute(&state, &p, &task_dir, &wd, stop).await;
    state.running().remove(&key);
    {
        let mut data = state.data();
        if let Some(nodes) = data.nodes.get_mut(&p.pool.to_lowercase()) {
            for (id, _) in p.instances() {
                if let Some(node) = nodes.iter_mut().find(|n| n.id == id) {
                    node.slots_used -= p.slots;
                }
            }
        }
        if let Some(task) = data
            .tasks
            .get_mut(&p.job.to_lowercase())
            .and_then(|t| t.get_mut(&p.task))
        {
            finish(task, outcome);
        }
        complete_job_if_done(&mut data, &p.job);
    }
    state.changed.notify_one();
}

/// Applies a job's `onAllTasksComplete: terminatejob` once every task completed.
fn complete_job_if_done(data: &mut super::server::Data, job: &str) {
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

/// How a run ended: the exit code, or why there is none.
enum RunEnd {
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

/// Runs the job preparation task on a node unless it already ran there (once per node and
/// job, as the service does; tasks of the job on that node wait for it), retried up to its
/// `maxTaskRetryCount`. Returns whether it succeeded; after a failure the node takes none of
/// the job's tasks. `jobPreparationTaskExecutionInfo` records how it went.
async fn prepare_job(
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
fn job_prep_dir(node_dir: &std::path::Path, job: &str) -> PathBuf {
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

/// `/bin/sh -c COMMAND` in an instance's working directory, with the `AZ_BATCH_*` environment
/// (and, for a multi-instance task, the host list and which instance is the master).
fn shell(
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

/// Multi-instance: runs the coordination command on every instance at once (the others write
/// their stdout/stderr in their own task folder, the primary into `coordination-*.txt`).
async fn coordinate(state: &AccountState, p: &Placement, coordination: &str) -> Result<(), RunEnd> {
    let mut runs = Vec::new();
    for (node, node_dir) in p.instances() {
        let task_dir = p.task_dir(&node_dir);
        std::fs::create_dir_all(task_dir.join("wd")).map_err(|e| {
            RunEnd::NotStarted(format!("cannot create {}: {e}", task_dir.display()))
        })?;
        let (out, err) = if node == p.node {
            ("coordination-stdout.txt", "coordination-stderr.txt")
        } else {
            ("stdout.txt", "stderr.txt")
        };
        let files = (
            std::fs::File::create(task_dir.join(out)),
            std::fs::File::create(task_dir.join(err)),
        );
        let (Ok(stdout), Ok(stderr)) = files else {
            return Err(RunEnd::NotStarted(
                "cannot create the coordination output files".into(),
            ));
        };
        let mut command = shell(state, p, coordination, (&node, &node_dir), &task_dir);
        command.stdout(stdout).stderr(stderr);
        runs.push(async move { command.status().await });
    }
    for status in futures::future::join_all(runs).await {
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => return Err(RunEnd::Exited(s.code().unwrap_or(-1))),
            Err(e) => {
                return Err(RunEnd::NotStarted(format!(
                    "cannot start the coordination command: {e}"
                )));
            }
        }
    }
    Ok(())
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
pub(super) async fn kill_group(child: &mut tokio::process::Child) {
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
    info["failureInfo"] = json!({"category": "UserError", "code": "TaskEnded", "message": message});
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
fn finish(task: &mut super::resources::Resource, end: RunEnd) {
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
            Some(json!({"category": "UserError", "code": "FailureExitCode",
                "message": "The task exited with an exit code representing a failure"})),
        ),
        RunEnd::TimedOut(limit) => (
            None,
            Some(
                json!({"category": "UserError", "code": "MaxWallClockTimeExceeded",
                "message": format!("The task ran longer than its maxWallClockTime of {limit:?}")}),
            ),
        ),
        RunEnd::NotStarted(why) => (
            None,
            Some(json!({"category": "ServerError", "code": "TaskStartFailed", "message": why})),
        ),
        RunEnd::Stopped(Stop::Terminate) => (
            None,
            Some(json!({"category": "UserError", "code": "TaskEnded",
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
            Some(json!({"category": "UserError", "code": "BlobDownloadMiscError", "message": why})),
        ),
        RunEnd::Upload(code, why) => (
            Some(*code),
            Some(json!({"category": "UserError", "code": "FileUploadMiscError", "message": why})),
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
