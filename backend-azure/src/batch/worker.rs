//! Worker mode on a Batch node: the program, started by a Batch task with `REDWOOD_WORKER=batch`
//! and the task's description in `REDWOOD_BATCH_TASK`, reads its arguments through a read-only
//! SAS, runs the function (with its timeout), writes the outcome through a write-only SAS on
//! exactly its result key, and exits. It never sees an account key.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redwood_core::raw::envelope::{Outcome, TaskEnvelope};
use redwood_core::raw::worker::{self, WorkerIo};

use crate::sas_io::SasBlobs;
use redwood_core::{Error, ErrorKind, MpiShape, MpiWorld, Result, TaskError, TaskErrorKind};
use serde::Deserialize;

/// The value of `REDWOOD_WORKER` for a Batch task.
pub const MODE: &str = "batch";
/// The environment variable carrying the task's own part of the [`TaskSpec`] as JSON.
pub const TASK_ENV: &str = "REDWOOD_BATCH_TASK";
/// The environment variable (the job's common environment) carrying the part of the
/// [`TaskSpec`] every task of the job shares, as a JSON object; `REDWOOD_BATCH_TASK` completes it.
pub const JOB_ENV: &str = "REDWOOD_BATCH_JOB";

/// Exit code: the task description is missing or malformed.
pub const EXIT_BAD_SPEC: i32 = 2;
/// Exit code: the outcome could not be stored (Batch retries the task up to its
/// `maxTaskRetryCount`).
pub const EXIT_NOT_STORED: i32 = 3;
/// Exit code of an MPI rank other than 0 whose function failed (the error is on stderr).
pub const EXIT_RANK_FAILED: i32 = 4;

/// What a Batch task tells its worker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskSpec {
    /// The job id.
    pub job: String,
    /// The task's index in its job.
    pub task: u64,
    /// Which attempt this is (1 is the first).
    pub attempt: u32,
    /// The remote function's id.
    pub function: String,
    /// The function's signature hash.
    pub signature: u64,
    /// The sha256 of the executable the task must run.
    pub binary: String,
    /// The container URL (no query).
    pub container: String,
    /// A read-only SAS (query string) on the container: inputs, broadcasts, other results.
    pub read_sas: String,
    /// Small arguments, inline (base64): no read needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// The key of the job's packed inputs.
    pub input: String,
    /// This task's byte range in it.
    pub range: (u64, u64),
    /// A write-only SAS URL on exactly this task's result key.
    pub result_url: String,
    /// The per-attempt timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// An MPI task: every rank runs the function, rank 0 stores the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mpi: Option<MpiShape>,
    /// A pack: these tasks (at `attempt`) run one after another in one warm worker, each
    /// storing its own outcome (`task`, `range`, `args` and `result_url` are unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<super::pack::PackSpec>,
}

inventory::submit! {
    redwood_core::raw::worker::WorkerMode { name: MODE, also_when: &[], serve }
}

/// Runs the task this process was started for, then exits.
pub fn serve() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err((code, e)) => {
            eprintln!("redwood batch worker: {e}");
            code
        }
    };
    std::process::exit(code)
}

/// The task description: the job's shared part (`REDWOOD_BATCH_JOB`, if set) completed by the
/// task's own (`REDWOOD_BATCH_TASK`).
fn read_spec(
    job: Option<String>,
    task: Option<String>,
) -> std::result::Result<TaskSpec, (i32, Error)> {
    let bad = |why: String| (EXIT_BAD_SPEC, Error::new(ErrorKind::Config, why));
    let object = |name: &str, text: &str| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
            .map_err(|e| bad(format!("{name} is not a JSON object: {e}")))
    };
    let task = task.ok_or_else(|| bad(format!("{TASK_ENV} is not set")))?;
    let mut merged = match &job {
        Some(text) => object(JOB_ENV, text)?,
        None => serde_json::Map::new(),
    };
    merged.extend(object(TASK_ENV, &task)?);
    serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|e| bad(format!("{JOB_ENV} and {TASK_ENV} do not make a task: {e}")))
}

