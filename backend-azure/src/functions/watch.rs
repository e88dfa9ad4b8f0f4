//! How a job's attempts end on Functions: its `results/` prefix is listed at the poll interval
//! (one request for every stored group, not one per task) and each new group segment is read;
//! the app's poison queue is looked at every second for this job's messages, whose tasks then
//! end with the handler's last note.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use futures::channel::mpsc::UnboundedSender;
use redwood_core::raw::envelope::Outcome;
use redwood_core::raw::executor::{AttemptEnd, Ended};
use redwood_core::raw::pack::read_pack;
use redwood_core::types::result_ref::ResultLocation;
use redwood_core::{TaskError, TaskErrorKind};
use tokio::sync::Notify;

use super::backend::Shared;
use super::message::{GroupTimes, TIMES_KEY, TaskMessage, segment_attempt};
use crate::queue::Queue;
use crate::task_times::TaskTimes;

/// How often the poison queue is looked at.
const POISON_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two listings of a job whose groups take long.
const SLOWEST_POLL: Duration = Duration::from_secs(1);

/// The watcher's side of a job: the attempts out, where their ends go, and whether the job is
/// over.
pub(super) struct Watch {
    /// Tasks out, with their attempt.
    pub(super) outstanding: Mutex<HashMap<u64, u32>>,
    pub(super) ends: UnboundedSender<AttemptEnd>,
    /// The job was closed or stopped.
    pub(super) done: AtomicBool,
    /// New attempts, or the job is over.
    pub(super) wake: Notify,
    /// What the backend learns of the function's task times from stored groups.
    pub(super) task_times: Arc<TaskTimes>,
    /// The segments read already (by listing, or from an HTTP invocation's answer).
    pub(super) seen: Mutex<HashSet<String>>,
}

impl Watch {
    /// Takes `(task, attempt)` out if it is out; whether it was.
    fn take(&self, task: u64, attempt: u32) -> bool {
        let Ok(mut o) = self.outstanding.lock() else {
            return false;
        };
        if o.get(&task) == Some(&attempt) {
            o.remove(&task);
            true
        } else {
            false
        }
    }

    fn has_seen(&self, segment: &str) -> bool {
        self.seen
            .lock()
            .map(|s| s.contains(segment))
            .unwrap_or(false)
    }

    /// Marks a segment read; whether it was new.
    fn mark_seen(&self, segment: &str) -> bool {
        self.seen
            .lock()
            .map(|mut s| s.insert(segment.to_string()))
            .unwrap_or(false)
    }

    fn is_idle(&self) -> bool {
        self.outstanding
            .lock()
            .map(|o| o.is_empty())
            .unwrap_or(true)
    }

    /// Ends every task of a group that is still out with an error of `kind`.
    pub(super) fn end_group(&self, message: &TaskMessage, kind: TaskErrorKind, why: String) {
        for t in &message.tasks {
            if !self.take(t.task, message.attempt) {
                continue;
            }
            let mut e = TaskError::new(kind, why.clone());
            e.job = message.job.clone();
            e.function = message.function.clone();
            e.task = t.task;
            e.attempt = message.attempt;
            let end = AttemptEnd::new(t.task, message.attempt, Ended::Reported(Outcome::Err(e)));
            let _ = self.ends.unbounded_send(end);
        }
    }

    /// Adds a stored group's task times to what is known of the function.
    fn learn(&self, times: &GroupTimes) {
        let took = times
            .tasks
            .iter()
            .map(|&(_, started, finished)| finished.saturating_sub(started).max(1));
        self.task_times.add(took);
    }
}

/// Watches `shared`'s job until it is over.
pub(super) async fn watch(shared: Arc<Shared>, poison: Arc<Queue>) {
    let w = &shared.watch;
    let prefix = shared.storage.layout().result_segments(&shared.spec.id);
    let mut last_poison = Instant::now();
    let fastest = shared.settings.poll_interval;
    let mut interval = fastest;
    loop {
        if w.done.load(Ordering::SeqCst) {
            return;
        }
        if w.is_idle() {
            let _ = tokio::time::timeout(Duration::from_secs(1), w.wake.notified()).await;
            continue;
        }
        let mut news = false;
        match shared.storage.list(&prefix).await {
            Ok(keys) => {
                for key in keys {
                    let Some(name) = key.filename().map(str::to_string) else {
                        continue;
                    };
                    if w.has_seen(&name) {
                        continue;
                    }
                    let Some(attempt) = segment_attempt(&name) else {
                        w.mark_seen(&name); // the driver's own segments
                        continue;
                    };
                    match shared.storage.get(&key).await {
                        Ok(bytes) => {
                            news |= read_group(&shared, &key, attempt, &bytes);
                        }
                        Err(e) => tracing::debug!(%key, "a stored group is not readable yet: {e}"),
                    }
                }
            }
            Err(e) => tracing::warn!(job = %shared.spec.id, "cannot list the job's outcomes: {e}"),
        }
        if last_poison.elapsed() >= POISON_EVERY {
            last_poison = Instant::now();
            check_poison(&shared, &poison).await;
        }
        interval = if news {
            fastest
        } else {
            (interval + interval / 4).min(SLOWEST_POLL.max(fastest))
        };
        let _ = tokio::time::timeout(interval, w.wake.notified()).await;
    }
}

