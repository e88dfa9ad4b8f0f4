//! The backend-independent half of a worker: checking an envelope, running the function with
//! panics caught, the current task's context, and the I/O a running task may do (broadcast and
//! `ResultRef` reads), which each backend's worker loop provides.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::raw::envelope::{Outcome, TaskEnvelope};
use crate::raw::registry::{self, InvokeError};
use crate::types::mpi::MpiWorld;
use crate::types::task_error::{TaskError, TaskErrorKind};

/// The environment variable a backend sets when it starts a process as a worker; its value
/// names the worker protocol (`local`, ...).
pub const WORKER_ENV: &str = "REDWOOD_WORKER";

/// What to tell a user whose worker process reached their own code.
pub const MISSING_ENTRY_HINT: &str = "a worker process is this program started again with REDWOOD_WORKER set; its `main` must carry #[redwood::main] or call redwood::worker_entry() before anything else (in a test binary, mark its tests #[redwood::test] instead of #[test] or #[tokio::test], with the `testing` feature; or use a harness = false test)";

/// The I/O a running task can do through its worker: reading an object (or a byte range of one)
/// from the session's storage.
pub trait WorkerIo: Send + Sync + 'static {
    /// Reads `key` (relative to the store, not the root), or the byte range of it.
    fn fetch(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes>;
}

static WORKER_IO: OnceLock<Box<dyn WorkerIo>> = OnceLock::new();

/// Installs this process's worker I/O; called once by a backend's worker loop.
pub fn install_worker_io(io: Box<dyn WorkerIo>) {
    // A second install is a programming error in a backend; the first one stays.
    let _ = WORKER_IO.set(io);
}

/// The installed worker I/O, or an error saying this is not a worker.
pub fn worker_io() -> Result<&'static dyn WorkerIo> {
    WORKER_IO.get().map(|b| b.as_ref()).ok_or_else(|| {
        Error::new(
            ErrorKind::Unsupported,
            "this value can only be read inside a remote function running on a worker; \
             on the client, read it through the Session",
        )
    })
}

/// Which task is running in this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContext {
    /// The job id.
    pub job: String,
    /// The task's index in its job.
    pub task: u64,
    /// Which attempt this is (1 is the first).
    pub attempt: u32,
    /// The remote function's id.
    pub function: String,
}

static CURRENT: RwLock<Option<TaskContext>> = RwLock::new(None);

static MPI_WORLD: OnceLock<MpiWorld> = OnceLock::new();

/// Records this process's place in an MPI task's world (a backend's worker does it once, before
/// the task runs), for [`crate::context::mpi`].
pub fn install_mpi_world(world: MpiWorld) {
    let _ = MPI_WORLD.set(world);
}

/// This process's place in an MPI task's world, if it runs one rank of such a task.
pub fn mpi_world() -> Option<&'static MpiWorld> {
    MPI_WORLD.get()
}

thread_local! {
    /// The task this thread runs: a worker that runs several tasks at once (the Functions
    /// handler) runs each on its own thread.
    static CURRENT_HERE: RefCell<Option<TaskContext>> = const { RefCell::new(None) };
}

/// The task running in this process, if this is a worker running one: the one on this thread,
/// else the one the process started last (for threads a task spawned).
pub fn current_task() -> Option<TaskContext> {
    CURRENT_HERE
        .with(|c| c.borrow().clone())
        .or_else(|| CURRENT.read().ok().and_then(|c| c.clone()))
}

fn set_current(ctx: Option<TaskContext>) {
    CURRENT_HERE.with(|c| *c.borrow_mut() = ctx.clone());
    if let Ok(mut c) = CURRENT.write() {
        *c = ctx;
    }
}

/// Per-process cache of decoded broadcast values, keyed by storage key.
pub(crate) fn broadcast_cache() -> &'static Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// What the panic hook saw of a panic inside a task: message, location, backtrace.
struct PanicReport {
    message: String,
    location: Option<String>,
    backtrace: Option<String>,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<PanicReport>> = const { RefCell::new(None) };
}

/// A worker mode a backend crate registers at link time: the value of `REDWOOD_WORKER` that
/// selects it, and what the process does then (serve its tasks and exit).
#[derive(Debug)]
pub struct WorkerMode {
    /// The value of [`WORKER_ENV`] (`local`, `batch`).
    pub name: &'static str,
    /// Variables that also select this mode when `REDWOOD_WORKER` is not set: a platform
    /// that starts the program itself (a Functions host sets `FUNCTIONS_CUSTOMHANDLER_PORT`).
    pub also_when: &'static [&'static str],
    /// Serves tasks and exits the process.
    pub serve: fn() -> !,
}