fn run() -> std::result::Result<(), (i32, Error)> {
    let spec = read_spec(std::env::var(JOB_ENV).ok(), std::env::var(TASK_ENV).ok())?;
    if let Some(pack) = &spec.pack {
        return super::pack_worker::run(&spec, pack).map_err(|e| (EXIT_NOT_STORED, e));
    }
    let plain_http =
        spec.container.starts_with("http://") && spec.result_url.starts_with("http://");
    let io =
        Arc::new(BlobIo::new(&spec.container, &spec.read_sas, plain_http).map_err(|e| (1, e))?);
    let world = match spec.mpi {
        None => None,
        Some(shape) => {
            let hosts = std::env::var("AZ_BATCH_HOST_LIST").unwrap_or_default();
            match MpiWorld::from_env(|n| std::env::var(n).ok(), &hosts, shape) {
                Some(w) => {
                    worker::install_mpi_world(w.clone());
                    Some(w)
                }
                // Stored as the task's error: no launcher said which rank this is.
                None => return store(&io, &spec, launcher_missing(&spec)),
            }
        }
    };
    worker::install_worker_io(Box::new(SharedIo(io.clone())));
    worker::install_panic_hook();
    let args = match &spec.args {
        Some(inline) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(inline)
                .map(Bytes::from)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Codec,
                        format!("the inline arguments are not base64: {e}"),
                    )
                })
        }
        None => io.fetch(&spec.input, Some(spec.range.0..spec.range.1)),
    };
    let outcome = match args {
        Ok(args) => run_task(&spec, args.to_vec()),
        Err(e) => failed(
            &spec,
            TaskErrorKind::Lost,
            format!("cannot read the task's arguments: {e}"),
        ),
    };
    if let Some(w) = world.filter(|w| !w.is_root()) {
        // Only rank 0 stores; another rank's failure fails the launcher, hence the task.
        return match outcome {
            Outcome::Ok(_) => Ok(()),
            Outcome::Err(e) => Err((
                EXIT_RANK_FAILED,
                Error::new(ErrorKind::Backend, format!("MPI rank {}: {e}", w.rank)),
            )),
        };
    }
    store(&io, &spec, outcome)
}

fn store(io: &BlobIo, spec: &TaskSpec, outcome: Outcome) -> std::result::Result<(), (i32, Error)> {
    // Stored as a pack of one entry: the job's one result layout (`results/`), whoever
    // writes it.
    let bytes = outcome.to_stored().map_err(|e| (EXIT_NOT_STORED, e))?;
    let mut pack = redwood_core::raw::pack::PackWriter::new();
    pack.push(spec.task, &bytes);
    io.put(&spec.result_url, Bytes::from(pack.finish()))
        .map_err(|e| (EXIT_NOT_STORED, e))
}

/// The error of an MPI task started without a launcher's rank variables (every process of it
/// stores the same one).
fn launcher_missing(spec: &TaskSpec) -> Outcome {
    failed(
        spec,
        TaskErrorKind::Refused,
        "this MPI task was started without an MPI launcher: none of PMI_RANK, \
         OMPI_COMM_WORLD_RANK, PMIX_RANK is set (check the pool's `mpi_launcher`)"
            .to_string(),
    )
}

fn failed(spec: &TaskSpec, kind: TaskErrorKind, message: String) -> Outcome {
    let mut e = TaskError::new(kind, message);
    e.function = spec.function.clone();
    e.job = spec.job.clone();
    e.task = spec.task;
    e.attempt = spec.attempt;
    Outcome::Err(e)
}

/// Runs the function on its own thread, so a timeout can end the task while it still runs.
fn run_task(spec: &TaskSpec, args: Vec<u8>) -> Outcome {
    let own = match own_binary_hash() {
        Ok(h) => h,
        Err(e) => return failed(spec, TaskErrorKind::Refused, e.to_string()),
    };
    let envelope = TaskEnvelope {
        job: spec.job.clone(),
        task: spec.task,
        attempt: spec.attempt,
        function: spec.function.clone(),
        signature: spec.signature,
        binary: spec.binary.clone(),
        args,
    };
    crate::task_thread::run(envelope, &own, spec.timeout_ms.map(Duration::from_millis))
}

