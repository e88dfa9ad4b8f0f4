//! What users touch: sessions, jobs, tasks, options, broadcast values and result references.

pub mod blob;
pub mod broadcast;
pub mod data_refs;
pub(crate) mod finished;
pub mod job;
pub(crate) mod lease;
pub mod mpi;
pub mod options;
pub(crate) mod pending;
pub(crate) mod progress;
pub mod region;
pub mod remote;
pub mod result_ref;
pub mod session;
pub mod session_builder;
pub mod stats;
pub mod task;
pub mod task_error;
