//! The `azure-functions` backend: the same program runs as a custom handler in an Azure
//! Functions app (or the emulator's Functions host), and a job's tasks reach it as queue
//! messages, many tasks per message.
//!
//! - [`handler`] — worker mode: a `#[redwood::main]` program started by a Functions host
//!   (`FUNCTIONS_CUSTOMHANDLER_PORT` set) serves the queue-triggered function `redwood-task`.
//! - [`AzureFunctionsBackend`] — the executor: groups of attempts as messages, their outcomes
//!   found by listing the job's `results/`, failed messages from the poison queue.
//! - [`app`] — writes the function app folder for a program (`host.json`, `function.json`,
//!   the executable).

pub mod app;
mod backend;
pub mod config;
pub mod handler;
pub mod message;
mod watch;

pub use backend::{AzureFunctionsBackend, NAME};
pub use config::{FunctionsConfig, FunctionsSettings};

/// The queue-triggered function every app has.
pub const TASK_FUNCTION: &str = "redwood-task";
