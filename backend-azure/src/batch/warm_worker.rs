//! Worker mode of a warm worker on a Batch node (`REDWOOD_WORKER=batch-warm`): a long-lived
//! Batch task that takes groups of tasks from its program's queue in the region's storage
//! account and runs them on a pool of warm worker processes, so a node keeps the program
//! loaded and its connections open across groups and jobs.
//!
//! Delivery is at least once: a message stays hidden while its group runs (the worker renews
//! that every few seconds), comes back if the worker dies, and the first stored outcome wins.
//! A message that failed [`MAX_DELIVERIES`] deliveries goes to `<queue>-poison`, where its
//! client reads why. The worker exits after [`WarmSpec::idle_ms`] without work, and before
//! its queue SAS expires; the client starts new ones when work arrives.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redwood_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::functions::message::TaskMessage;
use crate::group_run;
use crate::queue::{Message, Queue, QueueService};

/// The value of `REDWOOD_WORKER` for a warm worker.
pub const MODE: &str = "batch-warm";
/// The environment variable carrying the worker's [`WarmSpec`] as JSON.
pub const SPEC_ENV: &str = "REDWOOD_WARM_WORKER";
/// Deliveries of one message before it goes to the poison queue (Azure Functions' default
/// `maxDequeueCount`).
pub const MAX_DELIVERIES: u32 = 5;
/// A failed delivery's message comes back after this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The worker stops taking messages this long before its SAS expires.
const SAS_MARGIN: Duration = Duration::from_secs(10 * 60);
/// The most messages taken by one receive.
const RECEIVE_AT_ONCE: u32 = 4;
/// The longest wait between two receives of an empty queue (a new job waits at most this
/// long for an idle worker; four requests a second cost little).
const MAX_IDLE_POLL: Duration = Duration::from_millis(250);

inventory::submit! {
    redwood_core::raw::worker::WorkerMode { name: MODE, also_when: &[], serve }
}

/// What a warm worker's Batch task tells it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmSpec {
    /// The queue service endpoint (no trailing `/`).
    pub endpoint: String,
    /// The queue of its program.
    pub queue: String,
    /// A SAS (query string) on the account's queues: read, add, update, process.
    pub sas: String,
    /// When the SAS expires (seconds since the Unix epoch).
    pub sas_expires: u64,
    /// How long a message stays hidden from other workers between renewals.
    pub visibility_ms: u64,
    /// The worker exits after this long without work.
    pub idle_ms: u64,
    /// Tasks it holds at once (in the groups it has taken; a group larger than that is taken
    /// alone).
    pub tasks: u32,
}

impl std::fmt::Debug for WarmSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmSpec")
            .field("endpoint", &self.endpoint)
            .field("queue", &self.queue)
            .field("sas", &"<redacted>")
            .field("idle_ms", &self.idle_ms)
            .field("tasks", &self.tasks)
            .finish_non_exhaustive()
    }
}

/// Takes groups until idle, then exits.
pub fn serve() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("redwood warm worker: {e}");
            2
        }
    };
    std::process::exit(code)
}

fn run() -> Result<()> {
    let text = std::env::var(SPEC_ENV)
        .map_err(|_| Error::new(ErrorKind::Config, format!("{SPEC_ENV} is not set")))?;
    let spec: WarmSpec = serde_json::from_str(&text).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("{SPEC_ENV} is not a warm worker's description: {e}"),
        )
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .map_err(|e| Error::new(ErrorKind::Backend, format!("cannot start a runtime: {e}")))?;
    runtime.block_on(take_groups(spec))
}

/// The queues a worker reads and writes.
struct Queues {
    tasks: Arc<Queue>,
    poison: Queue,
    visibility: Duration,
}

