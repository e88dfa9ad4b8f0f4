//! Records still being written in the background — a `call`'s record, a job's last outcomes
//! and events — so a program that ends right after its last result can wait for them instead of
//! losing them when the runtime shuts down.
//!
//! Each write registers itself with a test of whether its job has finished. A flush waits for
//! the writes of finished jobs only: a job that still runs would hold the program up for as long
//! as it runs, and its record cannot be complete anyway.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

type Ready = Box<dyn Fn() -> bool + Send + Sync>;

struct Entry {
    /// The session that started the write (its address as an id).
    session: usize,
    /// Whether the write's job has finished, so the write is under way or about to be.
    ready: Ready,
}

#[derive(Default)]
struct Registry {
    next: u64,
    entries: HashMap<u64, Entry>,
}

fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);
    // The registry holds no invariant a panic could break half-way, so a poisoned lock is
    // taken over.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

fn changed() -> &'static Notify {
    static CHANGED: LazyLock<Notify> = LazyLock::new(Notify::new);
    &CHANGED
}

/// A registered background write; dropping it (the write ended, or its task was dropped)
/// unregisters it.
pub(crate) struct PendingWrite {
    id: u64,
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        registry().entries.remove(&self.id);
        changed().notify_waiters();
    }
}

/// Registers a background write of `session` that matters once `ready()` is true.
pub(crate) fn register(
    session: usize,
    ready: impl Fn() -> bool + Send + Sync + 'static,
) -> PendingWrite {
    let mut r = registry();
    let id = r.next;
    r.next += 1;
    r.entries.insert(
        id,
        Entry {
            session,
            ready: Box::new(ready),
        },
    );
    PendingWrite { id }
}

/// How many writes of finished jobs are still under way (of one session, or of all).
fn ready_count(session: Option<usize>) -> usize {
    registry()
        .entries
        .values()
        .filter(|e| session.is_none_or(|s| s == e.session) && (e.ready)())
        .count()
}

/// Waits until no write of a finished job is under way (of one session, or of all), at most
/// `limit`. Returns how many were still under way when the time ran out (0: all written).
pub(crate) async fn wait_written(session: Option<usize>, limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = changed().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let left = ready_count(session);
        if left == 0 {
            return 0;
        }
        // A job may finish without any write ending; look again now and then.
        let wake = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return ready_count(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn waits_for_finished_jobs_only() {
        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        let running = register(1, move || f.load(Ordering::SeqCst));
        // A job still running does not hold the flush up.
        assert_eq!(wait_written(Some(1), Duration::from_secs(5)).await, 0);
        finished.store(true, Ordering::SeqCst);
        assert_eq!(wait_written(Some(1), Duration::from_millis(100)).await, 1);
        // Another session's flush does not wait for it.
        assert_eq!(wait_written(Some(2), Duration::from_secs(5)).await, 0);
        let flush = tokio::spawn(wait_written(Some(1), Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(running);
        assert_eq!(flush.await.unwrap(), 0);
    }
}
