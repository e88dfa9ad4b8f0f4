//! Running one task on a thread of its own, so a per-task timeout can end it while the
//! function still runs: the worker answers with a timeout error and leaves the thread behind
//! (a Batch task's process exits right after).

use std::time::Duration;

use redwood_core::raw::envelope::{Outcome, TaskEnvelope};
use redwood_core::raw::worker;
use redwood_core::{TaskError, TaskErrorKind};

/// The error outcome of attempt `envelope.attempt` of a task.
pub(crate) fn failed(envelope: &TaskEnvelope, kind: TaskErrorKind, message: String) -> Outcome {
    let mut e = TaskError::new(kind, message);
    e.function = envelope.function.clone();
    e.job = envelope.job.clone();
    e.task = envelope.task;
    e.attempt = envelope.attempt;
    Outcome::Err(e)
}

/// Runs the task on its own thread and waits for it, at most `timeout`.
pub(crate) fn run(envelope: TaskEnvelope, own_binary: &str, timeout: Option<Duration>) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let task = envelope.clone();
    let own = own_binary.to_string();
    let spawned = std::thread::Builder::new()
        .name("redwood-task".into())
        .spawn(move || {
            let _ = tx.send(worker::execute(&task, &own));
        });
    if let Err(e) = spawned {
        return failed(
            &envelope,
            TaskErrorKind::Crash,
            format!("cannot start the task thread: {e}"),
        );
    }
    let waited = match timeout {
        Some(limit) => rx
            .recv_timeout(limit)
            .map_err(|e| matches!(e, std::sync::mpsc::RecvTimeoutError::Timeout).then_some(limit)),
        None => rx.recv().map_err(|_| None),
    };
    match waited {
        Ok(outcome) => outcome,
        Err(Some(limit)) => failed(
            &envelope,
            TaskErrorKind::Timeout,
            format!("ran longer than its timeout of {limit:?}; its worker stopped it"),
        ),
        Err(None) => failed(
            &envelope,
            TaskErrorKind::Crash,
            "the task thread ended without an outcome".into(),
        ),
    }
}
