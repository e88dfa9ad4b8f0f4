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
    /// The attempt that failed (0 is the first).
    pub attempt: u32,
    /// The panic message, the `Err` text, or what the backend saw.
    pub message: String,
    /// Where a panic happened (`file:line:column`).
    pub location: Option<String>,
    /// The worker's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the worker, when one did.
    pub signal: Option<i32>,
    /// The last lines the worker wrote to stderr.
    pub stderr_tail: Option<String>,
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
            "task {} of job {} ({}, attempt {}) {}",
            self.task,
            self.job,
            self.function,
            self.attempt + 1,
            self.kind
        )?;
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
        if let Some(tail) = self.stderr_tail.as_deref().filter(|t| !t.trim().is_empty()) {
            write!(f, "\n--- worker stderr (tail) ---\n{}", tail.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for TaskError {}
