#![deny(missing_docs)]
//! Redwood's Azure backends: `azure-batch` ([`batch::AzureBatchBackend`]), with its own Batch
//! REST client ([`batch::client`]) and the worker mode its tasks start in ([`batch::worker`]).

pub mod batch;