async fn take_groups(spec: WarmSpec) -> Result<()> {
    let service = QueueService::from_connection_string(&format!(
        "QueueEndpoint={};SharedAccessSignature={}",
        spec.endpoint, spec.sas
    ))?;
    let queues = Arc::new(Queues {
        tasks: Arc::new(service.queue(&spec.queue)?),
        poison: service.queue(&format!("{}-poison", spec.queue))?,
        visibility: Duration::from_millis(spec.visibility_ms.max(3_000)),
    });
    // Workers start with the worker, not with its first group (and are handed the program's
    // hash from the node's cache rather than each reading the program).
    let _ = super::worker::own_binary_hash();
    group_run::node()?;
    tokio::spawn(group_run::close_idle_jobs());
    let idle = Duration::from_millis(spec.idle_ms);
    let stop_at = UNIX_EPOCH + Duration::from_secs(spec.sas_expires);
    let room = spec.tasks.max(1);
    let slots = Arc::new(Semaphore::new(room as usize));
    let last_work = Arc::new(Mutex::new(Instant::now()));
    // Tasks in the last group taken: how many messages fit the room left.
    let mut group_tasks = 1u32;
    let mut poll = Duration::from_millis(50);
    tracing::info!(queue = %spec.queue, tasks = room, ?idle, "warm worker started");
    loop {
        if SystemTime::now() + SAS_MARGIN >= stop_at {
            tracing::info!("the queue SAS expires soon: this worker stops taking groups");
            break;
        }
        // Wait for room before receiving: a received message is hidden from other workers.
        let first = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::new(ErrorKind::Unexpected, "the worker's slots closed"))?;
        let free = u32::try_from(slots.available_permits())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        // A few at most: the last group's size may not be this job's.
        let count = (free / group_tasks.max(1)).clamp(1, RECEIVE_AT_ONCE);
        let received = match queues.tasks.receive(count, queues.visibility).await {
            Ok(r) => r,
            Err(e) => {
                drop(first);
                tracing::warn!("cannot receive from the task queue: {e}");
                if since(&last_work) > idle {
                    break;
                }
                tokio::time::sleep(MAX_IDLE_POLL).await;
                continue;
            }
        };
        if received.is_empty() {
            drop(first);
            let busy = slots.available_permits() < room as usize;
            if !busy && since(&last_work) > idle {
                break;
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(MAX_IDLE_POLL);
            continue;
        }
        poll = Duration::from_millis(50);
        touch(&last_work);
        let mut first = Some(first);
        for message in received {
            let group = TaskMessage::from_trigger(&serde_json::Value::String(message.text.clone()));
            let tasks = group
                .as_ref()
                .map_or(1, |g| u32::try_from(g.tasks.len()).unwrap_or(u32::MAX))
                .clamp(1, room);
            group_tasks = tasks;
            let (roomy, has_room) = tokio::sync::oneshot::channel();
            let room = Room {
                slots: slots.clone(),
                held: first.take(),
                tasks,
                roomy,
            };
            let queues = queues.clone();
            let last_work = last_work.clone();
            tokio::spawn(async move {
                take(&queues, message, group, room).await;
                touch(&last_work);
            });
            // One group at a time gets its room (its message kept hidden meanwhile), so the
            // next receive waits for room the groups taken do not hold.
            let _ = has_room.await;
        }
    }
    // Let the groups it holds finish (their messages would come back to another worker
    // otherwise, and run again).
    let _all = slots.acquire_many(room).await;
    tracing::info!("warm worker idle: exiting");
    Ok(())
}

fn since(at: &Mutex<Instant>) -> Duration {
    at.lock().map(|t| t.elapsed()).unwrap_or_default()
}

fn touch(at: &Mutex<Instant>) {
    if let Ok(mut t) = at.lock() {
        *t = Instant::now();
    }
}

/// The room a taken group waits for in its worker: a permit per task.
struct Room {
    slots: Arc<Semaphore>,
    /// A permit already held (the one the receive waited for).
    held: Option<tokio::sync::OwnedSemaphorePermit>,
    tasks: u32,
    /// Told once the group has its room (dropped if it never gets it).
    roomy: tokio::sync::oneshot::Sender<()>,
}

impl Room {
    /// Waits until the worker holds few enough tasks to take this group's.
    async fn wait(self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let need = self.tasks.saturating_sub(u32::from(self.held.is_some()));
        let mut permit = self.held;
        if need > 0 {
            let more = self.slots.acquire_many_owned(need).await.ok()?;
            match permit.as_mut() {
                Some(p) => p.merge(more),
                None => permit = Some(more),
            }
        }
        let _ = self.roomy.send(());
        permit
    }
}

/// Runs one message's group once there is room for it, keeping the message hidden meanwhile;
/// deletes it once stored, lets it come back when its delivery failed, and moves it to the
/// poison queue after [`MAX_DELIVERIES`].
async fn take(
    queues: &Queues,
    message: Message,
    group: std::result::Result<TaskMessage, String>,
    room: Room,
) {
    let group = match group {
        Ok(g) => g,
        Err(why) => {
            drop(room);
            tracing::warn!(id = %message.id, "{why}: moved to the poison queue");
            return to_poison(queues, &message).await;
        }
    };
    let current = Arc::new(tokio::sync::Mutex::new(message.clone()));
    let renewer = tokio::spawn(keep_hidden(
        queues.tasks.clone(),
        queues.visibility,
        current.clone(),
    ));
    let _permit = room.wait().await;
    let delivered = group_run::deliver(&group, u64::from(message.dequeue_count), false).await;
    renewer.abort();
    let current = current.lock().await.clone();
    match delivered {
        Ok(d) => {
            for line in d.logs {
                tracing::debug!(job = %group.job, "{line}");
            }
            if let Err(e) = queues.tasks.delete(&current).await {
                // It comes back, and its next delivery finds the outcomes stored.
                tracing::debug!(job = %group.job, "cannot delete a done message: {e}");
            }
        }
        Err(why) if message.dequeue_count >= MAX_DELIVERIES => {
            tracing::warn!(job = %group.job, deliveries = message.dequeue_count, "{why}");
            to_poison(queues, &current).await;
        }
        Err(why) => {
            tracing::info!(job = %group.job, delivery = message.dequeue_count, "{why}");
            if let Err(e) = queues.tasks.hide(&current, RETRY_AFTER).await {
                tracing::debug!(job = %group.job, "cannot show a failed message again: {e}");
            }
        }
    }
}

