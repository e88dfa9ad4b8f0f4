#![deny(missing_docs)]
//! Redwood's local backend: a pool of warm worker processes on this machine.
//!
//! The workers are the program's own executable started in worker mode (see
//! [`worker::serve`]); tasks go down their stdin and replies come back over a private pipe.
//! A task that exceeds its timeout gets its worker killed and replaced; a worker that crashes
//! turns into a `TaskError` with its exit code or signal and the tail of its stderr. Finished
//! results are stored in packed segments (group commit) before they are reported.

mod backend;
mod fetch;
mod pool;
mod process;
pub mod protocol;
pub mod worker;

pub use backend::{LocalBackend, LocalBackendBuilder, NAME};
