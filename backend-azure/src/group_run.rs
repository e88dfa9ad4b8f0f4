//! Running a group of tasks on a node: what a Functions instance (the custom handler) and a
//! warm Batch worker do with each [`TaskMessage`] they take. The tasks run in a warm pool of
//! worker processes of the same program (the local backend's), so a task that crashes or
//! overruns its timeout costs its worker, not the instance, and its error says how it ended
//! (signal, stderr tail). The group's outcomes are stored as one segment through the
//! message's write SAS; a delivery of a cancelled job's group runs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::oneshot;
use redwood_core::raw::envelope::Outcome;
use redwood_core::raw::executor::{Attempt, AttemptEnd, Executor, ExecutorJob};
use redwood_core::raw::pack::PackWriter;
use redwood_core::{Result, TaskError, TaskErrorKind};

use crate::functions::message::{GroupTimes, TIMES_KEY, TaskMessage};
use crate::sas_io::{Put, SasBlobs};
use crate::task_inputs::{JobOnNode, TaskInput, read_args};
use crate::task_times::epoch_micros;

/// A job no group of which ran for this long is closed (its pool state released).
const JOB_IDLE: Duration = Duration::from_secs(60);

/// Who waits for the end of which `(task, attempt)`: more than one delivery when a group
/// reaches the instance twice while it runs (the attempt runs once, and both hear its end).
type Waiting = Arc<Mutex<HashMap<(u64, u32), Vec<oneshot::Sender<Arc<AttemptEnd>>>>>>;

/// A job this instance runs groups of: its job on the pool, and who waits for which attempt.
struct JobRun {
    job: Box<dyn ExecutorJob>,
    waiting: Waiting,
    used: Mutex<Instant>,
}

/// This process's pool of workers and the jobs it runs groups of.
pub(crate) struct Node {
    pool: Arc<dyn Executor>,
    jobs: tokio::sync::Mutex<HashMap<String, Arc<JobRun>>>,
}

pub(crate) fn node() -> Result<&'static Node> {
    static NODE: OnceLock<Node> = OnceLock::new();
    if let Some(h) = NODE.get() {
        return Ok(h);
    }
    // The pool's workers are this program in the local worker mode: naming it links it in.
    let _ = redwood_local::worker::serve as fn() -> !;
    // REDWOOD_WORKERS (an app setting) sizes it; default: the instance's cores.
    let pool = redwood_local::LocalBackendBuilder::from_env()?.build()?;
    // Workers start with the instance, not with its first task.
    pool.warm()?;
    Ok(NODE.get_or_init(|| Node {
        pool: Arc::new(pool),
        jobs: tokio::sync::Mutex::new(HashMap::new()),
    }))
}

