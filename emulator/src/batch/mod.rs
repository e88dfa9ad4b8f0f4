//! A local Azure Batch service: the data-plane REST API (pools, jobs, tasks, task collections),
//! SharedKey and bearer auth, OData errors, `$filter`/`$select`/paging, one endpoint per
//! account. Resources are kept in memory.

mod admin;
pub mod auth;
mod autoscale;
pub mod error;
mod exec;
mod file_api;
mod files;
mod node_task;
mod query;
mod resources;
mod server;
mod start_task;

pub use server::{API_VERSIONS, BatchAccount, BatchEmulator, MAX_BODY, MAX_TASKS_PER_COLLECTION};
