//! The link-time registry of remote functions (`inventory`), and the invoke wrappers
//! `#[redwood::remote]` generates.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Serialize, de::DeserializeOwned};

use crate::codec;
use crate::types::remote::Fallible;

/// Why invoking a remote function did not give a value.
#[derive(Debug, Clone, PartialEq)]
pub enum InvokeError {
    /// The arguments could not be decoded, or the result encoded.
    Codec(String),
    /// The function returned `Err`; this is its `to_string()`.
    User(String),
}

/// Decodes the arguments, calls the function, encodes the result.
pub type InvokeFn = fn(&[u8]) -> Result<Vec<u8>, InvokeError>;

/// One registered remote function.
#[derive(Debug)]
pub struct Registration {
    /// Stable id: module path and name.
    pub id: &'static str,
    /// Hash of the argument and return types.
    pub signature: u64,
    /// The invoke wrapper.
    pub invoke: InvokeFn,
}

impl Registration {
    /// Used by `#[redwood::remote]`.
    pub const fn new(id: &'static str, signature: u64, invoke: InvokeFn) -> Self {
        Registration {
            id,
            signature,
            invoke,
        }
    }
}

inventory::collect!(Registration);

/// Every id registered, with its registrations (more than one when two remote functions of a
/// module share a name, e.g. associated functions of two types).
fn table() -> &'static HashMap<&'static str, Vec<&'static Registration>> {
    static TABLE: OnceLock<HashMap<&'static str, Vec<&'static Registration>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: HashMap<&'static str, Vec<&'static Registration>> = HashMap::new();
        for r in inventory::iter::<Registration> {
            table.entry(r.id).or_default().push(r);
        }
        table
    })
}

/// The registration of a function id, if this binary has exactly one.
pub fn lookup(id: &str) -> Option<&'static Registration> {
    match table().get(id).map(Vec::as_slice) {
        Some([one]) => Some(*one),
        _ => None,
    }
}

/// Refuses a function id that two remote functions of this binary share (the worker could not
/// tell which to run).
pub fn check_unique(id: &str) -> crate::error::Result<()> {
    match table().get(id) {
        Some(all) if all.len() > 1 => Err(crate::error::Error::new(
            crate::error::ErrorKind::InvalidInput,
            format!(
                "{} remote functions are named `{id}` (a remote function's id is its module path \
                 and name, also inside an `impl`): rename one of them",
                all.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// The ids of every remote function in this binary, sorted.
pub fn registered_ids() -> Vec<&'static str> {
    let mut ids: Vec<_> = table().keys().copied().collect();
    ids.sort_unstable();
    ids
}

/// Decodes an argument tuple (used by generated invoke wrappers).
pub fn decode_args<A: DeserializeOwned>(bytes: &[u8]) -> Result<A, InvokeError> {
    codec::decode(bytes).map_err(|e| InvokeError::Codec(format!("arguments: {e}")))
}

/// Encodes a plain return value (used by generated invoke wrappers).
pub fn encode_output<T: Serialize>(value: T) -> Result<Vec<u8>, InvokeError> {
    codec::encode(&value).map_err(|e| InvokeError::Codec(format!("result: {e}")))
}

/// Encodes a `Result` return value; `Err(e)` becomes [`InvokeError::User`].
pub fn encode_fallible<R: Fallible>(value: R) -> Result<Vec<u8>, InvokeError> {
    encode_output(value.into_outcome().map_err(InvokeError::User)?)
}
