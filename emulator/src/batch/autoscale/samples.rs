//! The metric history a pool's autoscale formula reads: a sample of every metric each
//! [`PERIOD`] (as the service takes them), plus the values of the moment as the newest sample.

use std::collections::VecDeque;

use super::eval::METRICS;

/// How often a sample is kept, as on the service.
pub const PERIOD: std::time::Duration = std::time::Duration::from_secs(30);
/// The most samples kept (a day's worth).
pub(super) const KEPT: usize = 2880;

/// One sample: a value per metric, in the order of [`METRICS`].
pub type Sample = [f64; METRICS.len()];

/// A pool's samples, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    /// (seconds since the epoch, values).
    kept: VecDeque<(f64, Sample)>,
    /// The values of the moment, as of `now`.
    current: (f64, Sample),
    slots_per_node: f64,
    rng: std::cell::Cell<u64>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        History {
            kept: VecDeque::new(),
            current: (0.0, [0.0; METRICS.len()]),
            slots_per_node: 1.0,
            rng: std::cell::Cell::new(seed),
        }
    }

    /// Records the values at `now` (seconds since the epoch); one is kept each period.
    pub fn record(&mut self, now: f64, values: Sample, slots_per_node: f64) {
        self.current = (now, values);
        self.slots_per_node = slots_per_node;
        let due = self
            .kept
            .back()
            .is_none_or(|(t, _)| now - t >= PERIOD.as_secs_f64());
        if due {
            self.kept.push_back((now, values));
            if self.kept.len() > KEPT {
                self.kept.pop_front();
            }
        }
    }

    fn index(metric: &str) -> usize {
        METRICS.iter().position(|m| *m == metric).unwrap_or(0)
    }

    /// Every sample, the moment's last.
    fn all(&self) -> impl Iterator<Item = &(f64, Sample)> {
        self.kept.iter().chain(std::iter::once(&self.current))
    }

    /// The metric's value now.
    pub(super) fn latest(&self, metric: &str) -> f64 {
        self.current.1[Self::index(metric)]
    }

    /// The last `count` samples of a metric, oldest first.
    pub(super) fn last(&self, metric: &str, count: f64) -> Vec<f64> {
        let i = Self::index(metric);
        let all: Vec<f64> = self.all().map(|(_, s)| s[i]).collect();
        let n = (count.max(0.0) as usize).min(all.len());
        all[all.len() - n..].to_vec()
    }

    /// The samples of a metric taken in `(from, to)` (seconds since the epoch), and the
    /// percentage of the samples such a window should hold that are there.
    pub(super) fn window(&self, metric: &str, (from, to): (f64, f64)) -> (Vec<f64>, f64) {
        let i = Self::index(metric);
        let samples: Vec<f64> = self
            .all()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, s)| s[i])
            .collect();
        let expected = ((to - from) / PERIOD.as_secs_f64()).ceil().max(1.0);
        let percent = (samples.len() as f64 / expected * 100.0).min(100.0);
        (samples, percent)
    }

    /// How many samples there are.
    pub(super) fn count(&self) -> usize {
        self.kept.len() + 1
    }

    /// When the oldest sample was taken.
    pub(super) fn begin(&self, now: f64) -> f64 {
        self.kept.front().map(|(t, _)| *t).unwrap_or(now)
    }

    /// The pool's task slots per node (`$TaskSlotsPerNode`).
    pub(super) fn slots_per_node(&self) -> f64 {
        self.slots_per_node
    }

    /// A random number in [0, 1) (`rand()`).
    pub(super) fn random(&self) -> f64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}
