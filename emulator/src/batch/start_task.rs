//! A pool's start task: run on each node when it joins the pool (and on a replacement node),
//! under `/bin/sh -c` in the node's `startup` folder, with its resource files, environment and
//! retries. Until it succeeds a node takes no tasks (when `waitForSuccess`, the default); when
//! it fails for good the node is `starttaskfailed`, as on the service.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use super::node_task::NodeTask;
use super::nodes::Startup;
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
    let startup = launch.dir.join("startup");
    let task = NodeTask {
        state: &state,
        pool: &launch.pool,
        spec: &launch.spec,
        dir: &startup,
    };
    let info = task
        .run(
            json!({}),
            || {
                let mut command = task.shell(&launch.node, &launch.dir);
                command
                    .env("AZ_BATCH_NODE_STARTUP_DIR", &startup)
                    .env("AZ_BATCH_NODE_IS_DEDICATED", "true");
                command
            },
            |info| record(&state, &launch, None, info),
        )
        .await;
    let startup = if info["result"] == "success" {
        Startup::Ready
    } else {
        Startup::Failed
    };
    record(&state, &launch, Some(startup), info);
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
