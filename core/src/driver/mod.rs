//! The job driver: the life of every task of a job, once, for every executor. It owns the
//! task states (queued → running(attempt) → retrying → finished), attempt numbers (they
//! continue across executors and clients), retries with backoff and jitter, cancellation, and
//! durable outcomes (stored before reported, in group commits, see [`commit`]); the executor
//! only launches attempts and says how each ended. A session with several regions gives the
//! driver a lane per region ([`lanes`]): it places each task, moves the tasks of a region that
//! fails to the others, and stores every outcome in the home store.

mod commit;
mod ends;
pub(crate) mod inputs;
mod lanes;
mod launch;
mod replicas;
mod run;
pub(crate) mod stored;

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::config::Placement;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::backend::{EventStream, JobSpec};
use crate::raw::executor::Opened;
use crate::storage::Storage;
use crate::types::data_refs::TaskData;
use crate::types::region::Region;

use commit::Committer;
use ends::LaneEnds;
use inputs::Inputs;
use lanes::{Lane, LaneState, NO_LANE, Placer};
use run::Driver;

/// What the driver of one job needs.
pub(crate) struct DriveRequest {
    pub(crate) spec: Arc<JobSpec>,
    /// The home store: outcomes, attempt records and logs go there.
    pub(crate) storage: Storage,
    /// Where tasks run (one region, or several).
    pub(crate) regions: Vec<Region>,
    /// How tasks are spread over several regions.
    pub(crate) placement: Placement,
    /// How long a region may fail before its tasks move.
    pub(crate) failover_after: Duration,
    pub(crate) inputs: Arc<Inputs>,
    /// The stored objects each task reads.
    pub(crate) data: Arc<TaskData>,
    /// The tasks to run, each with the last attempt already made (0: none).
    pub(crate) todo: Vec<(u64, u32)>,
    /// The job was started earlier: the executor may still run some of its attempts.
    pub(crate) follow: bool,
    /// Store outcomes, attempt records and logs before reporting them (a job that can be
    /// attached to); otherwise report them as they come (a single call: the session stores
    /// its record, outcome included, in one object).
    pub(crate) durable: bool,
    /// Whether the job is still wanted: one cleaned up while it ran stores nothing more.
    pub(crate) keep: Keep,
}

/// A test of whether a job is still wanted (see [`DriveRequest::keep`]).
pub(crate) type Keep = Arc<dyn Fn() -> bool + Send + Sync>;

/// A driven job: its events (ending after the last task's `Finished`) and a handle.
pub(crate) struct Driving {
    pub(crate) events: EventStream,
    pub(crate) handle: DriverHandle,
}

impl Driving {
    /// A job with nothing left to run.
    pub(crate) fn nothing_to_run() -> Driving {
        Driving {
            events: Box::pin(futures::stream::empty()),
            handle: DriverHandle { commands: None },
        }
    }
}

enum Command {
    Cancel(oneshot::Sender<u64>),
}

/// Controls a running driver.
#[derive(Debug, Clone)]
pub(crate) struct DriverHandle {
    commands: Option<mpsc::UnboundedSender<Command>>,
}

impl DriverHandle {
    /// Stops the job's unfinished tasks; each ends with a `Cancelled` error. Returns how many.
    pub(crate) async fn cancel(&self) -> u64 {
        let Some(commands) = &self.commands else {
            return 0;
        };
        let (reply, rx) = oneshot::channel();
        if commands.send(Command::Cancel(reply)).is_err() {
            return 0; // the job is over
        }
        rx.await.unwrap_or(0)
    }
}

/// How often a running job looks for its `cancelled` marker (`redwood cancel`).
const CANCEL_MARKER_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Cancels the job when someone else (`redwood cancel`) stores its `cancelled` marker; ends
/// with the driver.
async fn watch_cancel_marker(
    storage: crate::storage::Storage,
    marker: object_store::path::Path,
    commands: mpsc::WeakUnboundedSender<Command>,
) {
    loop {
        tokio::time::sleep(CANCEL_MARKER_EVERY).await;
        match commands.upgrade() {
            Some(tx) if !tx.is_closed() => {
                if storage.exists(&marker).await.unwrap_or(false) {
                    tracing::info!("the job was cancelled from outside (its cancelled marker)");
                    let (reply, _) = oneshot::channel();
                    let _ = tx.send(Command::Cancel(reply));
                    return;
                }
            }
            _ => return,
        }
    }
}

/// What background work tells the driver.
pub(crate) enum Note {
    /// A lane was opened (or could not be).
    Opened(usize, Result<Opened>),
    /// A lane's health check: `Err` says why it failed.
    Checked(usize, std::result::Result<(), String>),
}

