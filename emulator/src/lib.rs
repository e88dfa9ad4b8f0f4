#![deny(missing_docs)]
//! Local stand-ins for Azure that Redwood's tests (and users) start themselves: a real Azurite
//! ([`azurite`]).

pub mod azurite;
