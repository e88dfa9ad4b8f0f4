//! The driver's loop: attempt ends, retries, commands, and (several regions) the lanes'
//! checks and openings.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;

use super::commit::CommitItem;
use super::ends::LaneEnds;
use super::inputs::Inputs;
use super::lanes::{Lane, NO_LANE, Placer, check_timing};
use super::{Command, Note};
use crate::raw::backend::{JobSpec, TaskEvent};
use crate::raw::envelope::Outcome;
use crate::raw::executor::{AttemptEnd, Ended};
use crate::storage::Storage;
use crate::types::data_refs::TaskData;
use crate::types::options::saturating_after;
use crate::types::task_error::{TaskError, TaskErrorKind};

/// How often one task may move between regions without the move counting as a retry.
pub(super) const MAX_MOVES: u32 = 8;

/// One job's task states, a few bytes per task.
pub(crate) struct Driver {
    /// The current attempt of each task (0: none yet).
    pub(super) attempts: Vec<u32>,
    /// Whether each task is finished (or not this driver's to run).
    pub(super) done: Vec<bool>,
    /// The lane each task's current attempt was launched on ([`NO_LANE`]: none).
    pub(super) lane_of: Vec<u8>,
    /// How often a task moved to another region (not counted as retries; an earlier
    /// attempt's value is still taken).
    pub(super) moves: HashMap<u64, u32>,
    /// Several regions: the lane whose store holds all the data each task reads
    /// ([`NO_LANE`]: none, or no data); empty when no task reads stored data.
    pub(super) preferred: Vec<u8>,
    /// The stored objects each task reads.
    pub(super) data: Arc<TaskData>,
    /// `(lane, object)` copies already made.
    pub(super) replicated: HashSet<(u8, u32)>,
    pub(super) remaining: u64,
    /// Retries waiting for their backoff: (due, task).
    pub(super) delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Tasks whose next attempt waits for room.
    pub(super) waiting: VecDeque<u64>,
    /// Several regions: failed attempts held until their lane's check says whether the
    /// region or the task is at fault.
    pub(super) held: Vec<(usize, AttemptEnd)>,
    pub(super) lanes: Vec<Lane>,
    pub(super) placer: Placer,
    pub(super) multi: bool,
    /// The driver keeps a concurrency limit itself (several regions, or an executor that
    /// does not).
    pub(super) holds_limit: bool,
    pub(super) failover_after: Duration,
    pub(super) home: Storage,
    pub(super) follow: bool,
    pub(super) ends: LaneEnds,
    pub(super) notes: mpsc::UnboundedSender<Note>,
    pub(super) spec: Arc<JobSpec>,
    pub(super) inputs: Arc<Inputs>,
    pub(super) events: futures::channel::mpsc::UnboundedSender<TaskEvent>,
    pub(super) commit: Option<mpsc::UnboundedSender<CommitItem>>,
}

