//! What backend authors use: the executor contract, capabilities, attempt records, envelopes, packed objects, the function
//! registry and the worker runtime. Users rarely need this module.

pub mod backend;
pub mod binary;
pub mod call_record;
pub mod envelope;
pub mod events;
pub mod executor;
pub mod factory;
pub mod manifest;
pub mod pack;
pub mod registry;
pub mod worker;
