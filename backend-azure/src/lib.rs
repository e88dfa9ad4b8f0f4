#![deny(missing_docs)]
//! Redwood's Azure backends. This release has the Azure Batch REST client ([`batch::client`]);
//! the `azure-batch` compute backend built on it follows.

pub mod batch;
