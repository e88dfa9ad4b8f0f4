//! Emulated compute nodes: folders on this machine, how many of a pool's task slots are in use,
//! where each stands with its pool's start task; growing and shrinking a pool, replacing a lost
//! node, and a node as the REST API shows it.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Value, json};

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
    /// Its private IP address, as the service reports one (made up, unique in the pool).
    pub ip: String,
    /// When it joined the pool.
    pub allocated: String,
    /// Removed from its pool (`removenodes`), waiting for its tasks to finish first.
    pub leaving: bool,
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
    fn new(id: String, dir: PathBuf, serial: usize, start_task: Option<&Value>) -> Node {
        let _ = std::fs::create_dir_all(dir.join("shared"));
        Node {
            id,
            slots_used: 0,
            dir,
            ip: format!("10.0.{}.{}", (serial / 250) % 256, serial % 250 + 4),
            allocated: super::resources::now_string(),
            leaving: false,
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
        !self.leaving && (self.startup == Startup::Ready || !self.wait_for_start)
    }

    /// Its `state`, as the service reports it.
    pub fn state(&self) -> &'static str {
        if self.leaving {
            return "leavingpool";
        }
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
        let serial = NODE_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("tvmps_{}_{serial:03}", pool.to_lowercase());
        let dir = root.join(pool).join(&id);
        list.push(Node::new(id, dir, serial, start_task));
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
    let serial = NODE_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("tvmps_{}_r{serial:03}", pool.to_lowercase());
    let dir = root.join(pool).join(&id);
    list.push(Node::new(id, dir, serial, start_task));
}

/// Makes node ids (and addresses) unique across a pool's life, as a removed node's id is never
/// given to a new one.
static NODE_SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The JSON of a node, as `GET /pools/{pool}/nodes` returns it.
pub fn node_json(url: &str, pool: &str, vm_size: &str, node: &Node) -> Value {
    let mut body = json!({
        "id": node.id,
        "url": format!("{url}/pools/{pool}/nodes/{}", node.id),
        "state": node.state(),
        "schedulingState": "enabled",
        "stateTransitionTime": node.allocated,
        "allocationTime": node.allocated,
        "lastBootTime": node.allocated,
        "affinityId": node.id,
        "vmSize": vm_size,
        "ipAddress": node.ip,
        "runningTasksCount": node.slots_used,
        "runningTaskSlotsCount": node.slots_used,
        "isDedicated": true,
        "nodeAgentInfo": {"version": "1.12.5", "lastUpdateTime": node.allocated},
    });
    if let Some(info) = &node.start_info {
        body["startTaskInfo"] = info.clone();
    }
    body
}
