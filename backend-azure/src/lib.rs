#![deny(missing_docs)]
//! Redwood's Azure pieces: Azure Blob storage (`az://`, [`blob`]), and the `azure-batch` backend
//! ([`batch::AzureBatchBackend`]) with its own Batch REST client ([`batch::client`]) and the
//! worker mode its tasks start in ([`batch::worker`]).

pub mod account;
pub mod batch;
pub mod blob;
mod env;
pub mod functions;
mod group_run;
mod http_client;
pub mod queue;
pub mod sas;
mod sas_io;
mod task_inputs;
mod task_thread;
mod task_times;
