//! What one Redwood task becomes on Batch: its task id, command line, resource file (the
//! program) and environment (the [`TaskSpec`] with its scoped SAS URLs).

use std::time::{Duration, SystemTime};

use redwood_core::raw::backend::JobSpec;
use redwood_core::storage::Access;
use redwood_core::{Result, Storage};
use serde_json::{Value, json};

use redwood_core::MpiShape;
use serde::Serialize;

use super::pack::{PackPolicy, PackSpec, PackTask, pack_id};
use super::worker::{JOB_ENV, MODE, TASK_ENV};

/// The part of a task's description every task of its job shares (the worker merges it with
/// the task's own part into a `TaskSpec`).
#[derive(Serialize)]
struct JobPart<'a> {
    job: &'a str,
    function: &'a str,
    signature: u64,
    binary: &'a str,
    container: &'a str,
    read_sas: &'a str,
    input: &'a str,
    timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mpi: Option<MpiShape>,
}

/// The part of a task's description that is its own.
#[derive(Serialize)]
struct TaskPart {
    task: u64,
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<String>,
    range: (u64, u64),
    result_url: String,
    /// Overrides the job's read SAS (which expires `sas_valid_for` after the job was made).
    #[serde(skip_serializing_if = "Option::is_none")]
    read_sas: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pack: Option<PackSpec>,
}

fn encode(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| {
        redwood_core::Error::new(
            redwood_core::ErrorKind::Unexpected,
            format!("cannot encode the task description: {e}"),
        )
    })
}

/// The longest timeout given to Batch as `maxWallClockTime` (180 days); a longer one is left to
/// the worker.
const MAX_WALL_CLOCK: Duration = Duration::from_secs(180 * 24 * 3600);

/// Time a task may take beyond its Redwood timeout before Batch ends it (download, start-up,
/// storing the outcome); the worker enforces the timeout itself.
const WALL_CLOCK_GRACE: Duration = Duration::from_secs(120);

/// Arguments up to this size travel in the task itself, saving the worker a read.
const INLINE_ARGS: usize = 4096;

/// The Batch task id of an attempt (1 is the first): `t<index>` first, then
/// `t<index>-r<retry>` (`-r1` is attempt 2).
pub(crate) fn task_id(index: u64, attempt: u32) -> String {
    match attempt {
        0 | 1 => format!("t{index}"),
        _ => format!("t{index}-r{}", attempt - 1),
    }
}

/// The task index and attempt of a Batch task id made by [`task_id`].
pub(crate) fn parse_task_id(id: &str) -> Option<(u64, u32)> {
    let rest = id.strip_prefix('t')?;
    match rest.split_once("-r") {
        None => Some((rest.parse().ok()?, 1)),
        Some((i, r)) => Some((i.parse().ok()?, r.parse::<u32>().ok()?.checked_add(1)?)),
    }
}

/// The tasks and attempt of any Batch task id this backend makes: one task ([`task_id`]) or a
/// pack ([`pack_id`](super::pack::pack_id)).
pub(crate) fn parse_batch_id(id: &str) -> Option<(std::ops::RangeInclusive<u64>, u32)> {
    super::pack::parse_pack_id(id).or_else(|| parse_task_id(id).map(|(i, a)| (i..=i, a)))
}

/// The file name program `program` (its sha256) gets on a node.
fn program_file_name(program: &str) -> String {
    format!("redwood-{}", &program[..12.min(program.len())])
}

/// The command line of a task running program `program` on a node. Batch does not start
/// Linux command lines in a shell; this one needs $VARS. The program is where the job
/// preparation task put it.
pub(crate) fn program_command_line(program: &str) -> String {
    let file = program_file_name(program);
    format!("/bin/sh -c 'exec \"$AZ_BATCH_JOB_PREP_WORKING_DIR/{file}\"'")
}

/// Program `program`, downloaded from `binary_url`, as a job preparation task's resource file.
pub(crate) fn program_file(binary_url: &str, program: &str) -> Value {
    json!({ "httpUrl": binary_url, "filePath": program_file_name(program), "fileMode": "0755" })
}

/// One task of a pack about to be added.
pub(crate) struct Member<'a> {
    pub task: u64,
    pub range: (u64, u64),
    pub args: Option<&'a [u8]>,
}

