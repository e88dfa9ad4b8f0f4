//! The `azure-functions` backend: the same program runs as a custom handler in an Azure
//! Functions app (or the emulator's Functions host), and a job's tasks reach it as queue
//! messages, many tasks per message.
//!
//! - [`handler`] — worker mode: a `#[redwood::main]` program started by a Functions host
//!   (`FUNCTIONS_CUSTOMHANDLER_PORT` set) serves the queue-triggered function `redwood-task`
//!   and the HTTP-triggered `redwood-call`.
//! - [`AzureFunctionsBackend`] — the executor: groups of attempts as messages, their outcomes
//!   found by listing the job's `results/`, failed messages from the poison queue.
//! - [`app`] — writes the function app folder for a program (`host.json`, `function.json`,
//!   the executable).

pub mod app;
mod backend;
mod call;
pub mod config;
pub mod handler;
pub mod message;
mod watch;

pub use backend::{AzureFunctionsBackend, NAME};
pub use config::{FunctionsConfig, FunctionsSettings, Invoke};

/// The queue-triggered function every app has.
pub const TASK_FUNCTION: &str = "redwood-task";
/// The HTTP-triggered function every app has (`invoke = "http"`): the same groups, answered
/// with their outcomes.
pub const CALL_FUNCTION: &str = "redwood-call";
