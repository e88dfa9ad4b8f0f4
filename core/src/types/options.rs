//! [`TaskOptions`]: per-call retries, backoff, timeout and concurrency.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::mpi::MpiShape;

/// Options for the tasks of one `call` or `map`. Backends declare which they honour; asking a
/// backend for an option it did not declare is an `Unsupported` error, never silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskOptions {
    /// How many times a failed task is run again (0: never).
    pub retries: u32,
    /// The wait before the first retry; it doubles on each further retry.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// The longest one attempt may run before its worker is killed.
    pub timeout: Option<Duration>,
    /// The most tasks of this job running at once.
    pub concurrency: Option<usize>,
    /// Runs each task as one multi-node MPI task (backends that declare `mpi`).
    #[serde(default)]
    pub mpi: Option<MpiShape>,
    /// Runs every task of the job in this region of the session (by its `[[regions]]` name);
    /// `None`: the driver places them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// How many of the job's tasks one platform task runs, one after another in one warm
    /// worker (`azure-batch`: tasks per Batch task); `None`: the backend chooses from measured
    /// task times. Backends whose tasks already run in warm workers (local, Functions' groups)
    /// need no packing and take it as a group size or not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<u32>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            retries: 0,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            timeout: None,
            concurrency: None,
            mpi: None,
            region: None,
            pack: None,
        }
    }
}

impl TaskOptions {
    /// The defaults: no retry, no timeout, no concurrency limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pins the job's tasks to one region of the session (its `[[regions]]` name, or the
    /// name given to [`crate::Region::new`]); an unknown name is refused when the job is
    /// submitted, and a pinned region that goes down ends the tasks as lost.
    pub fn region(mut self, name: impl Into<String>) -> Self {
        self.region = Some(name.into());
        self
    }

    /// Runs a failed task up to `retries` more times.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the first backoff (doubled on each retry, capped by `max_backoff`).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Caps the backoff between attempts.
    pub fn max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// Kills an attempt that runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs each task as an MPI task over `nodes` nodes with `procs_per_node` ranks on each
    /// (on Azure Batch: a multi-instance task on a pool with inter-node communication). Every
    /// rank runs the function, sees its place with [`crate::context::mpi`], and rank 0's return
    /// value is the task's result.
    pub fn mpi(mut self, nodes: u32, procs_per_node: u32) -> Self {
        self.mpi = Some(MpiShape {
            nodes,
            procs_per_node,
        });
        self
    }

    /// Runs at most `limit` tasks of the job at once.
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// Runs `n` tasks per platform task (see the field; `1` turns packing off). Per-task
    /// semantics stay: each task has its own attempts, retries, timeout, outcome and events.
    pub fn pack(mut self, n: u32) -> Self {
        self.pack = Some(n.max(1));
        self
    }

    /// The wait before `attempt` (2 is the first retry, which waits `backoff`; each later one
    /// waits twice as long as the one before, up to `max_backoff`).
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(2));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// `start + wait`, or a time a century away when that overflows (a timeout or backoff of
/// `Duration::MAX` means "never").
pub fn saturating_after(start: std::time::Instant, wait: Duration) -> std::time::Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start
        .checked_add(wait)
        .or_else(|| start.checked_add(CENTURY))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_waits_saturate() {
        let now = std::time::Instant::now();
        assert!(saturating_after(now, Duration::MAX) > now + Duration::from_secs(3600));
        let o = TaskOptions::new()
            .backoff(Duration::MAX)
            .max_backoff(Duration::MAX);
        assert_eq!(o.backoff_for(60), Duration::MAX);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let o = TaskOptions::new()
            .backoff(Duration::from_millis(10))
            .max_backoff(Duration::from_millis(50));
        assert_eq!(o.backoff_for(2), Duration::from_millis(10));
        assert_eq!(o.backoff_for(3), Duration::from_millis(20));
        assert_eq!(o.backoff_for(4), Duration::from_millis(40));
        assert_eq!(o.backoff_for(5), Duration::from_millis(50));
        assert_eq!(o.backoff_for(40), Duration::from_millis(50));
    }
}