/// The sha256 of this executable. Tasks on one node often run the same copy of it, so the
/// hash is kept in the node's shared folder under the file's device, inode, size and time:
/// a copy is hashed once, not once per task.
pub(crate) fn own_binary_hash() -> Result<String> {
    use redwood_core::raw::binary::{assume_current_hash, current_binary_hash, file_id};
    if let (Ok(exe), Some(shared)) = (
        std::env::current_exe(),
        std::env::var_os("AZ_BATCH_NODE_SHARED_DIR"),
    ) && let Some(id) = file_id(&exe)
    {
        let dir = std::path::Path::new(&shared).join("redwood-hashes");
        if let Ok(known) = std::fs::read_to_string(dir.join(&id))
            && known.len() == 64
        {
            // The workers it starts are handed it too.
            assume_current_hash(known.clone());
            return Ok(known);
        }
        let hash = current_binary_hash()?.to_string();
        let tmp = dir.join(format!("{id}.{}", std::process::id()));
        if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&tmp, &hash).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(&id));
        }
        return Ok(hash);
    }
    Ok(current_binary_hash()?.to_string())
}

/// Blob reads and writes through SAS URLs, on a small runtime of its own.
struct BlobIo {
    blobs: SasBlobs,
    runtime: tokio::runtime::Runtime,
}

struct SharedIo(Arc<BlobIo>);

impl WorkerIo for SharedIo {
    fn fetch(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        self.0.fetch(key, range)
    }
}

impl BlobIo {
    fn new(container: &str, read_sas: &str, plain_http: bool) -> Result<BlobIo> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Backend, format!("cannot start a runtime: {e}")))?;
        Ok(BlobIo {
            blobs: SasBlobs::new(container, read_sas, plain_http)?,
            runtime,
        })
    }

    fn fetch(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        self.runtime.block_on(self.blobs.fetch(key, range))
    }

    fn put(&self, url: &str, bytes: Bytes) -> Result<()> {
        self.runtime
            .block_on(self.blobs.put(url, bytes, false))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redwood_core::retry::RetryPolicy;

    #[test]
    fn transport_errors_carry_no_signature() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener); // nothing listens there now
        let container = format!("http://127.0.0.1:{port}/acct/box");
        let mut io = BlobIo::new(&container, "sv=1&sp=r&sig=READSECRET", true).unwrap();
        io.blobs.retry = RetryPolicy::NONE;
        let read = io.fetch("jobs/j/input", Some(0..10)).unwrap_err();
        let write = io
            .put(
                &format!("{container}/r?sv=1&sp=w&sig=WRITESECRET"),
                Bytes::new(),
            )
            .unwrap_err();
        for e in [read, write] {
            let text = format!("{e} {e:?}");
            assert!(!text.contains("SECRET"), "{text}");
            assert!(
                e.is_retryable(),
                "a refused connection is transient: {text}"
            );
        }
    }

    #[test]
    fn the_job_part_and_the_task_part_make_the_spec() {
        let job = r#"{"job":"j","function":"f","signature":7,"binary":"b","container":"http://c",
            "read_sas":"sv=1","input":"in","timeout_ms":null}"#;
        let task = r#"{"task":3,"attempt":1,"range":[0,5],"result_url":"http://c/r"}"#;
        let spec = read_spec(Some(job.into()), Some(task.into())).unwrap();
        assert_eq!((spec.job.as_str(), spec.task, spec.attempt), ("j", 3, 1));
        assert_eq!(spec.range, (0, 5));
        let (code, e) = read_spec(None, Some(task.into())).unwrap_err();
        assert_eq!(code, EXIT_BAD_SPEC);
        assert!(e.to_string().contains("do not make a task"), "{e}");
        let (_, e) = read_spec(Some(job.into()), None).unwrap_err();
        assert!(
            e.to_string().contains("REDWOOD_BATCH_TASK is not set"),
            "{e}"
        );
    }
}