/// Keeps a running group's message hidden: renews its visibility at a third of it.
async fn keep_hidden(
    queue: Arc<Queue>,
    visibility: Duration,
    current: Arc<tokio::sync::Mutex<Message>>,
) {
    loop {
        tokio::time::sleep(visibility / 3).await;
        let mut m = current.lock().await;
        match queue.hide(&m, visibility).await {
            Ok(renewed) => *m = renewed,
            Err(e) => {
                tracing::warn!(id = %m.id, "cannot keep a running group's message hidden: {e}")
            }
        }
    }
}

/// Moves a message to the poison queue (which its client made, and reads), then deletes it.
async fn to_poison(queues: &Queues, message: &Message) {
    if let Err(e) = queues.poison.send(&message.text, Duration::ZERO).await {
        tracing::warn!(id = %message.id, "cannot move a message to the poison queue: {e}");
        return;
    }
    if let Err(e) = queues.tasks.delete(message).await {
        tracing::debug!(id = %message.id, "cannot delete a poisoned message: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn a_spec_reads_back_and_its_debug_hides_the_sas() {
        let spec = WarmSpec {
            endpoint: "http://127.0.0.1:10001/devstoreaccount1".into(),
            queue: "redwood-warm-0123".into(),
            sas: "sv=2021&sig=s3cret".into(),
            sas_expires: 1_900_000_000,
            visibility_ms: 30_000,
            idle_ms: 120_000,
            tasks: 16,
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<WarmSpec>(&text).unwrap(), spec);
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("redwood-warm-0123"),
            "{shown}"
        );
    }

    fn room_for(slots: &Arc<Semaphore>, held: bool, tasks: u32) -> (Room, oneshot::Receiver<()>) {
        let (roomy, has_room) = oneshot::channel();
        let held = held.then(|| slots.clone().try_acquire_owned().unwrap());
        let room = Room {
            slots: slots.clone(),
            held,
            tasks,
            roomy,
        };
        (room, has_room)
    }

    #[tokio::test]
    async fn a_group_gets_its_room_with_the_permit_already_held() {
        let slots = Arc::new(Semaphore::new(4));
        let (room, has_room) = room_for(&slots, true, 3);
        let permit = room.wait().await.unwrap();
        assert_eq!(permit.num_permits(), 3);
        assert_eq!(slots.available_permits(), 1);
        has_room.await.unwrap();
        drop(permit);
        assert_eq!(slots.available_permits(), 4);
    }

    #[tokio::test]
    async fn a_group_waits_for_room_and_says_so_only_when_it_has_it() {
        let slots = Arc::new(Semaphore::new(4));
        let busy = slots.clone().acquire_many_owned(3).await.unwrap();
        // The receive loop's permit is the last free one; the group needs two.
        let (room, mut has_room) = room_for(&slots, true, 2);
        let waiting = tokio::spawn(room.wait());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            has_room.try_recv().is_err(),
            "told of room it does not have"
        );
        drop(busy);
        let permit = waiting.await.unwrap().unwrap();
        assert_eq!(permit.num_permits(), 2);
        has_room.await.unwrap();
        assert_eq!(slots.available_permits(), 2);
    }

    #[tokio::test]
    async fn a_group_larger_than_the_worker_takes_it_all_and_a_dropped_room_frees_its_permit() {
        let slots = Arc::new(Semaphore::new(4));
        // Groups are clamped to the worker's room before they wait.
        let (room, has_room) = room_for(&slots, false, 4);
        let permit = room.wait().await.unwrap();
        assert_eq!(slots.available_permits(), 0);
        has_room.await.unwrap();
        drop(permit);
        // A group that never runs (unreadable) gives back the permit it was handed.
        let (room, has_room) = room_for(&slots, true, 1);
        drop(room);
        assert!(has_room.await.is_err());
        assert_eq!(slots.available_permits(), 4);
    }
}