/// Ends the attempts a stored group (`key`, holding attempt `attempt`) holds, once; whether
/// it was new.
pub(super) fn read_group(
    shared: &Shared,
    key: &object_store::path::Path,
    attempt: u32,
    bytes: &bytes::Bytes,
) -> bool {
    let w = &shared.watch;
    let Some(name) = key.filename() else {
        return false;
    };
    if !w.mark_seen(name) {
        return false;
    }
    let entries = match read_pack(bytes) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(%key, "a stored group is corrupt: {e}");
            return true;
        }
    };
    let times: GroupTimes = entries
        .iter()
        .find(|e| e.key == TIMES_KEY)
        .and_then(|e| serde_json::from_slice(&e.bytes).ok())
        .unwrap_or_default();
    w.learn(&times);
    let when: HashMap<u64, (u64, u64)> = times.tasks.iter().map(|&(t, s, f)| (t, (s, f))).collect();
    let at = |micros: u64| SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
    for entry in entries {
        if entry.key >= shared.spec.task_count || !w.take(entry.key, attempt) {
            continue;
        }
        let ended = match Outcome::from_stored(&entry.bytes) {
            Ok(outcome) => Ended::Stored {
                outcome,
                location: ResultLocation::new(&shared.storage, key.to_string(), Some(entry.range)),
            },
            Err(e) => {
                let mut error = TaskError::new(
                    TaskErrorKind::Decode,
                    format!("its stored outcome is corrupt: {e}"),
                );
                error.job = shared.spec.id.clone();
                error.function = shared.spec.function.clone();
                error.task = entry.key;
                error.attempt = attempt;
                Ended::Reported(Outcome::Err(error))
            }
        };
        let mut end = AttemptEnd::new(entry.key, attempt, ended);
        if let Some(&(started, finished)) = when.get(&entry.key) {
            end.started = Some(at(started));
            end.finished = at(finished);
        }
        end.node = times.instance.map(|pid| format!("instance {pid}"));
        let _ = w.ends.unbounded_send(end);
    }
    true
}

/// Ends the tasks of this job's messages in the poison queue, with the handler's note; other
/// jobs' messages are left for their clients.
async fn check_poison(shared: &Shared, poison: &Queue) {
    let received = match poison.receive(32, Duration::from_secs(10)).await {
        Ok(r) => r,
        Err(e) if e.kind() == redwood_core::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::debug!("cannot read the poison queue: {e}");
            return;
        }
    };
    for m in received {
        let text = if shared.settings.base64 {
            match base64::engine::general_purpose::STANDARD.decode(m.text.trim()) {
                Ok(b) => String::from_utf8_lossy(&b).to_string(),
                Err(_) => continue,
            }
        } else {
            m.text.clone()
        };
        let Ok(message) = TaskMessage::from_trigger(&serde_json::Value::String(text)) else {
            continue;
        };
        if message.job != shared.spec.id {
            continue;
        }
        let name = message.segment_name();
        let note_key = shared
            .storage
            .layout()
            .group(&shared.spec.id, &format!("{name}.note"));
        let note = match shared.storage.get(&note_key).await {
            Ok(b) => String::from_utf8_lossy(&b).to_string(),
            Err(_) => format!(
                "no delivery left a note ({})",
                shared.settings.taker.silent_delivery()
            ),
        };
        let why = format!(
            "its queue message failed every delivery allowed (maxDequeueCount) and was \
             moved to the poison queue `{}`; last: {note}",
            poison.name()
        );
        tracing::warn!(job = %shared.spec.id, group = name, "{why}");
        shared.watch.end_group(&message, TaskErrorKind::Crash, why);
        if let Err(e) = poison.delete(&m).await {
            tracing::debug!("cannot delete a poison message: {e}");
        }
    }
}
