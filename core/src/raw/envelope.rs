//! What travels to a worker (the [`TaskEnvelope`]) and what comes back (the [`Outcome`]).

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Result;
use crate::types::task_error::TaskError;

/// One task as a worker receives it: which function, of which binary, with which arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEnvelope {
    /// The job id.
    pub job: String,
    /// The task's index in its job.
    pub task: u64,
    /// Which attempt this is (1 is the first).
    pub attempt: u32,
    /// The remote function's id.
    pub function: String,
    /// The signature hash the caller expects.
    pub signature: u64,
    /// The sha256 of the binary the caller runs; the worker must run the same one.
    pub binary: String,
    /// The bincode-encoded argument tuple.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
}

/// A finished attempt: the encoded value, or the failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The bincode-encoded value the function returned.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// What went wrong.
    Err(TaskError),
}

impl Outcome {
    /// The stored form: version byte, then the outcome.
    pub fn to_stored(&self) -> Result<Vec<u8>> {
        codec::encode_versioned(self)
    }

    /// Reads the stored form.
    pub fn from_stored(bytes: &[u8]) -> Result<Outcome> {
        codec::decode_versioned(bytes)
    }

    /// Whether the attempt succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}