inventory::collect!(WorkerMode);

/// Runs this process as the worker `REDWOOD_WORKER` names, if it is set, and never returns
/// then: a mode this build lacks is an error on stderr and exit code 64. Without it, a mode
/// whose `also_when` variable is set runs. Returns otherwise.
pub fn enter_worker_mode() {
    let mode = match std::env::var(WORKER_ENV) {
        Ok(mode) => mode,
        Err(_) => {
            let Some(found) = inventory::iter::<WorkerMode>.into_iter().find(|m| {
                m.also_when
                    .iter()
                    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
            }) else {
                return;
            };
            (found.serve)();
        }
    };
    if let Some(found) = inventory::iter::<WorkerMode>
        .into_iter()
        .find(|m| m.name == mode)
    {
        (found.serve)();
    }
    eprintln!("redwood: this build cannot act as a `{mode}` worker ({WORKER_ENV})");
    std::process::exit(64);
}

/// The marker a worker writes on its stderr, on a line of its own, when it starts a task:
/// `MARK job task attempt`. A client reading the worker's stderr keeps only the lines after the
/// last marker as a crashed task's stderr tail, and does not show the marker itself.
pub const TASK_MARKER: &str = "\u{1e}redwood-task";

/// The task a [`TASK_MARKER`] line announces: `(job, task, attempt)`, or `None` for another line.
pub fn parse_task_marker(line: &str) -> Option<(&str, u64, u32)> {
    let rest = line
        .trim_end()
        .strip_prefix(TASK_MARKER)?
        .strip_prefix(' ')?;
    let mut parts = rest.split(' ');
    let job = parts.next()?;
    let task = parts.next()?.parse().ok()?;
    let attempt = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((job, task, attempt))
}

/// `text` without its [`TASK_MARKER`] lines (for a stderr that belongs to one task, where
/// the markers say nothing; an MPI task's ranks each write one).
pub fn without_task_markers(text: &str) -> String {
    text.split_inclusive('\n')
        .filter(|line| parse_task_marker(line).is_none())
        .collect()
}

/// The frames of a captured backtrace that belong to the task: after the panic machinery
/// (the hook, `panic_fmt`, `rust_begin_unwind`) and before the worker's (`execute`,
/// `catch_unwind`), numbered from 0. All of it when those frames are not found.
fn task_frames(full: &str) -> String {
    // A frame is its numbered line and the `at file:line` lines after it.
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in full.lines() {
        let numbered = line
            .trim_start()
            .split_once(": ")
            .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty());
        match frames.last_mut() {
            Some(frame) if !numbered => frame.push(line),
            _ => frames.push(vec![line]),
        }
    }
    fn name<'a>(frame: &[&'a str]) -> &'a str {
        frame.first().copied().unwrap_or_default()
    }
    let machinery = ["core::panicking::", "rust_begin_unwind", "std::panicking::"];
    let end = frames
        .iter()
        .position(|f| {
            name(f).contains("redwood_core::raw::worker::execute")
                || name(f).contains("catch_unwind")
        })
        .unwrap_or(frames.len());
    let start = frames[..end]
        .iter()
        .rposition(|f| machinery.iter().any(|m| name(f).contains(m)))
        .map_or(0, |i| i + 1);
    if start >= end || (start == 0 && end == frames.len()) {
        return full.to_string();
    }
    let mut out = String::new();
    for (n, frame) in frames[start..end].iter().enumerate() {
        let first = name(frame);
        let text = first
            .trim_start()
            .split_once(": ")
            .map_or(first, |(_, t)| t);
        out.push_str(&format!("{n:4}: {text}\n"));
        for line in &frame[1..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Installs the panic hook that records a panic's message, location and backtrace for the
/// task error. A panic inside a task writes one line to stderr (the backtrace goes to the task
/// error only); a panic elsewhere goes to the previous hook as usual.
pub fn install_panic_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if current_task().is_none() {
                previous(info);
                return;
            }
            let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "panic with a non-string payload".to_string()
            };
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            let trace = std::backtrace::Backtrace::capture();
            let backtrace = (trace.status() == std::backtrace::BacktraceStatus::Captured)
                .then(|| task_frames(&trace.to_string()));
            eprintln!(
                "panicked at {}: {message}",
                location.as_deref().unwrap_or("an unknown location")
            );
            LAST_PANIC.with(|p| {
                *p.borrow_mut() = Some(PanicReport {
                    message,
                    location,
                    backtrace,
                })
            });
        }));
    });
}