/// What every task of a job shares: the program's URL and the read SAS.
#[derive(Debug, Clone)]
pub(crate) struct JobTemplate {
    /// The Batch pool the job runs on.
    pub pool: String,
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
    /// When the URLs in the job's own environment expire (see [`sas_expiry`]).
    pub urls_expire: Option<SystemTime>,
    /// The storage home's tag, on the Batch job for `redwood cleanup` (see
    /// [`Storage::home_tag`]).
    pub home: String,
    /// How the job's tasks are packed.
    pub pack: PackPolicy,
    /// The pool's task slots, when known (automatic pack sizes).
    pub slots: Option<u64>,
    /// What the function's tasks took lately (automatic pack sizes).
    pub times: std::sync::Arc<crate::task_times::TaskTimes>,
}

impl JobTemplate {
    /// A task added now gets its own read SAS when the job's has less than half its validity
    /// left, so that retries and late tasks of a long job can still read.
    fn own_read_sas(&self, storage: &Storage) -> Result<Option<String>> {
        let stale = self
            .urls_expire
            .is_some_and(|at| at < SystemTime::now() + self.sas_valid_for / 2);
        if !stale {
            return Ok(None);
        }
        let url = storage.signed_url(None, Access::READ, self.sas_valid_for)?;
        Ok(url.split_once('?').map(|(_, query)| query.to_string()))
    }

    fn command_line(&self) -> String {
        program_command_line(&self.program)
    }

    /// What the add-job body adds for the tasks: the common environment (worker mode and the
    /// part of the task description every task shares, sent once instead of 10,000 times) and
    /// a job preparation task that downloads the program once per node.
    pub(crate) fn job_settings(&self) -> Result<(Value, Value)> {
        let options = &self.spec.options;
        let shared = JobPart {
            job: &self.spec.id,
            function: &self.spec.function,
            signature: self.spec.signature,
            binary: &self.binary,
            container: &self.container,
            read_sas: &self.read_sas,
            input: &self.input,
            timeout_ms: options
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            mpi: options.mpi,
        };
        let environment = json!([
            { "name": redwood_core::raw::worker::WORKER_ENV, "value": MODE },
            { "name": JOB_ENV, "value": encode(&shared)? },
        ]);
        let preparation = json!({
            "id": "redwood-program",
            "commandLine": "/bin/true",
            "resourceFiles": [program_file(&self.binary_url, &self.program)],
            "waitForSuccess": true,
            "constraints": { "maxTaskRetryCount": self.infra_retries },
        });
        Ok((environment, preparation))
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
        let result_key = layout.attempt_result(&self.spec.id, index, attempt);
        let result_url =
            storage.signed_url(Some(&result_key), Access::WRITE, self.sas_valid_for)?;
        let options = &self.spec.options;
        // The task's own part of its description; the job's common environment has the rest.
        let own = TaskPart {
            task: index,
            attempt,
            args: inline_args(args),
            range,
            result_url,
            read_sas: self.own_read_sas(storage)?,
            pack: None,
        };
        let spec_json = encode(&own)?;
        let file = program_file_name(&self.program);
        // An MPI task's launcher exits non-zero when any rank fails: Batch must not rerun it,
        // Redwood's own retries (TaskOptions::retries) decide.
        let batch_retries = if options.mpi.is_some() {
            0
        } else {
            self.infra_retries
        };
        let mut constraints = json!({ "maxTaskRetryCount": batch_retries });
        // Past Batch's own range a timeout means "none": the worker still enforces it.
        if let Some(t) = options.timeout.filter(|t| *t <= MAX_WALL_CLOCK) {
            let limit = t.saturating_add(WALL_CLOCK_GRACE);
            constraints["maxWallClockTime"] = json!(format!("PT{}S", limit.as_secs().max(1)));
        }
        let mut body = json!({
            "id": task_id(index, attempt),
            "commandLine": self.command_line(),
            "environmentSettings": [{ "name": TASK_ENV, "value": spec_json }],
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
            body["multiInstanceSettings"] = json!({
                "numberOfInstances": shape.nodes,
                "coordinationCommandLine": "/bin/true",
                "commonResourceFiles": [program_file(&self.binary_url, &self.program)],
            });
        }
        Ok(body)
    }
}

impl JobTemplate {
    /// The packing of this job: none for MPI tasks, else the job's `TaskOptions::pack`, else
    /// the region's.
    pub(crate) fn pack_policy(&self) -> PackPolicy {
        let options = &self.spec.options;
        if options.mpi.is_some() {
            return PackPolicy::Fixed(1);
        }
        match options.pack {
            Some(n) => PackPolicy::Fixed(usize::try_from(n).unwrap_or(1)),
            None => self.pack,
        }
    }

