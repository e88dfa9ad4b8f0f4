//! What one Redwood task becomes on Batch: its task id, command line, resource file (the
//! program) and environment (the [`TaskSpec`] with its scoped SAS URLs).

use std::time::Duration;

use redwood_core::raw::backend::JobSpec;
use redwood_core::{Result, Storage};
use serde_json::{Value, json};

use super::worker::{MODE, TASK_ENV, TaskSpec};

/// Time a task may take beyond its Redwood timeout before Batch ends it (download, start-up,
/// storing the outcome); the worker enforces the timeout itself.
const WALL_CLOCK_GRACE: Duration = Duration::from_secs(120);

/// Arguments up to this size travel in the task itself, saving the worker a read.
const INLINE_ARGS: usize = 4096;

/// The Batch task id of an attempt: `t<index>` first, then `t<index>-r<attempt>`.
pub(crate) fn task_id(index: u64, attempt: u32) -> String {
    if attempt == 0 {
        format!("t{index}")
    } else {
        format!("t{index}-r{attempt}")
    }
}

/// The task index and attempt of a Batch task id made by [`task_id`].
pub(crate) fn parse_task_id(id: &str) -> Option<(u64, u32)> {
    let rest = id.strip_prefix('t')?;
    match rest.split_once("-r") {
        None => Some((rest.parse().ok()?, 0)),
        Some((i, a)) => Some((i.parse().ok()?, a.parse().ok()?)),
    }
}

/// What every task of a job shares: the program's URL and the read SAS.
#[derive(Debug, Clone)]
pub(crate) struct JobTemplate {
    /// The job.
    pub spec: std::sync::Arc<JobSpec>,
    /// The sha256 of the binary the worker must be (what the caller expects).
    pub binary: String,
    /// The sha256 of the executable uploaded for the nodes.
    pub program: String,
    /// A read-only SAS URL of the executable.
    pub binary_url: String,
    /// The container URL, without a query.
    pub container: String,
    /// A read-only SAS on the container (query string).
    pub read_sas: String,
    /// The key of the packed inputs the ranges point into.
    pub input: String,
    /// Batch-level retries of a worker that could not store its outcome.
    pub infra_retries: u32,
    /// How long SAS URLs stay valid.
    pub sas_valid_for: Duration,
    /// The command line prefix that starts an MPI task's ranks (`{np}`, `{ppn}` filled in).
    pub mpi_launcher: String,
}

impl JobTemplate {
    /// The file name the program gets on the node.
    fn file_name(&self) -> String {
        format!("redwood-{}", &self.program[..12.min(self.program.len())])
    }

    /// The add-task body of one attempt of task `index`, whose arguments are at `range`.
    pub(crate) fn task_body(
        &self,
        storage: &Storage,
        index: u64,
        attempt: u32,
        range: (u64, u64),
        args: Option<&[u8]>,
    ) -> Result<Value> {
        let layout = storage.layout();
        let result_key = layout.task_result(&self.spec.id, index);
        let result_url = storage.sas_url(Some(&result_key), "w", self.sas_valid_for)?;
        let options = &self.spec.options;
        let spec = TaskSpec {
            job: self.spec.id.clone(),
            task: index,
            attempt,
            function: self.spec.function.clone(),
            signature: self.spec.signature,
            binary: self.binary.clone(),
            container: self.container.clone(),
            read_sas: self.read_sas.clone(),
            args: args.filter(|a| a.len() <= INLINE_ARGS).map(|a| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(a)
            }),
            input: self.input.clone(),
            range,
            result_url,
            timeout_ms: options.timeout.map(|t| t.as_millis() as u64),
            mpi: options.mpi,
        };
        let spec_json = serde_json::to_string(&spec).map_err(|e| {
            redwood_core::Error::new(
                redwood_core::ErrorKind::Unexpected,
                format!("cannot encode the task description: {e}"),
            )
        })?;
        let file = self.file_name();
        // An MPI task's launcher exits non-zero when any rank fails: Batch must not rerun it,
        // Redwood's own retries (TaskOptions::retries) decide.
        let batch_retries = if options.mpi.is_some() {
            0
        } else {
            self.infra_retries
        };
        let mut constraints = json!({ "maxTaskRetryCount": batch_retries });
        if let Some(t) = options.timeout {
            let limit = t + WALL_CLOCK_GRACE;
            constraints["maxWallClockTime"] = json!(format!("PT{}S", limit.as_secs().max(1)));
        }
        let program = json!({ "httpUrl": self.binary_url, "filePath": file, "fileMode": "0755" });
        let mut body = json!({
            "id": task_id(index, attempt),
            // Batch does not start Linux command lines in a shell; this one needs $VARS.
            "commandLine": format!("/bin/sh -c 'exec \"$AZ_BATCH_TASK_WORKING_DIR/{file}\"'"),
            "resourceFiles": [program],
            "environmentSettings": [
                { "name": redwood_core::raw::worker::WORKER_ENV, "value": MODE },
                { "name": TASK_ENV, "value": spec_json },
            ],
            "constraints": constraints,
        });
        if let Some(shape) = options.mpi {
            // A multi-instance task: every node gets the program in its task folder (the same
            // path everywhere, $AZ_BATCH_TASK_SHARED_DIR); the primary starts the ranks.
            let launcher = self
                .mpi_launcher
                .replace("{np}", &shape.ranks().to_string())
                .replace("{ppn}", &shape.procs_per_node.to_string());
            let command = format!("{launcher} \"$AZ_BATCH_TASK_SHARED_DIR/{file}\"");
            body["commandLine"] = json!(format!("/bin/sh -c '{}'", command.replace('\'', "'\\''")));
            body["resourceFiles"] = json!([]);
            body["multiInstanceSettings"] = json!({
                "numberOfInstances": shape.nodes,
                "coordinationCommandLine": "/bin/true",
                "commonResourceFiles": [program],
            });
        }
        Ok(body)
    }
}

/// Splits task bodies into `addtaskcollection` requests: at most 100 tasks and under 1 MB each.
pub(crate) fn chunks(bodies: Vec<Value>) -> Vec<Vec<Value>> {
    const MAX_TASKS: usize = 100;
    const MAX_BYTES: usize = 900 * 1024;
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for body in bodies {
        let size = body.to_string().len();
        if !current.is_empty() && (current.len() == MAX_TASKS || bytes + size > MAX_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(body);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip() {
        assert_eq!(task_id(7, 0), "t7");
        assert_eq!(task_id(7, 2), "t7-r2");
        assert_eq!(parse_task_id("t7"), Some((7, 0)));
        assert_eq!(parse_task_id("t7-r2"), Some((7, 2)));
        assert_eq!(parse_task_id("x7"), None);
    }

    #[test]
    fn chunks_hold_at_most_100_tasks_and_1_mb() {
        let small: Vec<Value> = (0..250).map(|i| json!({ "id": i })).collect();
        let sizes: Vec<usize> = chunks(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let big: Vec<Value> = (0..5)
            .map(|_| json!({ "x": "a".repeat(400 * 1024) }))
            .collect();
        let sizes: Vec<usize> = chunks(big).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }
}
