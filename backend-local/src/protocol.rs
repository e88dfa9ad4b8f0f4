//! The messages between the client and a worker process, framed as a little-endian `u32`
//! length and a bincode body. Tasks go down the worker's stdin; replies come up a private pipe.

use std::io::{self, Read, Write};

use redwood_core::raw::envelope::{Outcome, TaskEnvelope};
use serde::{Deserialize, Serialize};

/// The largest frame either side accepts (1 GiB plus headroom).
pub const MAX_FRAME: usize = (1 << 30) + (1 << 20);

/// Client → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run a task; `seq` comes back in its `Done`.
    Run {
        /// Dispatch sequence number.
        seq: u64,
        /// The task.
        envelope: TaskEnvelope,
    },
    /// The answer to a `Fetch`: on success, `len` raw bytes follow this frame (no encoding, so
    /// a large object is neither copied into a message nor decoded from one).
    Fetched {
        /// The fetch request id.
        id: u64,
        /// The payload's length, or why it could not be read.
        result: Result<u64, String>,
    },
    /// The answer to a `Fetch` of a large object: read it from this file (shared memory), then
    /// send `Released`.
    FetchedFile {
        /// The fetch request id.
        id: u64,
        /// The file holding the object.
        path: String,
        /// The object's length.
        len: u64,
    },
}

/// Worker → client.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// The worker started and knows its binary.
    Ready {
        /// Its process id.
        pid: u32,
        /// The sha256 of its executable.
        binary: String,
    },
    /// A task finished; tasks finish in the order they were sent.
    Done {
        /// The dispatch sequence number of the task.
        seq: u64,
        /// The outcome.
        outcome: Outcome,
    },
    /// The worker read the file of a `FetchedFile`; the client may delete it.
    Released {
        /// The fetch request id.
        id: u64,
    },
    /// The running task needs an object from storage (a broadcast value, a result).
    Fetch {
        /// Request id, echoed in `Fetched`.
        id: u64,
        /// The object key.
        key: String,
        /// The byte range, or the whole object.
        range: Option<(u64, u64)>,
    },
}

/// Encodes a message as one frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 4];
    bincode::serde::encode_into_std_write(msg, &mut frame, bincode::config::standard())
        .map_err(io::Error::other)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes is larger than the {MAX_FRAME}-byte frame limit"),
        ));
    }
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

/// Decodes a frame body (with the codec's limit on the lengths inside).
pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<T> {
    redwood_core::codec::decode(body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Reads one frame body (blocking); `None` at a clean end of stream.
pub fn read_frame(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Writes one message and flushes (blocking).
pub fn write_message<T: Serialize>(writer: &mut impl Write, msg: &T) -> io::Result<()> {
    writer.write_all(&encode_frame(msg)?)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frame = encode_frame(&ToWorker::Fetched {
            id: 7,
            result: Ok(1 << 30),
        })
        .unwrap();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let mut reader = &frame[..];
        let body = read_frame(&mut reader).unwrap().unwrap();
        match decode_body::<ToWorker>(&body).unwrap() {
            ToWorker::Fetched {
                id: 7,
                result: Ok(n),
            } => assert_eq!(n, 1 << 30),
            other => panic!("decoded {other:?}"),
        }
        assert!(read_frame(&mut reader).unwrap().is_none());
    }
}
