//! What tasks of one function took lately, for backends that size their groups (Functions'
//! messages, Batch's packs) from it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The task times of one function: the median of the last [`TaskTimes::KEPT`], once there
/// are [`TaskTimes::ENOUGH`] (a cold start's first task, which waited for its instance's
/// workers, does not make later groups small).
#[derive(Debug, Default)]
pub(crate) struct TaskTimes {
    recent: Mutex<std::collections::VecDeque<u64>>,
    median_us: AtomicU64,
}

impl TaskTimes {
    const KEPT: usize = 64;
    const ENOUGH: usize = 8;

    pub(crate) fn add(&self, took: impl Iterator<Item = u64>) {
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        for t in took {
            if recent.len() == Self::KEPT {
                recent.pop_front();
            }
            recent.push_back(t);
        }
        if recent.len() >= Self::ENOUGH {
            let mut sorted: Vec<u64> = recent.iter().copied().collect();
            sorted.sort_unstable();
            self.median_us
                .store(sorted[sorted.len() / 2], Ordering::Relaxed);
        }
    }

    /// The typical task time in µs; 0 while unknown.
    pub(crate) fn typical_us(&self) -> u64 {
        self.median_us.load(Ordering::Relaxed)
    }
}

/// `t` in µs since the Unix epoch, the unit task times are stored in (0 before it, saturating
/// far after).
pub(crate) fn epoch_micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
