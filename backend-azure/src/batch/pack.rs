//! Packed tasks: one Batch task runs several Redwood tasks of a job, one after another, in one
//! warm worker on its node ([`super::pack_worker`]), storing each outcome as it finishes. Every
//! Batch task starts a process, loads the program and opens storage, and the service takes its
//! own time to schedule it: for short tasks that costs more than the work.
//!
//! Per-task semantics stay as they are: each task keeps its attempt number and its own result
//! key; a failed task is retried on its own (the job driver launches its next attempt); a
//! timeout kills only that task's worker (the pack goes on in a new one); a pack Batch runs
//! again after losing its node skips the outcomes stored before.
//!
//! Sizes: `TaskOptions::pack(n)` or the region's `pack = n` force a size. Otherwise
//! ([`PackPolicy::Auto`]) a launch is cut into one pack per task slot at first, and once task
//! times are known into packs of about [`TARGET`] of work; an automatic pack stops taking tasks
//! after [`BUDGET`] and hands the rest back ("released"), which the monitor launches again in
//! packs sized from the times it now knows — so a long task ends packing for its job.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The work an automatic pack aims at.
pub(crate) const TARGET: Duration = Duration::from_secs(3);
/// How long an automatic pack takes new tasks; the rest are released.
pub(crate) const BUDGET: Duration = Duration::from_secs(6);
/// The most tasks in one pack: its description, with a signed URL per task (~300 bytes),
/// travels in one environment variable, which Linux caps at 128 KiB.
pub(crate) const MAX_PACK: usize = 200;

/// How a job's tasks are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackPolicy {
    /// `n` tasks per Batch task (1: one each, as without packing).
    Fixed(usize),
    /// Sized from the pool's slots and measured task times.
    Auto,
}

impl PackPolicy {
    /// The size of the packs of a launch of `n` tasks: fixed, or (auto) about [`TARGET`] of
    /// work once the typical task time is known, else one pack per slot.
    pub(crate) fn size(self, n: usize, slots: Option<u64>, typical_us: u64) -> usize {
        match self {
            PackPolicy::Fixed(size) => size.clamp(1, MAX_PACK),
            PackPolicy::Auto => {
                let by_time = u64::try_from(TARGET.as_micros())
                    .unwrap_or(u64::MAX)
                    .checked_div(typical_us)
                    .map(|k| usize::try_from(k).unwrap_or(MAX_PACK));
                let slots = usize::try_from(slots.unwrap_or(8).max(1)).unwrap_or(1);
                let by_slots = n.div_ceil(slots);
                by_time.unwrap_or(by_slots).min(by_slots).clamp(1, MAX_PACK)
            }
        }
    }

    /// How long a pack of this policy takes new tasks (`None`: all of them).
    pub(crate) fn budget(self) -> Option<Duration> {
        match self {
            PackPolicy::Fixed(_) => None,
            PackPolicy::Auto => Some(BUDGET),
        }
    }
}

/// A pack as its Batch task describes it to the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackSpec {
    /// Its tasks, in the order they run.
    pub tasks: Vec<PackTask>,
    /// A write-only SAS URL on the pack's report.
    pub report_url: String,
    /// Take no new task after this long (milliseconds); the rest are released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u64>,
}

/// One task of a pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackTask {
    /// The task's index.
    pub task: u64,
    /// Its byte range in the job's inputs.
    pub range: (u64, u64),
    /// Its arguments inline (base64), when small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// A write-only SAS URL on exactly this attempt's result key.
    pub result_url: String,
}

/// What a pack stores once it has run: when each task ran, and what it left to others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PackReport {
    /// `(task, started, finished)`, microseconds since the Unix epoch.
    pub times: Vec<(u64, u64, u64)>,
    /// Tasks it did not start (its budget was spent): they are launched again.
    pub released: Vec<u64>,
    /// Tasks whose outcome was stored before it started (a run after a lost node).
    pub skipped: Vec<u64>,
}

/// The Batch task id of a pack of tasks `first..=last` at `attempt`; `seq` tells apart the
/// packs of tasks launched again after a release.
pub(crate) fn pack_id(first: u64, last: u64, attempt: u32, seq: u32) -> String {
    let mut id = format!("p{first}-{last}");
    if attempt > 1 {
        id.push_str(&format!("-r{}", attempt - 1));
    }
    if seq > 0 {
        id.push_str(&format!("-s{seq}"));
    }
    id
}

