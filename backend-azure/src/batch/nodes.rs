//! Which nodes of a pool can run a job's tasks. A node whose start task failed
//! (`starttaskfailed`), that Batch marked `unusable`, or on which the job's preparation task
//! failed runs none of the job's tasks; when that is every node, Batch keeps the tasks waiting
//! for ever, so the monitor looks after a while without progress and says why.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use redwood_core::Result;
use serde_json::Value;

use super::client::BatchClient;

/// How long no task may finish before the nodes are looked at (and how often they are looked
/// at then).
const CHECK_AFTER: Duration = Duration::from_secs(10);

/// When to look at the nodes: after a while without progress; which nodes were warned about.
pub(crate) struct NodeWatch {
    last_progress: Instant,
    last_check: Option<Instant>,
    /// Nodes already warned about.
    pub warned: HashSet<String>,
}

impl NodeWatch {
    pub fn new() -> Self {
        NodeWatch {
            last_progress: Instant::now(),
            last_check: None,
            warned: HashSet::new(),
        }
    }

    /// A task finished.
    pub fn progress(&mut self) {
        self.last_progress = Instant::now();
    }

    /// The nodes were just looked at.
    pub fn checked(&mut self) {
        self.last_check = Some(Instant::now());
    }

    /// Whether nothing finished for a while and the last look is as long ago.
    pub fn due(&self) -> bool {
        self.last_progress.elapsed() >= CHECK_AFTER
            && self.last_check.is_none_or(|t| t.elapsed() >= CHECK_AFTER)
    }
}

/// Why a node cannot run the job's tasks.
pub(crate) enum Unusable {
    /// The pool's start task failed there (why).
    StartTask(String),
    /// The job preparation task failed there (why).
    Preparation(String),
    /// Batch marked the node unusable.
    Node,
}

impl Unusable {
    /// The reason, with what to do about it.
    pub fn text(&self) -> String {
        match self {
            Unusable::StartTask(why) => format!(
                "the pool's start task failed ({why}); fix `start_task` (a pool that exists \
                 keeps its own: delete it to have it made anew)"
            ),
            Unusable::Preparation(why) => format!(
                "the job preparation task, which puts the program on the node, failed ({why}); \
                 check that the nodes may read the storage account (its firewall, the SAS)"
            ),
            Unusable::Node => "Batch marked the node unusable".to_string(),
        }
    }
}

/// The pool's nodes as seen once: how many, and which cannot run the job's tasks.
pub(crate) struct NodeSurvey {
    pool: String,
    /// Every node's id.
    nodes: Vec<String>,
    /// The nodes that cannot run the job's tasks, and why.
    pub unusable: BTreeMap<String, Unusable>,
}

impl NodeSurvey {
    /// Lists the pool's nodes and the job preparation task's state on each (two requests).
    pub async fn take(client: &BatchClient, pool: &str, job: &str) -> Result<NodeSurvey> {
        let listed = client
            .list(
                "list_nodes",
                &format!("/pools/{pool}/nodes"),
                &[("$select", "id,state,startTaskInfo")],
            )
            .await?;
        let preparation = client
            .list(
                "list_preparation_status",
                &format!("/jobs/{job}/jobpreparationandreleasetaskstatus"),
                &[],
            )
            .await
            .unwrap_or_default();
        let mut unusable = BTreeMap::new();
        let mut nodes = Vec::with_capacity(listed.len());
        for node in &listed {
            let id = node["id"].as_str().unwrap_or_default().to_string();
            match node["state"].as_str() {
                Some("starttaskfailed") => {
                    let why = task_failure(&node["startTaskInfo"]);
                    unusable.insert(id.clone(), Unusable::StartTask(why));
                }
                Some("unusable") => {
                    unusable.insert(id.clone(), Unusable::Node);
                }
                _ => {}
            }
            nodes.push(id);
        }
        for item in &preparation {
            let info = &item["jobPreparationTaskExecutionInfo"];
            let id = item["nodeId"].as_str().unwrap_or_default().to_string();
            if info["result"].as_str() == Some("failure") && !unusable.contains_key(&id) {
                unusable.insert(id, Unusable::Preparation(task_failure(info)));
            }
        }
        Ok(NodeSurvey {
            pool: pool.to_string(),
            nodes,
            unusable,
        })
    }

    /// When no node can run the job's tasks: why, for the first such node (with the end of
    /// its start task's stderr when that failed).
    pub async fn none_usable(mut self, client: &BatchClient) -> Option<String> {
        let all =
            !self.nodes.is_empty() && self.nodes.iter().all(|id| self.unusable.contains_key(id));
        let node = self.unusable.keys().next().filter(|_| all)?.clone();
        let pool = &self.pool;
        if let Some(Unusable::StartTask(why)) = self.unusable.get_mut(&node)
            && let Some(tail) = client
                .file_tail(
                    "get_node_file",
                    &format!("/pools/{pool}/nodes/{node}/files/startup/stderr.txt"),
                    10,
                )
                .await
        {
            why.push_str(&format!("; its stderr ends: {tail}"));
        }
        let why = self.unusable.get(&node).map(Unusable::text)?;
        Some(format!(
            "no node of pool `{pool}` can run this job's tasks ({} node(s)), so Batch would keep \
             them waiting; on node `{node}`, {why}",
            self.nodes.len()
        ))
    }
}

/// Why a start or job preparation task failed, from its execution information (SAS
/// signatures removed).
fn task_failure(info: &Value) -> String {
    let failure = &info["failureInfo"];
    let mut why = match (failure["code"].as_str(), info["exitCode"].as_i64()) {
        (Some("FailureExitCode"), Some(code)) => format!("it exited with code {code}"),
        (Some(code), _) => format!("{code}: {}", failure["message"].as_str().unwrap_or("")),
        (None, Some(code)) => format!("it exited with code {code}"),
        (None, None) => "it failed".to_string(),
    };
    for detail in failure["details"].as_array().into_iter().flatten() {
        if let Some(value) = detail["value"].as_str() {
            why.push_str(&format!("; {value}"));
        }
    }
    without_signatures(&why)
}

/// `text` with the value of every `sig=` (a SAS signature) replaced by `REDACTED`.
fn without_signatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sig=") {
        out.push_str(&rest[..at + 4]);
        out.push_str("REDACTED");
        rest = &rest[at + 4..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "%+/=-_".contains(c)))
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_redacted() {
        assert_eq!(
            without_signatures("GET http://h/c/b?sv=1&sig=abc%2Bd&se=2: 403"),
            "GET http://h/c/b?sv=1&sig=REDACTED&se=2: 403"
        );
        assert_eq!(
            without_signatures("a sig=x b sig=y"),
            "a sig=REDACTED b sig=REDACTED"
        );
        assert_eq!(without_signatures("no signature"), "no signature");
    }

    #[test]
    fn preparation_failures_say_why() {
        let download = serde_json::json!({
            "result": "failure",
            "failureInfo": {
                "code": "BlobDownloadMiscError",
                "message": "Miscellaneous error",
                "details": [{ "name": "Message", "value": "GET http://h/b?sig=s3cret: 403" }],
            },
        });
        let text = task_failure(&download);
        assert_eq!(
            text,
            "BlobDownloadMiscError: Miscellaneous error; GET http://h/b?sig=REDACTED: 403"
        );
        let exit = serde_json::json!({
            "result": "failure", "exitCode": 2,
            "failureInfo": { "code": "FailureExitCode", "message": "exit code" },
        });
        assert_eq!(task_failure(&exit), "it exited with code 2");
    }
}