/// Closes the jobs no group ran for a while.
pub(crate) async fn close_idle_jobs() {
    loop {
        tokio::time::sleep(JOB_IDLE / 4).await;
        let Ok(h) = node() else { return };
        let idle: Vec<Arc<JobRun>> = {
            let mut jobs = h.jobs.lock().await;
            let ids: Vec<String> = jobs
                .iter()
                .filter(|(_, j)| {
                    j.used
                        .lock()
                        .map(|u| u.elapsed() > JOB_IDLE)
                        .unwrap_or(true)
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| jobs.remove(id)).collect()
        };
        for j in idle {
            j.job.close().await;
        }
    }
}

/// What a delivery did: its log lines, and the outcomes it stored (not when an earlier
/// delivery had stored them).
pub(crate) struct Delivered {
    /// What happened, for the log.
    pub(crate) logs: Vec<String>,
    /// The outcomes this delivery stored.
    pub(crate) stored: Option<Bytes>,
}

/// Runs a group and stores its outcomes, unless its job is cancelled or (with
/// `unless_stored`: the queued backup of a call) they are stored already. `delivery` counts
/// the deliveries of its message (1 is the first).
pub(crate) async fn deliver(
    message: &TaskMessage,
    delivery: u64,
    unless_stored: bool,
) -> std::result::Result<Delivered, String> {
    let plain_http =
        message.container.starts_with("http://") && message.result_url.starts_with("http://");
    let blobs = SasBlobs::new(&message.container, &message.read_sas, plain_http)
        .map_err(|e| e.to_string())?;
    match blobs.exists(&message.stop).await {
        Ok(true) => {
            return Ok(Delivered {
                logs: vec![format!("job {} was cancelled: group not run", message.job)],
                stored: None,
            });
        }
        Ok(false) => {}
        Err(e) => {
            let why = format!("cannot check whether the job was cancelled: {e}");
            return Err(fail(&blobs, message, why).await);
        }
    }
    if unless_stored {
        match blobs.exists(&message.segment).await {
            Ok(true) => {
                return Ok(Delivered {
                    logs: vec!["its call stored this group".to_string()],
                    stored: None,
                });
            }
            Ok(false) => {}
            Err(e) => {
                let why = format!("cannot check whether the group is stored: {e}");
                return Err(fail(&blobs, message, why).await);
            }
        }
    }
    if delivery > 1 {
        // What the client reports if this message ends in the poison queue.
        let note = format!(
            "delivery {delivery} started in process {} at {}; the delivery before it stored \
             nothing (its instance or worker died, or it ran past functionTimeout)",
            std::process::id(),
            humantime::format_rfc3339_seconds(SystemTime::now())
        );
        let _ = blobs.put(&message.note_url, Bytes::from(note), false).await;
    }
    let pack = match run_group(&blobs, message).await {
        Ok(p) => Bytes::from(p),
        Err(e) => return Err(fail(&blobs, message, e).await),
    };
    match blobs.put(&message.result_url, pack.clone(), true).await {
        Ok(Put::Written) => Ok(Delivered {
            logs: vec![format!(
                "{} tasks of job {} stored",
                message.tasks.len(),
                message.job
            )],
            stored: Some(pack),
        }),
        Ok(Put::Existed) => Ok(Delivered {
            logs: vec!["an earlier delivery stored this group".to_string()],
            stored: None,
        }),
        Err(e) => Err(fail(&blobs, message, format!("cannot store the outcomes: {e}")).await),
    }
}

/// Records why a delivery failed (in the group's note) and returns it.
async fn fail(blobs: &SasBlobs, message: &TaskMessage, why: String) -> String {
    let _ = blobs
        .put(&message.note_url, Bytes::from(why.clone()), false)
        .await;
    why
}

/// The job a message belongs to, opened on the pool once per instance.
async fn job_run(message: &TaskMessage) -> Result<Arc<JobRun>> {
    let h = node()?;
    let mut jobs = h.jobs.lock().await;
    if let Some(j) = jobs.get(&message.job) {
        return Ok(j.clone());
    }
    let job = JobOnNode {
        job: &message.job,
        function: &message.function,
        signature: message.signature,
        binary: &message.binary,
        container: &message.container,
        read_sas: &message.read_sas,
        timeout_ms: message.timeout_ms,
    };
    let opened = h.pool.open(job.open_request()?).await?;
    let waiting: Waiting = Arc::default();
    let mut ends = opened.ends;
    let routes = waiting.clone();
    tokio::spawn(async move {
        while let Some(end) = ends.next().await {
            let waiters = routes
                .lock()
                .ok()
                .and_then(|mut w| w.remove(&(end.task, end.attempt)))
                .unwrap_or_default();
            let end = Arc::new(end);
            for w in waiters {
                let _ = w.send(end.clone());
            }
        }
        // The pool is gone: whoever still waits hears so (their senders drop).
        if let Ok(mut w) = routes.lock() {
            w.clear();
        }
    });
    let run = Arc::new(JobRun {
        job: opened.job,
        waiting,
        used: Mutex::new(Instant::now()),
    });
    jobs.insert(message.job.clone(), run.clone());
    Ok(run)
}

/// Runs the group's tasks on the pool; their outcomes and times as one pack.
async fn run_group(
    blobs: &SasBlobs,
    message: &TaskMessage,
) -> std::result::Result<Vec<u8>, String> {
    let inputs: Vec<TaskInput<'_>> = message
        .tasks
        .iter()
        .map(|t| TaskInput {
            task: t.task,
            range: t.range,
            args: t.args.as_deref(),
        })
        .collect();
    let args = read_args(blobs, &message.input, &inputs)
        .await
        .map_err(|e| format!("cannot read the tasks' arguments: {e}"))?;
    let run = job_run(message)
        .await
        .map_err(|e| format!("cannot start the group's workers: {e}"))?;
    if let Ok(mut u) = run.used.lock() {
        *u = Instant::now();
    }
    let mut receivers = Vec::with_capacity(message.tasks.len());
    let mut attempts = Vec::with_capacity(message.tasks.len());
    {
        let mut waiting = run
            .waiting
            .lock()
            .map_err(|_| "the handler's state is poisoned")?;
        for (t, args) in message.tasks.iter().zip(args) {
            let (tx, rx) = oneshot::channel();
            receivers.push((t.task, rx));
            let waiters = waiting.entry((t.task, message.attempt)).or_default();
            waiters.push(tx);
            if waiters.len() > 1 {
                continue; // running already, for another delivery
            }
            attempts.push(Attempt {
                task: t.task,
                attempt: message.attempt,
                args,
                range: t.range,
            });
        }
    }
    let launched = run.job.launch(attempts).await;
    let mut pack = PackWriter::new();
    let mut times = GroupTimes {
        tasks: Vec::with_capacity(receivers.len()),
        instance: Some(std::process::id()),
    };
    if launched.is_err()
        && let Ok(mut waiting) = run.waiting.lock()
    {
        // Nothing will end them: no one waits.
        for t in &message.tasks {
            waiting.remove(&(t.task, message.attempt));
        }
    }
    for (task, rx) in receivers {
        let outcome = match &launched {
            Err(e) => lost(
                message,
                task,
                format!("the instance's workers did not take it: {e}"),
            ),
            Ok(()) => match rx.await {
                Ok(end) => {
                    times.tasks.push((
                        task,
                        epoch_micros(end.started.unwrap_or(end.finished)),
                        epoch_micros(end.finished),
                    ));
                    end.outcome().clone()
                }
                Err(_) => lost(message, task, "the instance's workers stopped".into()),
            },
        };
        let bytes = outcome
            .to_stored()
            .map_err(|e| format!("cannot encode an outcome: {e}"))?;
        pack.push(task, &bytes);
    }
    let times = serde_json::to_vec(&times).map_err(|e| format!("cannot encode the times: {e}"))?;
    pack.push(TIMES_KEY, &times);
    Ok(pack.finish())
}

fn lost(message: &TaskMessage, task: u64, why: String) -> Outcome {
    let mut e = TaskError::new(TaskErrorKind::Lost, why);
    e.job = message.job.clone();
    e.function = message.function.clone();
    e.task = task;
    e.attempt = message.attempt;
    Outcome::Err(e)
}
