//! Launching attempts on lanes, and the life of a lane: opened, checked, failing, down (its
//! tasks move), back.

use std::sync::Arc;
use std::time::Instant;

use super::lanes::{LaneState, check_timing};
use super::run::{Driver, MAX_MOVES};
use super::{Note, lanes::Lane};
use crate::error::{Error, ErrorKind, Result};
use crate::raw::backend::{JobSpec, TaskEvent};
use crate::raw::envelope::Outcome;
use crate::raw::executor::{Attempt, AttemptEnd, Ended, OpenRequest, Opened};
use crate::storage::Storage;
use crate::types::region::Region;
use crate::types::task_error::TaskErrorKind;

use super::inputs::Inputs;

impl Driver {
    /// Launches waiting tasks while lanes have room.
    pub(super) async fn launch_waiting(&mut self) -> Result<()> {
        let mut budget = match self.spec.options.concurrency {
            Some(limit) if self.holds_limit => {
                let launched: u64 = self.lanes.iter().map(|l| l.launched).sum();
                (limit as u64).saturating_sub(launched)
            }
            _ => u64::MAX,
        };
        let mut batches: Vec<Vec<Attempt>> = vec![Vec::new(); self.lanes.len()];
        while budget > 0 {
            let Some(&task) = self.waiting.front() else {
                break;
            };
            if self.done[task as usize] {
                self.waiting.pop_front();
                continue;
            }
            let preferred = self.preferred(task);
            let Some(lane) = self.placer.pick(&self.lanes, preferred) else {
                break;
            };
            self.waiting.pop_front();
            self.lane_of[task as usize] = lane as u8;
            self.lanes[lane].launched += 1;
            budget -= 1;
            batches[lane].push(self.inputs.attempt(task, self.attempts[task as usize]));
        }
        for (lane, attempts) in batches.into_iter().enumerate() {
            if attempts.is_empty() {
                continue;
            }
            self.launch_on(lane, attempts).await?;
        }
        Ok(())
    }