/// Runs one task: checks the binary and the function signature, decodes the arguments, calls
/// the function with panics caught, and encodes the result. Never panics itself.
pub fn execute(envelope: &TaskEnvelope, own_binary: &str) -> Outcome {
    let fail = |kind: TaskErrorKind, message: String, location: Option<String>| {
        let mut e = TaskError::new(kind, message);
        e.function = envelope.function.clone();
        e.job = envelope.job.clone();
        e.task = envelope.task;
        e.attempt = envelope.attempt;
        e.location = location;
        Outcome::Err(e)
    };
    if envelope.binary != own_binary {
        return fail(
            TaskErrorKind::Refused,
            format!(
                "worker runs binary {} but the task was made by binary {}: \
                 run the same executable on both sides",
                short(own_binary),
                short(&envelope.binary)
            ),
            None,
        );
    }
    if let Err(e) = registry::check_unique(&envelope.function) {
        return fail(TaskErrorKind::Refused, e.message().to_string(), None);
    }
    let Some(registration) = registry::lookup(&envelope.function) else {
        return fail(
            TaskErrorKind::Refused,
            format!(
                "function `{}` is not registered in this binary (is it marked #[redwood::remote]?)",
                envelope.function
            ),
            None,
        );
    };
    if registration.signature != envelope.signature {
        return fail(
            TaskErrorKind::Refused,
            format!(
                "function `{}` has signature {:016x} in this binary but the task expects {:016x}",
                envelope.function, registration.signature, envelope.signature
            ),
            None,
        );
    }
    // The boundary between this task's stderr and the previous one's (see TASK_MARKER).
    // One write: stderr is unbuffered, and `eprintln!` writes each piece of its format apart.
    let marker = format!(
        "{TASK_MARKER} {} {} {}\n",
        envelope.job, envelope.task, envelope.attempt
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), marker.as_bytes());
    set_current(Some(TaskContext {
        job: envelope.job.clone(),
        task: envelope.task,
        attempt: envelope.attempt,
        function: envelope.function.clone(),
    }));
    LAST_PANIC.with(|p| p.borrow_mut().take());
    let result = panic::catch_unwind(AssertUnwindSafe(|| (registration.invoke)(&envelope.args)));
    // What the task printed without a newline reaches stderr before the next task's marker.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    set_current(None);
    match result {
        Ok(Ok(bytes)) => Outcome::Ok(bytes),
        Ok(Err(InvokeError::User(message))) => fail(TaskErrorKind::Error, message, None),
        Ok(Err(InvokeError::Codec(message))) => fail(TaskErrorKind::Decode, message, None),
        Err(payload) => {
            let report = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| PanicReport {
                    message: payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".to_string()),
                    location: None,
                    backtrace: None,
                });
            let mut outcome = fail(TaskErrorKind::Panic, report.message, report.location);
            if let Outcome::Err(e) = &mut outcome {
                e.backtrace = report.backtrace;
            }
            outcome
        }
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_markers_split_a_workers_stderr() {
        let line = format!("{TASK_MARKER} job-1 7 2");
        assert_eq!(parse_task_marker(&line), Some(("job-1", 7, 2)));
        assert_eq!(
            parse_task_marker(&format!("{line}\n")),
            Some(("job-1", 7, 2))
        );
        assert_eq!(parse_task_marker("redwood-task job-1 7 2"), None);
        assert_eq!(parse_task_marker(&format!("{line} extra")), None);
        let text = format!("{TASK_MARKER} j 0 1\nrank 0\n{TASK_MARKER} j 0 1\nrank 1\n");
        assert_eq!(without_task_markers(&text), "rank 0\nrank 1\n");
        assert_eq!(without_task_markers("no marker"), "no marker");
    }

    #[test]
    fn a_backtrace_keeps_the_tasks_frames() {
        let full = "   0: redwood_core::raw::worker::install_panic_hook::{{closure}}
             at /w/core/src/raw/worker.rs:186:25
   1: std::panicking::panic_with_hook
   2: core::panicking::panic_fmt
             at /rustc/x/library/core/src/panicking.rs:80:14
   3: app::boom::__redwood_fn_boom
             at ./src/main.rs:18:17
   4: app::boom::__redwood_invoke_boom
             at ./src/main.rs:16:1
   5: redwood_core::raw::worker::execute::{{closure}}
   6: std::panic::catch_unwind
   7: main
";
        assert_eq!(
            task_frames(full),
            "   0: app::boom::__redwood_fn_boom\n             at ./src/main.rs:18:17\n   1: app::boom::__redwood_invoke_boom\n             at ./src/main.rs:16:1\n"
        );
        assert_eq!(task_frames("no frames here"), "no frames here");
    }
}
