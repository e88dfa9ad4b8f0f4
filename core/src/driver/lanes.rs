//! The regions of one job as the driver sees them: a lane per region, with its opened
//! executor job, its window of launched attempts, its state (opening → up → failing → down,
//! and back), and the placement policy that picks a lane for each task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Placement;
use crate::raw::executor::ExecutorJob;
use crate::types::region::Region;

/// No lane (a task not launched anywhere).
pub(crate) const NO_LANE: u8 = u8::MAX;

/// Where a lane stands.
#[derive(Debug, Clone)]
pub(crate) enum LaneState {
    /// Being opened (at the start, or again after it came back).
    Opening,
    /// Takes work.
    Up,
    /// Its compute or storage failed `since`; no new work until a check passes, down after
    /// the failover time.
    Failing { since: Instant, why: String },
    /// Given up: its tasks moved to the other lanes. Checked now and then; opened again when
    /// a check passes.
    Down { why: String },
}

/// One region of a job.
pub(crate) struct Lane {
    pub(crate) region: Region,
    pub(crate) job: Option<Arc<dyn ExecutorJob>>,
    pub(crate) state: LaneState,
    /// Attempts launched here that have not ended.
    pub(crate) launched: u64,
    /// The most attempts launched here at once (several regions: it grows while the region
    /// keeps up).
    pub(crate) window: u64,
    /// The most the window may grow to.
    pub(crate) limit: u64,
    /// When an attempt here last ended (or the lane came up).
    pub(crate) progress: Instant,
    /// A health check (or an open) is under way.
    pub(crate) checking: bool,
    /// Counts the lane's openings, so the end of an earlier opening's stream is told apart.
    pub(crate) generation: u32,
}

impl Lane {
    /// A lane for `region`; `multi` when the job has several (the window then follows the
    /// region's capacity, so tasks go where room frees up).
    pub(crate) fn new(region: Region, multi: bool) -> Lane {
        let capabilities = region.executor().capabilities();
        let limit = capabilities.max_launched.unwrap_or(u64::MAX).max(1);
        let window = if multi {
            let slots = capabilities.slots.unwrap_or(16).max(1);
            slots
                .saturating_mul(8)
                .saturating_mul(u64::from(region.weight()))
                .max(64)
                .min(limit)
        } else {
            limit
        };
        Lane {
            region,
            job: None,
            state: LaneState::Opening,
            launched: 0,
            window,
            limit,
            progress: Instant::now(),
            checking: false,
            generation: 0,
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.region.name()
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(self.state, LaneState::Up)
    }

    pub(crate) fn is_down(&self) -> bool {
        matches!(self.state, LaneState::Down { .. })
    }

    /// How many more attempts it takes now.
    pub(crate) fn room(&self) -> u64 {
        if self.is_up() {
            self.window.saturating_sub(self.launched)
        } else {
            0
        }
    }

    /// A region that finished most of what it held since the last launch keeps up: it may hold
    /// twice as much (a cloud backend learns of ends a poll at a time).
    pub(crate) fn grow_if_drained(&mut self) {
        if self.is_up() && self.launched.saturating_mul(4) < self.window {
            self.window = self.window.saturating_mul(2).min(self.limit);
        }
    }

    /// Why it is not taking work, in words.
    pub(crate) fn why_not(&self) -> String {
        match &self.state {
            LaneState::Opening => "still opening".into(),
            LaneState::Up => "up".into(),
            LaneState::Failing { why, .. } | LaneState::Down { why } => why.clone(),
        }
    }
}

/// Picks lanes for tasks.
pub(crate) struct Placer {
    pub(crate) policy: Placement,
    /// The lane a job is pinned to.
    pub(crate) pinned: Option<usize>,
    /// Round-robin: the next turn, over lanes repeated by weight.
    turn: usize,
}

impl Placer {
    pub(crate) fn new(policy: Placement, pinned: Option<usize>) -> Placer {
        Placer {
            policy,
            pinned,
            turn: 0,
        }
    }

