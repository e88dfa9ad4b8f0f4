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
pub const MISSING_ENTRY_HINT: &str = "a worker process is this program started again with REDWOOD_WORKER set; its `main` must carry #[redwood::main] or call redwood::worker_entry() before anything else (a libtest #[test] binary cannot be a worker: use a harness = false test)";

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
    /// Which attempt this is (0 is the first).
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

/// The task running in this process, if this is a worker running one.
pub fn current_task() -> Option<TaskContext> {
    CURRENT.read().ok().and_then(|c| c.clone())
}

fn set_current(ctx: Option<TaskContext>) {
    if let Ok(mut c) = CURRENT.write() {
        *c = ctx;
    }
}

/// Per-process cache of decoded broadcast values, keyed by storage key.
pub(crate) fn broadcast_cache() -> &'static Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

thread_local! {
    static LAST_PANIC: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
}

/// Installs the panic hook that records a panic's message and location for the task error,
/// keeping the previous hook (so the message still reaches stderr).
pub fn install_panic_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
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
            LAST_PANIC.with(|p| *p.borrow_mut() = Some((message, location)));
            previous(info);
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
    set_current(Some(TaskContext {
        job: envelope.job.clone(),
        task: envelope.task,
        attempt: envelope.attempt,
        function: envelope.function.clone(),
    }));
    LAST_PANIC.with(|p| p.borrow_mut().take());
    let result = panic::catch_unwind(AssertUnwindSafe(|| (registration.invoke)(&envelope.args)));
    set_current(None);
    match result {
        Ok(Ok(bytes)) => Outcome::Ok(bytes),
        Ok(Err(InvokeError::User(message))) => fail(TaskErrorKind::Error, message, None),
        Ok(Err(InvokeError::Codec(message))) => fail(TaskErrorKind::Decode, message, None),
        Err(payload) => {
            let (message, location) =
                LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_else(|| {
                        let msg = payload
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "panic".to_string());
                        (msg, None)
                    });
            fail(TaskErrorKind::Panic, message, location)
        }
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
