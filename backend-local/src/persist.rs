//! Durable results with group commit: finished tasks of a job are written together in one
//! packed segment (`jobs/<job>/results/<n>`), and reported finished only once it is stored.

use std::time::SystemTime;

use futures::channel::mpsc::UnboundedSender;
use redwood_core::Storage;
use redwood_core::raw::backend::{Finished, TaskEvent};
use redwood_core::raw::envelope::Outcome;
use redwood_core::raw::pack::PackWriter;
use redwood_core::types::result_ref::ResultLocation;
use redwood_core::{TaskError, TaskErrorKind};
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

/// The most results in one segment.
const MAX_BATCH: usize = 8192;

/// A final outcome waiting to be stored.
#[derive(Debug)]
pub(crate) struct PersistItem {
    pub(crate) task: u64,
    pub(crate) attempt: u32,
    pub(crate) outcome: Outcome,
    pub(crate) started: Option<SystemTime>,
    pub(crate) finished: SystemTime,
    pub(crate) worker: Option<u32>,
}

/// Stores outcomes as they come and forwards them as `Finished` events, until `rx` closes.
///
/// With `early` (a job nobody can attach to), each batch is reported first and stored right
/// after, holding a permit of `early` while it stores so that such writes stay bounded.
pub(crate) async fn persist_loop(
    storage: Storage,
    job: String,
    mut rx: mpsc::UnboundedReceiver<PersistItem>,
    events: UnboundedSender<TaskEvent>,
    early: Option<Arc<Semaphore>>,
) {
    let layout = storage.layout();
    // Segment names are unique per writer, so a job resumed by another process never
    // overwrites what an earlier one stored.
    let writer = redwood_core::raw::binary::sha256_hex(
        format!("{job}/{}/{:?}", std::process::id(), SystemTime::now()).as_bytes(),
    );
    let writer = &writer[..12];
    let mut segment = 0u64;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let mut pack = PackWriter::new();
        let mut encode_failures = Vec::new();
        for (i, item) in batch.iter().enumerate() {
            match item.outcome.to_stored() {
                Ok(bytes) => pack.push(item.task, &bytes),
                Err(e) => encode_failures.push((i, e.to_string())),
            }
        }
        let ranges = pack.ranges();
        let key = layout.result_segment(&job, &format!("{writer}-{segment:06}"));
        segment += 1;
        let bytes = pack.finish();
        let stored = match &early {
            None => store_segment(&storage, &key, bytes).await,
            Some(limit) => {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    return;
                };
                let (storage, key) = (storage.clone(), key.clone());
                tokio::spawn(async move {
                    if let Err(e) = store_segment(&storage, &key, bytes).await {
                        tracing::warn!(key = %key, error = %e, "could not store a reported outcome");
                    }
                    drop(permit);
                });
                Ok(())
            }
        };
        let mut ranges = ranges.into_iter();
        for (i, item) in batch.into_iter().enumerate() {
            let (outcome, location) = match (&stored, encode_failures.iter().find(|(j, _)| *j == i))
            {
                (Ok(()), None) => (
                    item.outcome,
                    ResultLocation {
                        key: key.to_string(),
                        range: ranges.next(),
                    },
                ),
                (Ok(()), Some((_, why))) => {
                    (lost(&job, &item, format!("cannot encode: {why}")), empty())
                }
                (Err(why), _) => (
                    lost(&job, &item, format!("result could not be stored: {why}")),
                    empty(),
                ),
            };
            let finished = Finished {
                task: item.task,
                attempt: item.attempt,
                outcome,
                location,
                started: item.started,
                finished: item.finished,
                worker: item.worker,
                requeues: 0,
            };
            if events
                .unbounded_send(TaskEvent::Finished(Box::new(finished)))
                .is_err()
            {
                tracing::debug!(job, "nobody listens to the job's events any more");
            }
        }
    }
}

fn empty() -> ResultLocation {
    ResultLocation {
        key: String::new(),
        range: None,
    }
}

fn lost(job: &str, item: &PersistItem, message: String) -> Outcome {
    let mut e = TaskError::new(TaskErrorKind::Lost, message);
    e.job = job.to_string();
    e.task = item.task;
    e.attempt = item.attempt;
    if let Outcome::Err(original) = &item.outcome {
        e.function = original.function.clone();
    }
    Outcome::Err(e)
}

/// Stores a segment (the store retries transient failures); the error as text.
async fn store_segment(
    storage: &Storage,
    key: &object_store::path::Path,
    bytes: Vec<u8>,
) -> Result<(), String> {
    storage.put(key, bytes).await.map_err(|e| e.to_string())
}