impl Driver {
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut notes: mpsc::UnboundedReceiver<Note>,
    ) {
        let mut commands_open = true;
        let (check_every, _) = check_timing(self.failover_after);
        let mut ticks = tokio::time::interval(check_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.remaining > 0 {
            let due = self.delayed.peek().map(|Reverse((at, _))| *at);
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let has_ends = !self.ends.is_empty();
            tokio::select! {
                biased;
                command = commands.recv(), if commands_open => match command {
                    Some(Command::Cancel(reply)) => {
                        let n = self.cancel().await;
                        let _ = reply.send(n);
                    }
                    None => commands_open = false,
                },
                end = self.ends.next(), if has_ends => {
                    if let Some((lane, generation, end)) = end {
                        self.on_lane_end(lane, generation, end);
                        // Take every end already waiting before launching more.
                        while let Some(Some((lane, generation, end))) =
                            futures::FutureExt::now_or_never(self.ends.next())
                        {
                            self.on_lane_end(lane, generation, end);
                        }
                        if self.multi && !self.waiting.is_empty() {
                            self.lanes.iter_mut().for_each(Lane::grow_if_drained);
                        }
                        self.launch_more().await;
                    }
                },
                Some(note) = notes.recv() => {
                    self.on_note(note);
                    self.launch_more().await;
                },
                _ = ticks.tick(), if self.multi => {
                    self.on_tick();
                    self.launch_more().await;
                },
                () = sleep => {
                    self.move_due();
                    self.launch_more().await;
                }
            }
        }
        self.close_all().await;
        tracing::debug!("job finished");
    }

    /// A lane's end, or its stream's end.
    fn on_lane_end(&mut self, lane: usize, generation: u32, end: Option<AttemptEnd>) {
        match end {
            Some(end) => self.on_end(lane, end),
            None if !self.multi => {
                self.end_all(
                    TaskErrorKind::Lost,
                    "the executor stopped reporting before this task finished",
                );
            }
            None => {
                let l = &self.lanes[lane];
                if l.generation == generation && !l.is_down() {
                    self.lane_gone(lane, "its executor stopped reporting".into());
                }
            }
        }
    }

    /// A task error of the job's function.
    pub(super) fn error(
        &self,
        task: u64,
        attempt: u32,
        kind: TaskErrorKind,
        message: &str,
    ) -> TaskError {
        let mut e = TaskError::new(kind, message);
        e.function = self.spec.function.clone();
        e.job = self.spec.id.clone();
        e.task = task;
        e.attempt = attempt;
        e
    }

    /// The lane a task prefers (see [`Driver::preferred`]).
    pub(super) fn preferred(&self, task: u64) -> u8 {
        self.preferred
            .get(task as usize)
            .copied()
            .unwrap_or(NO_LANE)
    }

    /// The task no longer holds room on the lane it was launched on.
    pub(super) fn release(&mut self, task: usize) {
        let lane = std::mem::replace(&mut self.lane_of[task], NO_LANE);
        if let Some(lane) = self.lanes.get_mut(usize::from(lane)) {
            lane.launched = lane.launched.saturating_sub(1);
        }
    }

    pub(super) fn on_end(&mut self, lane: usize, mut end: AttemptEnd) {
        let task = end.task as usize;
        if self.done.get(task).is_none_or(|&d| d) {
            tracing::debug!(
                task = end.task,
                attempt = end.attempt,
                "a stale attempt end is ignored"
            );
            return;
        }
        let current = self.attempts[task] == end.attempt
            && (!self.multi || usize::from(self.lane_of[task]) == lane);
        // A task that moved away from a failing region: a value its earlier attempt stored
        // there is as good as any, and the first outcome wins.
        let earlier_value = !current
            && self.moves.contains_key(&end.task)
            && end.attempt < self.attempts[task]
            && end.outcome().is_ok();
        if !current && !earlier_value {
            tracing::debug!(
                task = end.task,
                attempt = end.attempt,
                "a stale attempt end is ignored"
            );
            return;
        }
        if let Some(l) = self.lanes.get_mut(lane) {
            l.progress = Instant::now();
        }
        if self.multi {
            end.region = Some(self.lanes[lane].name().to_string());
            // Outcomes are kept in the home store: one stored in another region's store is
            // stored again at home.
            if self.lanes[lane].region.storage().identity() != self.home.identity()
                && let Ended::Stored { outcome, .. } = &end.ended
            {
                end.ended = Ended::Reported(outcome.clone());
            }
            if current && matches!(end.outcome(), Outcome::Err(_)) && !end.final_attempt {
                // Is the region at fault, or the task? The lane's check says.
                self.held.push((lane, end));
                self.check_lane(lane);
                return;
            }
        }
        self.settle(lane, end);
    }

    /// Takes an accepted end: the task finishes, or waits for a retry.
    pub(super) fn settle(&mut self, lane: usize, end: AttemptEnd) {
        let task = end.task as usize;
        self.release(task);
        let options = &self.spec.options;
        let moved = self.moves.get(&end.task).copied().unwrap_or(0);
        if let Outcome::Err(error) = end.outcome()
            && error.is_retryable()
            && end.attempt.saturating_sub(moved) <= options.retries
            && !end.final_attempt
        {
            let next = end.attempt.saturating_add(1);
            let _ = self.events.unbounded_send(TaskEvent::Retrying {
                task: end.task,
                error: error.clone(),
            });
            self.attempts[task] = next;
            let wait = with_jitter(options.backoff_for(next.saturating_sub(moved)));
            self.delayed
                .push(Reverse((saturating_after(Instant::now(), wait), end.task)));
            self.commit(lane, end, false);
            return;
        }
        self.done[task] = true;
        self.remaining -= 1;
        self.commit(lane, end, true);
    }

    fn commit(&self, lane: usize, end: AttemptEnd, last: bool) {
        if let Some(commit) = &self.commit {
            let executor = self
                .lanes
                .get(lane)
                .or(self.lanes.first())
                .map_or("", |l| l.region.executor().name())
                .to_string();
            let _ = commit.send(CommitItem {
                end,
                last,
                executor,
            });
        }
    }

    /// Moves the retries whose backoff has passed to the front of the waiting tasks.
    fn move_due(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, task))) = self.delayed.peek() {
            if at > now {
                break;
            }
            self.delayed.pop();
            if !self.done[task as usize] {
                self.waiting.push_front(task);
            }
        }
    }

    /// Ends every unfinished task with an error of `kind`; returns how many.
    pub(super) fn end_all(&mut self, kind: TaskErrorKind, message: &str) -> u64 {
        self.delayed.clear();
        self.waiting.clear();
        for (lane, end) in std::mem::take(&mut self.held) {
            self.settle(lane, end);
        }
        let mut n = 0;
        for task in 0..self.done.len() {
            if self.done[task] {
                continue;
            }
            let attempt = self.attempts[task];
            let error = self.error(task as u64, attempt, kind, message);
            let mut end =
                AttemptEnd::new(task as u64, attempt, Ended::Reported(Outcome::Err(error)));
            end.final_attempt = true;
            let lane = usize::from(self.lane_of[task]);
            self.settle(lane, end);
            n += 1;
        }
        n
    }

    async fn cancel(&mut self) -> u64 {
        for lane in &self.lanes {
            if let Some(job) = &lane.job
                && let Err(e) = job.stop().await
            {
                tracing::warn!(region = lane.name(), error = %e, "the executor could not stop the job's attempts");
            }
        }
        let n = self.end_all(TaskErrorKind::Cancelled, "the job was cancelled");
        tracing::info!(cancelled = n, "job cancelled");
        n
    }
}

/// `wait` plus up to a tenth more, at random, so that retries of tasks that failed together
/// do not all start at the same instant.
fn with_jitter(wait: Duration) -> Duration {
    let extra = (wait / 10).mul_f64(fastrand::f64());
    wait.saturating_add(extra)
}