    /// Launches `attempts` on `lane`. With one region, a failure ends them (lost) and is
    /// returned; with several, the lane is failing and they wait for another.
    async fn launch_on(&mut self, lane: usize, attempts: Vec<Attempt>) -> Result<()> {
        let Some(job) = self.lanes[lane].job.clone() else {
            return Ok(());
        };
        let ids: Vec<(u64, u32)> = attempts.iter().map(|a| (a.task, a.attempt)).collect();
        let result = if self.multi {
            let (_, limit) = check_timing(self.failover_after);
            // Copies may be large, but a store that does not answer must not hold the job.
            let copy_limit = (self.failover_after * 4).max(limit);
            let copied = match tokio::time::timeout(copy_limit, self.replicate(lane, &ids)).await {
                Ok(result) => result,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!("copying the tasks' data took more than {copy_limit:?}"),
                )),
            };
            match copied {
                Ok(()) => match tokio::time::timeout(limit, job.launch(attempts)).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::new(
                        ErrorKind::Timeout,
                        format!("launching attempts got no answer within {limit:?}"),
                    )),
                },
                Err(e) => Err(e),
            }
        } else {
            job.launch(attempts).await
        };
        let Err(e) = result else {
            return Ok(());
        };
        if self.multi {
            let why = format!("attempts could not be started: {e}");
            self.lane_failing(lane, why);
            for (task, _) in ids {
                self.move_task(task);
            }
            return Ok(());
        }
        // None of them started: each ends here, lost for good.
        let why = format!("the attempt could not be started: {e}");
        for (task, attempt) in ids {
            let error = self.error(task, attempt, TaskErrorKind::Lost, &why);
            let mut end = AttemptEnd::new(task, attempt, Ended::Reported(Outcome::Err(error)));
            end.final_attempt = true;
            self.settle(lane, end);
        }
        Err(e)
    }

    /// [`Driver::launch_waiting`] in the running job: a failure ends those attempts (lost).
    pub(super) async fn launch_more(&mut self) {
        if let Err(e) = self.launch_waiting().await {
            tracing::warn!(error = %e, "attempts could not be started");
        }
    }

    /// Sends `task` back to the waiting tasks with a new attempt number, for another lane.
    pub(super) fn move_task(&mut self, task: u64) {
        let t = task as usize;
        if self.done[t] {
            return;
        }
        self.release(t);
        let moves = self.moves.entry(task).or_insert(0);
        *moves = moves.saturating_add(1);
        self.attempts[t] = self.attempts[t].saturating_add(1);
        self.waiting.push_front(task);
    }

    /// Opens (or opens again) a lane in the background.
    pub(super) fn open_lane(&mut self, lane: usize) {
        let again = self.lanes[lane].job.is_some() || self.lanes[lane].is_down();
        let l = &mut self.lanes[lane];
        l.state = LaneState::Opening;
        l.checking = true;
        let (region, spec, home) = (l.region.clone(), self.spec.clone(), self.home.clone());
        let (inputs, notes) = (self.inputs.clone(), self.notes.clone());
        // A lane opened again follows the job it had there.
        let follow = self.follow || again;
        tokio::spawn(async move {
            // A backend that panics while opening is a region that could not open, not a
            // driver waiting for ever.
            let opening = open_region(&region, spec, &home, &inputs, follow);
            let opened =
                match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(opening)).await
                {
                    Ok(opened) => opened,
                    Err(_) => Err(Error::new(
                        ErrorKind::Backend,
                        format!(
                            "region `{}`: the backend panicked while opening the job",
                            region.name()
                        ),
                    )),
                };
            // Opened after the job ended: nobody will launch there, so it is closed.
            if let Err(tokio::sync::mpsc::error::SendError(Note::Opened(_, Ok(late)))) =
                notes.send(Note::Opened(lane, opened))
            {
                late.job.close().await;
            }
        });
    }

    /// A lane's job is open: it takes work.
    pub(super) fn lane_opened(&mut self, lane: usize, opened: Opened) {
        let came_back = self.lanes[lane].job.is_some();
        let l = &mut self.lanes[lane];
        l.generation = l.generation.wrapping_add(1);
        let generation = l.generation;
        l.job = Some(Arc::from(opened.job));
        l.state = LaneState::Up;
        l.checking = false;
        l.progress = Instant::now();
        if came_back {
            tracing::info!(region = l.name(), "region is back: it gets new work");
        }
        self.ends.push(lane, generation, opened.ends);
    }

    /// A lane that could not be opened.
    pub(super) fn lane_down(&mut self, lane: usize, why: String) {
        let l = &mut self.lanes[lane];
        l.checking = false;
        if l.job.is_none() {
            tracing::warn!(region = l.name(), reason = %why, "region is down at the start: skipped");
        }
        l.state = LaneState::Down { why };
    }

    /// The lane's compute or storage failed: no new work until a check passes.
    pub(super) fn lane_failing(&mut self, lane: usize, why: String) {
        let l = &mut self.lanes[lane];
        if l.is_up() {
            tracing::warn!(
                region = l.name(),
                reason = %why,
                after = ?self.failover_after,
                "region is failing: its tasks move unless it recovers in time"
            );
            l.state = LaneState::Failing {
                since: Instant::now(),
                why,
            };
        }
    }

    /// The lane is given up: its unfinished tasks move to the others.
    pub(super) fn lane_gone(&mut self, lane: usize, why: String) {
        let l = &mut self.lanes[lane];
        l.state = LaneState::Down { why: why.clone() };
        l.checking = false;
        if let Some(job) = l.job.clone() {
            // The region may not answer: its job is closed in the background.
            let (_, limit) = check_timing(self.failover_after);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(limit, job.close()).await;
            });
        }
        let name = l.name().to_string();
        let on_lane: Vec<u64> = (0..self.done.len())
            .filter(|&t| !self.done[t] && usize::from(self.lane_of[t]) == lane)
            .map(|t| t as u64)
            .collect();
        let held: Vec<AttemptEnd> = self.take_held(lane);
        let moved = on_lane.len() + held.len();
        for task in on_lane {
            self.move_task(task);
        }
        for end in held {
            self.move_task(end.task);
        }
        tracing::warn!(region = %name, reason = %why, moved, "region is down: its unfinished tasks moved to the other regions");
        let _ = self.events.unbounded_send(TaskEvent::Moved {
            region: name,
            tasks: moved as u64,
        });
        self.end_if_nowhere_to_run();
    }

    /// Ends the job's tasks as lost when no lane can run them any more.
    pub(super) fn end_if_nowhere_to_run(&mut self) {
        if self.remaining == 0 {
            return;
        }
        if let Some(pin) = self.placer.pinned
            && let LaneState::Down { why } = &self.lanes[pin].state
        {
            let message = format!(
                "region `{}`, which the job is pinned to (TaskOptions::region), is down: {why}",
                self.lanes[pin].name()
            );
            self.end_all(TaskErrorKind::Lost, &message);
            return;
        }
        if self.lanes.iter().all(Lane::is_down) {
            let each: Vec<String> = self
                .lanes
                .iter()
                .map(|l| format!("`{}`: {}", l.name(), l.why_not()))
                .collect();
            let message = format!("every region is down: {}", each.join("; "));
            tracing::error!(job = %self.spec.id, "{message}");
            self.end_all(TaskErrorKind::Lost, &message);
        }
    }

    /// The failed attempts held for `lane`'s check.
    fn take_held(&mut self, lane: usize) -> Vec<AttemptEnd> {
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(l, _)| *l == lane);
        self.held = others;
        mine.into_iter().map(|(_, end)| end).collect()
    }

    /// Checks a lane's compute and storage in the background (once at a time).
    pub(super) fn check_lane(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        if l.checking {
            return;
        }
        l.checking = true;
        let region = l.region.clone();
        let key = region.storage().layout().manifest(&self.spec.id);
        let notes = self.notes.clone();
        let (_, limit) = check_timing(self.failover_after);
        tokio::spawn(async move {
            let check = async {
                if let crate::raw::executor::Health::Unhealthy(why) =
                    region.executor().health().await
                {
                    return Err(why);
                }
                region
                    .storage()
                    .exists(&key)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("its store does not answer: {e}"))
            };
            let result = match tokio::time::timeout(limit, check).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "its compute or store gave no answer within {limit:?}"
                )),
            };
            let _ = notes.send(Note::Checked(lane, result));
        });
    }

    pub(super) fn on_note(&mut self, note: Note) {
        match note {
            Note::Opened(lane, Ok(opened)) => {
                self.lane_opened(lane, opened);
            }
            Note::Opened(lane, Err(e)) => {
                self.lane_down(lane, e.to_string());
                self.end_if_nowhere_to_run();
            }
            Note::Checked(lane, Ok(())) => {
                self.lanes[lane].checking = false;
                match &self.lanes[lane].state {
                    LaneState::Failing { .. } => {
                        tracing::info!(region = self.lanes[lane].name(), "region recovered");
                        self.lanes[lane].state = LaneState::Up;
                        self.lanes[lane].progress = Instant::now();
                    }
                    LaneState::Down { .. } => self.open_lane(lane),
                    LaneState::Up | LaneState::Opening => {}
                }
                // The region is fine: the held failures are the tasks' own.
                for end in self.take_held(lane) {
                    self.settle(lane, end);
                }
            }
            Note::Checked(lane, Err(why)) => {
                self.lanes[lane].checking = false;
                self.lane_failing(lane, why);
                for end in self.take_held(lane) {
                    if self.moves.get(&end.task).copied().unwrap_or(0) >= MAX_MOVES {
                        self.settle(lane, end);
                    } else {
                        self.move_task(end.task);
                    }
                }
            }
        }
    }

    /// Several regions: gives up lanes failing for too long, checks the others.
    pub(super) fn on_tick(&mut self) {
        let (every, _) = check_timing(self.failover_after);
        for lane in 0..self.lanes.len() {
            if self.placer.pinned.is_some_and(|pin| pin != lane) {
                continue; // never opened: the job is pinned elsewhere
            }
            let l = &self.lanes[lane];
            match &l.state {
                LaneState::Failing { since, why } if since.elapsed() >= self.failover_after => {
                    let why = why.clone();
                    self.lane_gone(lane, why);
                }
                LaneState::Failing { .. } | LaneState::Down { .. } => self.check_lane(lane),
                LaneState::Up if l.launched > 0 && l.progress.elapsed() >= every => {
                    self.check_lane(lane)
                }
                LaneState::Up | LaneState::Opening => {}
            }
        }
    }

    /// Closes every lane's job: at once where the region is up, in the background elsewhere.
    pub(super) async fn close_all(&mut self) {
        let (_, limit) = check_timing(self.failover_after);
        for lane in &self.lanes {
            let Some(job) = lane.job.clone() else {
                continue;
            };
            if lane.is_up() {
                job.close().await;
            } else {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(limit, job.close()).await;
                });
            }
        }
    }
}

/// Opens a job on a region: its input copied into the region's store first when the
/// region's workers read it from there.
pub(super) async fn open_region(
    region: &Region,
    spec: Arc<JobSpec>,
    home: &Storage,
    inputs: &Inputs,
    follow: bool,
) -> Result<Opened> {
    let storage = region.storage();
    let executor = region.executor();
    if executor.capabilities().inputs_from_storage
        && storage.identity() != home.identity()
        && inputs.len() > 0
    {
        let key = storage.layout().input(&spec.id);
        storage
            .put(&key, inputs.bytes().clone())
            .await
            .map_err(|e| e.with_context("region", region.name()))?;
    }
    executor
        .open(OpenRequest::new(spec, storage.clone()).following(follow))
        .await
        .map_err(|e| e.with_context("region", region.name()))
}