/// The tasks and attempt of a pack id made by [`pack_id`].
pub(crate) fn parse_pack_id(id: &str) -> Option<(RangeInclusive<u64>, u32)> {
    let mut parts = id.strip_prefix('p')?.split('-');
    let first: u64 = parts.next()?.parse().ok()?;
    let last: u64 = parts.next()?.parse().ok()?;
    let mut attempt = 1u32;
    for part in parts {
        if let Some(r) = part.strip_prefix('r') {
            attempt = r.parse::<u32>().ok()?.checked_add(1)?;
        } else if let Some(s) = part.strip_prefix('s') {
            s.parse::<u32>().ok()?;
        } else {
            return None;
        }
    }
    (first <= last).then_some((first..=last, attempt))
}

/// Cuts attempts (task, attempt) into packs of at most `size`: runs of consecutive tasks of
/// one attempt, so that each pack's id can name its tasks. Returns index lists into `items`.
pub(crate) fn cut(items: &[(u64, u32)], size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (items[i].1, items[i].0));
    let mut packs: Vec<Vec<usize>> = Vec::new();
    for i in order {
        let extends = packs.last().is_some_and(|p| {
            let last = items[p[p.len() - 1]];
            p.len() < size.max(1)
                && last.1 == items[i].1
                && last.0.checked_add(1) == Some(items[i].0)
        });
        match packs.last_mut() {
            Some(p) if extends => p.push(i),
            _ => packs.push(vec![i]),
        }
    }
    packs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_ids_round_trip() {
        assert_eq!(pack_id(3, 9, 1, 0), "p3-9");
        assert_eq!(pack_id(3, 9, 2, 0), "p3-9-r1");
        assert_eq!(pack_id(3, 9, 1, 7), "p3-9-s7");
        assert_eq!(parse_pack_id("p3-9"), Some((3..=9, 1)));
        assert_eq!(parse_pack_id("p3-9-r1-s7"), Some((3..=9, 2)));
        assert_eq!(parse_pack_id("p3-9-s7"), Some((3..=9, 1)));
        assert_eq!(parse_pack_id("p9-3"), None);
        assert_eq!(parse_pack_id("p3-9-x1"), None);
        assert_eq!(parse_pack_id("t3"), None);
        assert_eq!(parse_pack_id("p3"), None);
    }

    #[test]
    fn packs_are_runs_of_consecutive_tasks_of_one_attempt() {
        let items = [
            (0, 1),
            (1, 1),
            (2, 1),
            (5, 1),
            (6, 1),
            (3, 2),
            (4, 2),
            (7, 1),
        ];
        let packs = cut(&items, 2);
        let named: Vec<Vec<(u64, u32)>> = packs
            .iter()
            .map(|p| p.iter().map(|&i| items[i]).collect())
            .collect();
        assert_eq!(
            named,
            vec![
                vec![(0, 1), (1, 1)],
                vec![(2, 1)],
                vec![(5, 1), (6, 1)],
                vec![(7, 1)],
                vec![(3, 2), (4, 2)],
            ]
        );
        assert_eq!(cut(&items, 1).len(), items.len());
    }

    #[test]
    fn automatic_sizes_fill_the_slots_then_follow_task_times() {
        let auto = PackPolicy::Auto;
        // Unknown times: one pack per slot.
        assert_eq!(auto.size(10_000, Some(32), 0), MAX_PACK);
        assert_eq!(auto.size(3_200, Some(32), 0), 100);
        assert_eq!(auto.size(10, Some(32), 0), 1);
        // Known: about TARGET of work, never more than one pack per slot.
        assert_eq!(auto.size(10_000, Some(32), 50_000), 60);
        assert_eq!(auto.size(3_200, Some(32), 10), 100);
        // A task longer than TARGET: one per Batch task.
        assert_eq!(auto.size(10_000, Some(32), 10_000_000), 1);
        assert_eq!(PackPolicy::Fixed(7).size(3, Some(32), 0), 7);
        assert_eq!(PackPolicy::Fixed(0).size(3, None, 0), 1);
        assert_eq!(auto.budget(), Some(BUDGET));
        assert_eq!(PackPolicy::Fixed(7).budget(), None);
    }
}
