#![deny(missing_docs)]
//! Redwood's core: the programming model (sessions, jobs, tasks, broadcast values), the storage
//! layout, the job driver (every task's life, once), the executor contract backends implement
//! and the worker runtime. Users depend on the `redwood`
//! crate, which re-exports this one together with the backends.

pub mod codec;
pub mod config;
mod driver;
pub mod error;
pub mod inspect;
pub mod raw;
pub mod redact;
pub mod retry;
pub mod storage;
pub mod types;

pub use config::{Config, Placement};
pub use error::{Error, ErrorKind, Result};
pub use storage::Storage;
pub use types::blob::Blob;
pub use types::broadcast::{Broadcast, ByteVector};
pub use types::job::{Job, ResultStream, WaitFor, WaitSummary};
pub use types::mpi::{MpiShape, MpiWorld};
pub use types::options::TaskOptions;
pub use types::region::Region;
pub use types::remote::{IntoArgs, RemoteFn};
pub use types::result_ref::ResultRef;
pub use types::session::{CleanupReport, Session};
pub use types::session_builder::SessionBuilder;
pub use types::stats::{JobStats, RegionTasks};
pub use types::task::Task;
pub use types::task_error::{TaskError, TaskErrorKind};

/// Facts about the task running in this worker process, for use inside remote functions.
pub mod context {
    use crate::raw::worker::current_task;

    /// The attempt of the running task: 1 is the first, 2 the first retry, and so on; 0 outside
    /// a task. The same number as [`TaskError::attempt`](crate::TaskError::attempt).
    pub fn attempt() -> u32 {
        current_task().map(|t| t.attempt).unwrap_or(0)
    }

    /// The index of the running task in its job, if this is a worker running one.
    pub fn task_index() -> Option<u64> {
        current_task().map(|t| t.task)
    }

    /// The job id of the running task, if this is a worker running one.
    pub fn job_id() -> Option<String> {
        current_task().map(|t| t.job)
    }

    /// Where this process sits in a multi-node task's MPI world (`TaskOptions::mpi`): rank,
    /// size, hosts. `None` outside such a task.
    pub fn mpi() -> Option<crate::types::mpi::MpiWorld> {
        crate::raw::worker::mpi_world().cloned()
    }

    /// Whether this code runs inside a remote task.
    pub fn in_task() -> bool {
        current_task().is_some()
    }
}

/// Used by the code `#[redwood::remote]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::raw::registry::{
        InvokeError, Registration, decode_args, encode_fallible, encode_output,
    };
    pub use crate::types::remote::{Fallible, RemoteFn};
    pub use crate::types::session::flush_all_records;
    pub use inventory;
}
