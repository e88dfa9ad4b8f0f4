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
    /// The answer to a `Fetch`.
    Fetched {
        /// The fetch request id.
        id: u64,
        /// The bytes, or why they could not be read.
        result: Result<serde_bytes::ByteBuf, String>,
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

/// The frame of a `ToWorker::Fetched` answer, encoded from borrowed bytes (no copy of a large
/// object before the frame itself).
pub fn fetched_frame(id: u64, result: Result<&[u8], &str>) -> io::Result<Vec<u8>> {
    /// Serializes exactly like [`ToWorker`] (same variants, same order, same field types).
    #[derive(Serialize)]
    enum Borrowed<'a> {
        #[allow(dead_code)]
        Run,
        Fetched {
            id: u64,
            result: Result<&'a serde_bytes::Bytes, &'a str>,
        },
    }
    let size = result.map_or(0, <[u8]>::len) + 64;
    encode_frame_sized(
        &Borrowed::Fetched {
            id,
            result: result.map(serde_bytes::Bytes::new),
        },
        size,
    )
}

/// Encodes a message as one frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    encode_frame_sized(msg, 64)
}

/// Encodes a message as one frame, reserving `size_hint` bytes up front (no regrowth for
/// large payloads).
fn encode_frame_sized<T: Serialize>(msg: &T, size_hint: usize) -> io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(4 + size_hint);
    frame.extend_from_slice(&[0u8; 4]);
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

/// Decodes a frame body.
pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<T> {
    bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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
    fn borrowed_fetched_frame_decodes_as_to_worker() {
        for result in [Ok(&b"payload"[..]), Err("missing")] {
            let frame = fetched_frame(7, result).unwrap();
            let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - 4);
            match decode_body::<ToWorker>(&frame[4..]).unwrap() {
                ToWorker::Fetched { id, result: got } => {
                    assert_eq!(id, 7);
                    assert_eq!(
                        got.as_ref().map(|b| b.as_slice()).map_err(|e| e.as_str()),
                        result
                    );
                }
                other => panic!("decoded {other:?}"),
            }
        }
    }
}
