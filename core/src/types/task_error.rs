//! [`TaskError`]: how a remote failure reaches the caller.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// The remote function panicked.
    Panic,
    /// The remote function returned `Err(e)`; the message is `e.to_string()`.
    Error,
    /// The worker process died (abort, signal, out of memory) while running the task.
    Crash,
    /// The task ran longer than its timeout and its worker was killed.
    Timeout,
    /// The worker refused the task: another binary, an unknown function or another signature.
    Refused,
    /// The arguments could not be decoded by the worker, or the result by the caller.
    Decode,
    /// The job was cancelled before the task finished.
    Cancelled,
    /// The backend lost the task and could not say why.
    Lost,
}

impl fmt::Display for TaskErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskErrorKind::Panic => "panicked",
            TaskErrorKind::Error => "returned an error",
            TaskErrorKind::Crash => "crashed",
            TaskErrorKind::Timeout => "timed out",
            TaskErrorKind::Refused => "was refused",
            TaskErrorKind::Decode => "could not decode its data",
            TaskErrorKind::Cancelled => "was cancelled",
            TaskErrorKind::Lost => "was lost",
        })
    }
}

/// A remote task's failure: what happened, where, on which attempt, and the worker's last words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// Why the task failed.
    pub kind: TaskErrorKind,
    /// The remote function's id.
    pub function: String,
    /// The job id.
    pub job: String,
    /// The task's index in its job.
    pub task: u64,
    /// The attempt that failed: 1 is the first, 2 the first retry; 0 when the task never started
    /// (cancelled while queued, or lost before the backend ran it).
    pub attempt: u32,
    /// The panic message, the `Err` text, or what the backend saw.
    pub message: String,
    /// Where a panic happened (`file:line:column`).
    pub location: Option<String>,
    /// The worker's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the worker, when one did.
    pub signal: Option<i32>,
    /// The last lines the worker wrote to stderr while running this task (a crashed worker's
    /// earlier tasks are not in it).
    pub stderr_tail: Option<String>,
    /// A panic's backtrace, when the worker ran with `RUST_BACKTRACE` set. It is kept here and
    /// not written to the worker's stderr, so the client's log shows each panic in one line.
    pub backtrace: Option<String>,
}

impl TaskError {
    /// A task error of `kind` with a message; the other fields are empty.
    pub fn new(kind: TaskErrorKind, message: impl Into<String>) -> Self {
        TaskError {
            kind,
            function: String::new(),
            job: String::new(),
            task: 0,
            attempt: 0,
            message: message.into(),
            location: None,
            exit_code: None,
            signal: None,
            stderr_tail: None,
            backtrace: None,
        }
    }

    /// Whether running the task again may succeed (not for refusals or cancellation).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self.kind,
            TaskErrorKind::Refused | TaskErrorKind::Cancelled | TaskErrorKind::Decode
        )
    }
}

/// How a worker killed by `signal` is described in a task error: ` by SIGKILL (killed from
/// outside, e.g. out of memory)` and the like (Linux numbering), or ` by signal N`.
pub fn killed_by(signal: i32) -> String {
    match signal {
        9 => " by SIGKILL (killed from outside, e.g. out of memory)".into(),
        6 => " by SIGABRT (an abort, e.g. a panic with panic = \"abort\")".into(),
        11 => " by SIGSEGV (an invalid memory access)".into(),
        15 => " by SIGTERM".into(),
        7 => " by SIGBUS".into(),
        _ => format!(" by signal {signal}"),
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} of job {} ({}",
            self.task, self.job, self.function
        )?;
        if self.attempt > 0 {
            write!(f, ", attempt {}", self.attempt)?;
        }
        write!(f, ") {}", self.kind)?;
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(code) = self.exit_code {
            write!(f, " (exit code {code})")?;
        }
        if let Some(sig) = self.signal {
            write!(f, " (signal {sig})")?;
        }
        if let Some(trace) = self.backtrace.as_deref().filter(|t| !t.trim().is_empty()) {
            write!(f, "\n--- backtrace ---\n{}", trace.trim_end())?;
        }
        if let Some(tail) = self.stderr_tail.as_deref().filter(|t| !t.trim().is_empty()) {
            write!(f, "\n--- worker stderr (tail) ---\n{}", tail.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for TaskError {}
