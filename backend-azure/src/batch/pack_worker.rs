//! A pack on its node: the Batch task's process runs the pack's tasks one after another on a
//! warm worker of the same program (the local backend's pool of one), which a crash or a
//! timeout replaces for the next task; it stores each outcome through that attempt's write
//! SAS as it finishes (create-only: the first stored outcome wins), and at the end a
//! [`PackReport`] with each task's times and the tasks it released.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use redwood_core::raw::backend::CleanupRequest;
use redwood_core::raw::executor::{Attempt, Executor};
use redwood_core::raw::pack::PackWriter;
use redwood_core::{Error, ErrorKind, Result};

use super::pack::{PackReport, PackSpec, PackTask};
use super::worker::TaskSpec;
use crate::sas_io::SasBlobs;
use crate::task_inputs::{JobOnNode, TaskInput, read_args};
use crate::task_times::epoch_micros;

/// Tasks handed to the worker ahead of the one it runs (so it never waits for the next).
const AHEAD: usize = 2;
/// Outcomes looked for at once when a pack starts.
const CHECKS_AT_ONCE: usize = 16;
/// How often a running pack stores its report so far.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Runs the pack on a runtime of its own; an error means an outcome or the report could not
/// be stored (Batch runs the pack again, which skips what was stored).
pub(crate) fn run(spec: &TaskSpec, pack: &PackSpec) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Backend, format!("cannot start a runtime: {e}")))?;
    runtime.block_on(run_pack(spec, pack))
}

async fn run_pack(spec: &TaskSpec, pack: &PackSpec) -> Result<()> {
    let plain_http = spec.container.starts_with("http://");
    let blobs = SasBlobs::new(&spec.container, &spec.read_sas, plain_http)?;
    let mut report = PackReport::default();
    // A pack run again (its node was lost, or it could not store an outcome) skips what a
    // run before stored.
    let stored: Vec<bool> = futures::stream::iter(&pack.tasks)
        .map(|t| blobs.signed_url_exists(&t.result_url))
        .buffered(CHECKS_AT_ONCE)
        .collect::<Vec<Result<bool>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let mut todo: Vec<&PackTask> = Vec::with_capacity(pack.tasks.len());
    for (t, stored) in pack.tasks.iter().zip(stored) {
        if stored {
            report.skipped.push(t.task);
        } else {
            todo.push(t);
        }
    }
    let inputs: Vec<TaskInput<'_>> = todo
        .iter()
        .map(|t| TaskInput {
            task: t.task,
            range: t.range,
            args: t.args.as_deref(),
        })
        .collect();
    let args = read_args(&blobs, &spec.input, &inputs).await?;
    let mut queue: VecDeque<(&PackTask, Attempt)> = todo
        .iter()
        .zip(args)
        .map(|(t, args)| {
            let attempt = Attempt {
                task: t.task,
                attempt: spec.attempt,
                args,
                range: t.range,
            };
            (*t, attempt)
        })
        .collect();
    if !queue.is_empty() {
        run_tasks(spec, pack, &blobs, &mut queue, &mut report).await?;
    }
    report.released = queue.iter().map(|(t, _)| t.task).collect();
    let body = serde_json::to_vec(&report)
        .map_err(|e| Error::new(ErrorKind::Codec, format!("cannot encode the report: {e}")))?;
    blobs
        .put(&pack.report_url, Bytes::from(body), false)
        .await
        .map(|_| ())
}

/// Runs tasks from the front of `queue` until it is empty or the budget is spent; stores each
/// outcome as it comes.
async fn run_tasks(
    spec: &TaskSpec,
    pack: &PackSpec,
    blobs: &SasBlobs,
    queue: &mut VecDeque<(&PackTask, Attempt)>,
    report: &mut PackReport,
) -> Result<()> {
    // The pool's workers are this program in the local worker mode: naming it links it in.
    let _ = redwood_local::worker::serve as fn() -> !;
    // Known from the node's cache, it is handed to the worker, which need not hash the
    // program again.
    let _ = super::worker::own_binary_hash();
    let pool = redwood_local::LocalBackend::builder().workers(1).build()?;
    let job = JobOnNode {
        job: &spec.job,
        function: &spec.function,
        signature: spec.signature,
        binary: &spec.binary,
        container: &spec.container,
        read_sas: &spec.read_sas,
        timeout_ms: spec.timeout_ms,
    };
    let opened = pool.open(job.open_request()?).await?;
    let mut ends = opened.ends;
    let budget = pack.budget_ms.map(Duration::from_millis);
    let started = Instant::now();
    let mut out: Vec<(u64, String)> = Vec::new(); // (task, result URL) handed to the worker
    let mut last_progress = Instant::now();
    let result = async {
        loop {
            while out.len() < AHEAD
                && budget.is_none_or(|b| started.elapsed() < b)
                && let Some((t, attempt)) = queue.pop_front()
            {
                out.push((t.task, t.result_url.clone()));
                opened.job.launch(vec![attempt]).await?;
            }
            if out.is_empty() {
                return Ok(());
            }
            let Some(end) = ends.next().await else {
                return Err(Error::new(
                    ErrorKind::Backend,
                    "the pack's worker pool stopped",
                ));
            };
            let Some(at) = out.iter().position(|(task, _)| *task == end.task) else {
                continue;
            };
            let (task, url) = out.remove(at);
            let bytes = end.outcome().to_stored()?;
            let mut entry = PackWriter::new();
            entry.push(task, &bytes);
            blobs.put(&url, Bytes::from(entry.finish()), true).await?;
            report.times.push((
                task,
                epoch_micros(end.started.unwrap_or(end.finished)),
                epoch_micros(end.finished),
            ));
            // The client reads this while the pack runs, to hand each outcome on as it comes.
            if last_progress.elapsed() >= PROGRESS_EVERY && !queue.is_empty() {
                last_progress = Instant::now();
                if let Ok(body) = serde_json::to_vec(&*report) {
                    let _ = blobs.put(&pack.report_url, Bytes::from(body), false).await;
                }
            }
        }
    }
    .await;
    opened.job.close().await;
    let _ = pool.release(CleanupRequest::default()).await;
    result
}
