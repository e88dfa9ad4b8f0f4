//! A local Azure Batch service: the data-plane REST API (pools, jobs, tasks, task collections),
//! SharedKey and bearer auth, OData errors, `$filter`/`$select`/paging, one endpoint per
//! account. Resources are kept in memory.

mod admin;
pub mod auth;
mod autoscale;
mod conditions;
mod dependencies;
pub mod error;
mod exec;
mod exit_conditions;
mod file_api;
mod files;
mod job_update;
mod jobs;
mod middleware;
mod multi_instance;
mod node_task;
mod nodes;
mod odata;
pub mod outage;
mod placement;
mod pool_autoscale;
mod pool_update;
mod pools;
mod preparation;
mod query;
mod release;
mod resources;
mod server;
mod start_task;
mod tasks;
mod tls;
mod unimplemented;

pub use server::{
    API_VERSIONS, BatchAccount, BatchEmulator, BatchOptions, MAX_BODY, MAX_TASKS_PER_COLLECTION,
    REALISTIC_TASK_START_LATENCY,
};