    /// The key of a pack's report.
    pub(crate) fn report_key(&self, storage: &Storage, id: &str) -> object_store::path::Path {
        storage.layout().group(&self.spec.id, &format!("{id}.pack"))
    }

    /// The add-task body of a pack of `members` (consecutive tasks) at `attempt`; `seq` tells
    /// apart packs of released tasks (0 for a first launch).
    pub(crate) fn pack_body(
        &self,
        storage: &Storage,
        members: &[Member<'_>],
        attempt: u32,
        seq: u32,
        budget: Option<Duration>,
    ) -> Result<Value> {
        let (Some(first), Some(last)) = (members.first(), members.last()) else {
            return Err(redwood_core::Error::new(
                redwood_core::ErrorKind::Unexpected,
                "an empty pack",
            ));
        };
        let id = pack_id(first.task, last.task, attempt, seq);
        let layout = storage.layout();
        let mut tasks = Vec::with_capacity(members.len());
        for m in members {
            let key = layout.attempt_result(&self.spec.id, m.task, attempt);
            tasks.push(PackTask {
                task: m.task,
                range: m.range,
                args: inline_args(m.args),
                result_url: storage.signed_url(Some(&key), Access::WRITE, self.sas_valid_for)?,
            });
        }
        let report = self.report_key(storage, &id);
        let pack = PackSpec {
            tasks,
            report_url: storage.signed_url(Some(&report), Access::WRITE, self.sas_valid_for)?,
            budget_ms: budget.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX)),
        };
        let own = TaskPart {
            task: first.task,
            attempt,
            args: None,
            range: first.range,
            result_url: String::new(),
            read_sas: self.own_read_sas(storage)?,
            pack: Some(pack),
        };
        let mut constraints = json!({ "maxTaskRetryCount": self.infra_retries });
        // Each task's timeout is the worker's; Batch ends a pack that runs far past them all.
        if let Some(t) = self.spec.options.timeout {
            let n = u32::try_from(members.len()).unwrap_or(u32::MAX);
            let limit = t
                .saturating_add(Duration::from_secs(5))
                .saturating_mul(n)
                .saturating_add(WALL_CLOCK_GRACE);
            if limit <= MAX_WALL_CLOCK {
                constraints["maxWallClockTime"] = json!(format!("PT{}S", limit.as_secs().max(1)));
            }
        }
        Ok(json!({
            "id": id,
            "commandLine": self.command_line(),
            "environmentSettings": [{ "name": TASK_ENV, "value": encode(&own)? }],
            "constraints": constraints,
        }))
    }
}

/// A task's arguments for its description, base64, when they are small enough to go inline.
fn inline_args(args: Option<&[u8]>) -> Option<String> {
    use base64::Engine;
    args.filter(|a| a.len() <= INLINE_ARGS)
        .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
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

/// The expiry (`se=`) of a SAS URL. The URLs in a job's environment were minted with its
/// program download URL, so that one's expiry is theirs.
pub(crate) fn sas_expiry(url: &str) -> Option<SystemTime> {
    let query = url.split_once('?')?.1;
    let value = query.split('&').find_map(|pair| pair.strip_prefix("se="))?;
    let value = value.replace("%3A", ":").replace("%3a", ":");
    humantime::parse_rfc3339_weak(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_expiry_is_read_from_the_url() {
        let at =
            sas_expiry("http://h/c/b?sv=2022-11-02&sr=b&sp=r&se=2026-11-24T19%3A03%3A20Z&sig=x");
        assert_eq!(at, humantime::parse_rfc3339("2026-11-24T19:03:20Z").ok());
        assert_eq!(sas_expiry("http://h/c/b?sv=1&sig=x"), None);
        assert_eq!(sas_expiry("http://h/c/b"), None);
    }

    #[test]
    fn task_ids_round_trip() {
        assert_eq!(task_id(7, 1), "t7");
        assert_eq!(task_id(7, 3), "t7-r2");
        assert_eq!(parse_task_id("t7"), Some((7, 1)));
        assert_eq!(parse_task_id("t7-r2"), Some((7, 3)));
        assert_eq!(parse_task_id("t7-r4294967295"), None);
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
