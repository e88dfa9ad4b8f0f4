//! Azure Batch: our own small REST client for the data-plane API (no maintained Rust crate
//! covers the current API).

mod auth;
pub mod client;
mod error;

pub use client::{BatchClient, BatchClientBuilder, TaskAddResult};
