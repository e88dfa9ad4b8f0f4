//! Azure Batch: our own small REST client for the data-plane API (no maintained Rust crate
//! covers the current API), the `azure-batch` backend on it, and the worker mode of a task.

mod auth;
pub mod backend;
pub mod client;
pub mod config;
pub mod credential;
mod error;
mod job;
mod leftovers;
mod monitor;
mod nodes;
mod outcome;
pub mod pack;
mod pack_monitor;
mod pack_worker;
mod pool;
mod tasks;
mod warm;
pub mod warm_worker;
pub mod worker;

pub use backend::{AzureBatchBackend, AzureBatchBackendBuilder};
pub use client::{BatchClient, BatchClientBuilder, TaskAddResult};
pub use credential::{BATCH_SCOPE, CredentialKind};