    /// The lane for a task that prefers `preferred` (its data is there; [`NO_LANE`]: none),
    /// given each lane's room; `None` when no lane has room for it now.
    pub(crate) fn pick(&mut self, lanes: &[Lane], preferred: u8) -> Option<usize> {
        if let Some(pin) = self.pinned {
            return (lanes[pin].room() > 0).then_some(pin);
        }
        let preferred = usize::from(preferred);
        if preferred < lanes.len() && lanes[preferred].room() > 0 {
            return Some(preferred);
        }
        match self.policy {
            Placement::Capacity => lanes
                .iter()
                .enumerate()
                .filter(|(_, l)| l.room() > 0)
                .max_by_key(|(i, l)| (l.room(), std::cmp::Reverse(*i)))
                .map(|(i, _)| i),
            Placement::RoundRobin => {
                let turns: u64 = lanes.iter().map(|l| u64::from(l.region.weight())).sum();
                for _ in 0..turns {
                    let mut at = (self.turn as u64) % turns.max(1);
                    self.turn = self.turn.wrapping_add(1);
                    for (i, lane) in lanes.iter().enumerate() {
                        let w = u64::from(lane.region.weight());
                        if at < w {
                            if lane.room() > 0 {
                                return Some(i);
                            }
                            break;
                        }
                        at -= w;
                    }
                }
                None
            }
        }
    }
}

/// How often lanes are checked, and how long one check may take, for a failover time.
pub(crate) fn check_timing(failover_after: Duration) -> (Duration, Duration) {
    let every = (failover_after / 6).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let limit = (failover_after / 2).clamp(Duration::from_secs(2), Duration::from_secs(10));
    (every, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::backend::{Capabilities, CleanupReply, CleanupRequest};
    use crate::raw::executor::{Executor, OpenRequest, Opened};
    use crate::storage::Storage;

    #[derive(Debug)]
    struct Slots(u64);

    #[async_trait::async_trait]
    impl Executor for Slots {
        fn name(&self) -> &str {
            "slots"
        }
        fn capabilities(&self) -> Capabilities {
            let mut c = Capabilities::none();
            c.slots = Some(self.0);
            c
        }
        async fn open(&self, _: OpenRequest) -> crate::Result<Opened> {
            Err(crate::Error::new(crate::ErrorKind::Unsupported, "not here"))
        }
        async fn release(&self, _: CleanupRequest) -> crate::Result<CleanupReply> {
            Ok(CleanupReply::default())
        }
    }

    fn lanes(weights: &[(u64, u32)]) -> Vec<Lane> {
        let storage = Storage::open("memory://").unwrap();
        weights
            .iter()
            .enumerate()
            .map(|(i, &(slots, weight))| {
                let region = Region::new(format!("r{i}"), Arc::new(Slots(slots)), storage.clone())
                    .with_weight(weight);
                let mut lane = Lane::new(region, true);
                lane.state = LaneState::Up;
                lane
            })
            .collect()
    }

    #[test]
    fn capacity_fills_the_roomiest_lane_and_locality_comes_first() {
        let mut lanes = lanes(&[(8, 1), (8, 2)]);
        assert_eq!((lanes[0].window, lanes[1].window), (64, 128));
        let mut placer = Placer::new(Placement::Capacity, None);
        let mut counts = [0u64; 2];
        for _ in 0..192 {
            let i = placer.pick(&lanes, NO_LANE).unwrap();
            lanes[i].launched += 1;
            counts[i] += 1;
        }
        assert_eq!(counts, [64, 128]);
        assert_eq!(placer.pick(&lanes, NO_LANE), None);
        lanes[0].launched -= 1;
        lanes[1].launched -= 5;
        assert_eq!(
            placer.pick(&lanes, 0),
            Some(0),
            "data locality wins while it has room"
        );
        lanes[0].launched += 1;
        assert_eq!(
            placer.pick(&lanes, 0),
            Some(1),
            "a full preferred lane is passed over"
        );
        lanes[1].state = LaneState::Failing {
            since: Instant::now(),
            why: "x".into(),
        };
        assert_eq!(
            placer.pick(&lanes, NO_LANE),
            None,
            "a failing lane takes nothing"
        );
    }

    #[test]
    fn round_robin_takes_weighted_turns_and_pins_stay_put() {
        let lanes = lanes(&[(1, 1), (1, 2)]);
        let mut placer = Placer::new(Placement::RoundRobin, None);
        let picks: Vec<usize> = (0..6)
            .map(|_| placer.pick(&lanes, NO_LANE).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 1, 0, 1, 1]);
        let mut pinned = Placer::new(Placement::RoundRobin, Some(1));
        assert!((0..4).all(|_| pinned.pick(&lanes, 0) == Some(1)));
    }
}
