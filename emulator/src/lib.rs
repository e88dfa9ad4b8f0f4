#![deny(missing_docs)]
//! Local stand-ins for Azure that Redwood's tests (and users) start themselves: a real Azurite
//! ([`azurite`]), a fault-injecting HTTP proxy ([`fault_proxy`]) and an Azure Batch service
//! ([`batch`]), and an Azure Functions host for custom handlers ([`functions`]).

pub mod azurite;
pub mod batch;
pub mod cli;
pub mod docker;
pub mod fault_proxy;
pub mod functions;
pub mod gcs;
pub mod python_env;
pub mod s3;