/// Opens the job on its region(s), launches the attempts it needs, and drives it from a
/// background task. Fails when no region can open the job, or (one region) launch its first
/// attempts.
pub(crate) async fn drive(request: DriveRequest) -> Result<Driving> {
    if request.todo.is_empty() {
        return Ok(Driving::nothing_to_run());
    }
    let (events_tx, events_rx) = futures::channel::mpsc::unbounded();
    let spec = request.spec.clone();
    let multi = request.regions.len() > 1;
    // The driver holds attempts beyond a concurrency limit unless the one executor does.
    let holds_limit = multi
        || request
            .regions
            .iter()
            .any(|r| !r.executor().capabilities().concurrency_limit);
    let pinned = match &spec.options.region {
        Some(name) => request.regions.iter().position(|r| r.name() == name),
        None => None,
    };
    let stores: Vec<&str> = request
        .regions
        .iter()
        .map(|r| r.storage().identity())
        .collect();
    let preferred = replicas::preferred_lanes(&request.data, &stores, spec.task_count);
    let lanes: Vec<Lane> = request
        .regions
        .into_iter()
        .map(|region| Lane::new(region, multi))
        .collect();
    let (notes_tx, mut notes_rx) = mpsc::unbounded_channel();
    let mut driver = Driver {
        attempts: vec![0; spec.task_count as usize],
        done: vec![true; spec.task_count as usize],
        lane_of: vec![NO_LANE; spec.task_count as usize],
        moves: HashMap::new(),
        preferred,
        data: request.data.clone(),
        replicated: Default::default(),
        remaining: 0,
        delayed: BinaryHeap::new(),
        waiting: VecDeque::new(),
        held: Vec::new(),
        lanes,
        placer: Placer::new(request.placement, pinned),
        multi,
        holds_limit,
        failover_after: request.failover_after,
        home: request.storage.clone(),
        follow: request.follow,
        ends: LaneEnds::default(),
        notes: notes_tx,
        spec: spec.clone(),
        inputs: request.inputs,
        events: events_tx.clone(),
        commit: None,
    };
    let mut running: Vec<(u64, u32, usize)> = Vec::new();
    if !multi {
        // One region: opened here, as a call's latency counts.
        let region = driver.lanes[0].region.clone();
        let opened = launch::open_region(
            &region,
            spec.clone(),
            &request.storage,
            &driver.inputs,
            request.follow,
        )
        .await?;
        running.extend(opened.running.iter().map(|&(t, a)| (t, a, 0)));
        driver.lane_opened(0, opened);
    }
    for lane in (0..driver.lanes.len()).filter(|_| multi) {
        match pinned {
            // A job pinned to one region opens nothing elsewhere.
            Some(pin) if pin != lane => {
                let why = format!("the job is pinned to `{}`", driver.lanes[pin].name());
                driver.lanes[lane].state = LaneState::Down { why };
            }
            _ => driver.open_lane(lane),
        }
    }
    // Start once the first lane is open: the others join as they open.
    let mut failures: Vec<String> = Vec::new();
    while !driver.lanes.iter().any(Lane::is_up) {
        let Some(note) = notes_rx.recv().await else {
            break;
        };
        match note {
            Note::Opened(lane, Ok(opened)) => {
                running.extend(opened.running.iter().map(|&(t, a)| (t, a, lane)));
                driver.lane_opened(lane, opened);
            }
            Note::Opened(lane, Err(e)) => {
                failures.push(format!("`{}`: {e}", driver.lanes[lane].name()));
                driver.lane_down(lane, e.to_string());
                if driver.lanes.iter().all(Lane::is_down) {
                    let message = match pinned {
                        Some(pin) => format!(
                            "region `{}`, which job `{}` is pinned to (TaskOptions::region), is \
                             down: {e}",
                            driver.lanes[pin].name(),
                            spec.id
                        ),
                        None => format!(
                            "no region could open job `{}`: {}",
                            spec.id,
                            failures.join("; ")
                        ),
                    };
                    return Err(Error::new(ErrorKind::Backend, message));
                }
            }
            Note::Checked(..) => {}
        }
    }
    // The others get a moment to open too, so the first one does not take every task.
    let (grace, _) = lanes::check_timing(request.failover_after);
    let deadline = tokio::time::Instant::now() + grace;
    while multi
        && driver
            .lanes
            .iter()
            .any(|l| matches!(l.state, LaneState::Opening))
    {
        let Ok(Some(note)) = tokio::time::timeout_at(deadline, notes_rx.recv()).await else {
            break;
        };
        match note {
            Note::Opened(lane, Ok(opened)) => {
                running.extend(opened.running.iter().map(|&(t, a)| (t, a, lane)));
                driver.lane_opened(lane, opened);
            }
            Note::Opened(lane, Err(e)) => driver.lane_down(lane, e.to_string()),
            Note::Checked(..) => {}
        }
    }
    let running: HashMap<u64, (u32, usize)> =
        running.into_iter().map(|(t, a, l)| (t, (a, l))).collect();
    for (task, last) in request.todo {
        if task >= spec.task_count {
            continue;
        }
        driver.done[task as usize] = false;
        driver.remaining += 1;
        match running.get(&task) {
            // An attempt the executor still has, newer than the last one known to have ended.
            Some(&(attempt, lane)) if attempt > last => {
                driver.attempts[task as usize] = attempt;
                driver.lane_of[task as usize] = lane as u8;
                driver.lanes[lane].launched += 1;
            }
            _ => {
                driver.attempts[task as usize] = last.saturating_add(1);
                driver.waiting.push_back(task);
            }
        }
    }
    if let Err(e) = driver.launch_waiting().await {
        driver.close_all().await;
        return Err(e);
    }
    let (commit_tx, commit_rx) = mpsc::unbounded_channel();
    driver.commit = Some(commit_tx);
    let committer = Committer {
        storage: request.storage,
        job: spec.id.clone(),
        function: spec.function.clone(),
        durable: request.durable,
        keep: request.keep,
    };
    tokio::spawn(committer.run(commit_rx, events_tx));
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let span = tracing::debug_span!("driver", job = %spec.id);
    if request.durable {
        let marker = driver.home.layout().cancelled(&spec.id);
        let watch = watch_cancel_marker(driver.home.clone(), marker, commands_tx.downgrade());
        tokio::spawn(watch.instrument(span.clone()));
    }
    tokio::spawn(driver.run(commands_rx, notes_rx).instrument(span));
    Ok(Driving {
        events: Box::pin(events_rx),
        handle: DriverHandle {
            commands: Some(commands_tx),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::backend::{Capabilities, CleanupReply, CleanupRequest};
    use crate::raw::executor::{Executor, OpenRequest};
    use crate::types::options::TaskOptions;

    /// A backend that cannot open a job: it panics, or refuses.
    #[derive(Debug)]
    struct Broken {
        panics: bool,
    }

    #[async_trait::async_trait]
    impl Executor for Broken {
        fn name(&self) -> &str {
            "broken"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::none()
        }
        async fn open(&self, _: OpenRequest) -> Result<Opened> {
            if self.panics {
                panic!("a backend bug");
            }
            Err(Error::new(ErrorKind::Backend, "the account refuses"))
        }
        async fn release(&self, _: CleanupRequest) -> Result<CleanupReply> {
            Ok(CleanupReply::default())
        }
    }

    fn request(regions: Vec<Region>, storage: Storage) -> DriveRequest {
        DriveRequest {
            spec: Arc::new(JobSpec {
                id: "j".into(),
                function: "f".into(),
                signature: 0,
                binary: String::new(),
                task_count: 2,
                options: TaskOptions::default(),
            }),
            storage,
            regions,
            placement: Placement::default(),
            failover_after: Duration::from_secs(1),
            inputs: Arc::new(Inputs::pack(&[vec![1], vec![2]])),
            data: Arc::new(TaskData::default()),
            todo: vec![(0, 0), (1, 0)],
            follow: false,
            durable: false,
            keep: Arc::new(|| true),
        }
    }

    #[tokio::test]
    async fn regions_that_cannot_open_are_an_error_not_a_hang() {
        let storage = Storage::open("memory://").unwrap();
        let region = |name: &str, panics: bool| {
            Region::new(name, Arc::new(Broken { panics }), storage.clone())
        };
        let one = drive(request(vec![region("solo", false)], storage.clone()));
        let e = tokio::time::timeout(Duration::from_secs(10), one)
            .await
            .expect("no hang")
            .err()
            .expect("an error");
        assert!(e.to_string().contains("refuses"), "{e}");
        let two = drive(request(
            vec![region("west", true), region("east", false)],
            storage.clone(),
        ));
        let e = tokio::time::timeout(Duration::from_secs(10), two)
            .await
            .expect("no hang")
            .err()
            .expect("an error");
        let text = e.to_string();
        assert!(
            text.contains("no region could open")
                && text.contains("`west`")
                && text.contains("`east`")
                && text.contains("refuses")
                && text.contains("panicked"),
            "{text}"
        );
    }
}
