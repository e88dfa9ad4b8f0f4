#![deny(missing_docs)]
//! Local stand-ins for Azure that Redwood's tests (and users) start themselves: a real Azurite
//! ([`azurite`]) and a fault-injecting HTTP proxy ([`fault_proxy`]).

pub mod azurite;
pub mod fault_proxy;
