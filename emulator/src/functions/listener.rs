//! The queue trigger: a listener per queue-triggered function receives messages while
//! instances have room and hands each to an instance; the scale controller sizes the instances
//! to the queues' lengths and stops idle ones.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use redwood_azure::queue::{Message, Queue};
use serde_json::{Value, json};
use tokio::sync::Mutex as AsyncMutex;

use super::instance::{Instance, Invoked};
use super::{HostState, Output, Trigger, rfc3339};

/// Receives messages of `function`'s queue while instances have room, forever.
pub(super) async fn listen(state: Arc<HostState>, function: String, queue: Arc<Queue>) {
    let settings = state.app.queues.clone();
    let per_instance = settings.batch_size + settings.new_batch_threshold;
    let poison = match state.queue(
        &connection_of(&state, &function),
        &format!("{}-poison", queue.name()),
    ) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::error!(function, "no poison queue: {e}");
            return;
        }
    };
    let mut backoff = Duration::ZERO;
    loop {
        let notified = state.capacity.notified();
        let live = state.live();
        let inflight: u32 = live.iter().map(|i| i.inflight.load(Ordering::SeqCst)).sum();
        let room = (live.len() as u32 * per_instance).saturating_sub(inflight);
        // Receive again once a batch's worth is free, or the running ones are down to the
        // new-batch threshold (per instance, as the host does).
        let threshold = live.len() as u32 * settings.new_batch_threshold;
        if room == 0 || (room < settings.batch_size && inflight > threshold) {
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            continue;
        }
        let want = room.min(settings.batch_size);
        let received = match queue.receive(want, state.options.message_lease).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(function, "cannot receive: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if received.is_empty() {
            // The host's random exponential back-off, capped by maxPollingInterval.
            backoff = (backoff * 2)
                .max(Duration::from_millis(50))
                .min(settings.max_polling_interval);
            tokio::time::sleep(backoff.mul_f64(0.8 + 0.2 * fastrand::f64())).await;
            continue;
        }
        backoff = Duration::ZERO;
        for message in received {
            let Some(instance) = state.pick(per_instance) else {
                // Every instance died since: the message comes back after its lease.
                state.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            instance.begin();
            tokio::spawn(deliver(
                state.clone(),
                function.clone(),
                queue.clone(),
                poison.clone(),
                instance,
                message,
            ));
        }
    }
}

fn connection_of(state: &HostState, function: &str) -> String {
    match state.app.functions.get(function).map(|f| &f.trigger) {
        Some(Trigger::Queue { connection, .. }) => connection.clone(),
        _ => "AzureWebJobsStorage".into(),
    }
}

/// Runs one message on `instance` and settles it: deleted, hidden again, moved to the poison
/// queue, or (its instance died) left to come back.
async fn deliver(
    state: Arc<HostState>,
    function: String,
    queue: Arc<Queue>,
    poison: Arc<Queue>,
    instance: Arc<Instance>,
    message: Message,
) {
    state.counters.invocations.fetch_add(1, Ordering::Relaxed);
    let held = Arc::new(AsyncMutex::new(message.clone()));
    let done = Arc::new(tokio::sync::Notify::new());
    let renew = tokio::spawn(renew_lease(
        queue.clone(),
        held.clone(),
        state.options.message_lease,
        done.clone(),
    ));
    let outcome = invoke(&state, &function, &instance, &message).await;
    // Stopped between renewals, never mid-request: the receipt held is the message's last.
    done.notify_one();
    let _ = renew.await;
    let message = held.lock().await.clone();
    instance.end();
    state.capacity.notify_waiters();
    match outcome {
        Ok(answer) => {
            state.counters.succeeded.fetch_add(1, Ordering::Relaxed);
            outputs(&state, &function, &answer).await;
            if let Err(e) = queue.delete(&message).await {
                tracing::warn!(function, id = %message.id, "cannot delete a done message: {e}");
            }
        }
        Err(Failure::Abandoned(why)) => {
            state.counters.abandoned.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(function, id = %message.id, "{why}; the message comes back after its lease");
        }
        Err(Failure::Failed(why)) => {
            state.counters.failed.fetch_add(1, Ordering::Relaxed);
            let max = state.app.queues.max_dequeue_count;
            tracing::warn!(function, id = %message.id, dequeue_count = message.dequeue_count, "invocation failed: {why}");
            if message.dequeue_count >= max {
                let moved = async {
                    poison.create().await?;
                    poison.send(&message.text, Duration::ZERO).await?;
                    queue.delete(&message).await
                };
                match moved.await {
                    Ok(()) => {
                        state.counters.poisoned.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(function, id = %message.id, queue = poison.name(), "message moved to the poison queue after {max} deliveries");
                    }
                    Err(e) => {
                        tracing::warn!(function, "cannot move a message to the poison queue: {e}")
                    }
                }
            } else if let Err(e) = queue
                .hide(&message, state.app.queues.visibility_timeout)
                .await
            {
                tracing::warn!(function, "cannot release a failed message: {e}");
            }
        }
    }
}

/// Keeps a running message hidden until `done`: its lease is renewed at half its length.
async fn renew_lease(
    queue: Arc<Queue>,
    held: Arc<AsyncMutex<Message>>,
    lease: Duration,
    done: Arc<tokio::sync::Notify>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease / 2) => {}
            _ = done.notified() => return,
        }
        let current = held.lock().await.clone();
        match queue.hide(&current, lease).await {
            Ok(renewed) => *held.lock().await = renewed,
            Err(e) => tracing::warn!(id = %current.id, "cannot renew a message's lease: {e}"),
        }
    }
}

enum Failure {
    /// The invocation failed: counted against the message.
    Failed(String),
    /// Its instance died: the message is left alone.
    Abandoned(String),
}

/// The request the handler gets for a queue message.
fn request_body(binding: &str, function: &str, text: String, m: &Message) -> Value {
    let time = |t: Option<SystemTime>| t.map(rfc3339).map(Value::from).unwrap_or(Value::Null);
    json!({
        "Data": { binding: text },
        "Metadata": {
            "DequeueCount": m.dequeue_count,
            "ExpirationTime": time(m.expiration_time),
            "Id": m.id,
            "InsertionTime": time(m.insertion_time),
            "NextVisibleTime": time(m.next_visible_time),
            "PopReceipt": m.pop_receipt,
            "sys": {
                "MethodName": function,
                "UtcNow": rfc3339(SystemTime::now()),
                "RandGuid": uuid_like(),
            }
        }
    })
}

/// Invokes the handler for one message; the answer's JSON on success.
async fn invoke(
    state: &HostState,
    function: &str,
    instance: &Instance,
    message: &Message,
) -> Result<Value, Failure> {
    let Some(Trigger::Queue { binding, .. }) =
        state.app.functions.get(function).map(|f| &f.trigger)
    else {
        return Err(Failure::Failed(format!(
            "`{function}` is not queue-triggered"
        )));
    };
    let text = if state.app.queues.base64 {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(message.text.trim())
            .map_err(|e| {
                Failure::Failed(format!(
                    "the message is not base64 ({e}); messageEncoding is base64"
                ))
            })?;
        String::from_utf8(bytes)
            .map_err(|_| Failure::Failed("the decoded message is not UTF-8 text".into()))?
    } else {
        message.text.clone()
    };
    let (latency, fail) = state.fault();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if fail {
        return Err(Failure::Failed(
            "an injected fault failed the invocation".into(),
        ));
    }
    let body = request_body(binding, function, text, message);
    let invocation_id = uuid_like();
    let headers = invocation_headers(&invocation_id);
    let bytes = Bytes::from(body.to_string());
    match instance
        .send(
            reqwest::Method::POST,
            &format!("/{function}"),
            &headers,
            bytes,
            state.app.function_timeout,
        )
        .await
    {
        Invoked::Answered { status, body, .. } if (200..300).contains(&status) => {
            let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            for line in answer["Logs"].as_array().into_iter().flatten() {
                tracing::info!(
                    function,
                    instance = instance.id,
                    "{}",
                    line.as_str().unwrap_or_default()
                );
            }
            Ok(answer)
        }
        Invoked::Answered { status, body, .. } => Err(Failure::Failed(format!(
            "the handler answered HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        ))),
        Invoked::Failed(why) if instance.is_dead() => Err(Failure::Abandoned(why)),
        Invoked::Failed(why) => Err(Failure::Failed(why)),
        Invoked::TimedOut => {
            state.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                function,
                instance = instance.id,
                "invocation ran past functionTimeout: instance killed"
            );
            instance.kill();
            Err(Failure::Failed(format!(
                "the invocation ran longer than functionTimeout ({:?}); its instance was stopped",
                state.app.function_timeout.unwrap_or_default()
            )))
        }
    }
}

/// The headers of an invocation request.
pub(super) fn invocation_headers(invocation_id: &str) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/json".into()),
        (
            "X-Azure-Functions-InvocationId".into(),
            invocation_id.into(),
        ),
        ("X-Azure-Functions-HostVersion".into(), HOST_VERSION.into()),
        (
            "User-Agent".into(),
            format!("Azure-Functions-Host/{HOST_VERSION}"),
        ),
    ]
}

/// The host version this one answers as.
pub(super) const HOST_VERSION: &str = "4.1036.1";

/// Puts the queue outputs of a handler's answer in their queues.
pub(super) async fn outputs(state: &HostState, function: &str, answer: &Value) {
    let Some(f) = state.app.functions.get(function) else {
        return;
    };
    for output in &f.outputs {
        let Output::Queue {
            name,
            queue,
            connection,
        } = output
        else {
            continue;
        };
        let value = if name == "$return" {
            &answer["ReturnValue"]
        } else {
            &answer["Outputs"][name.as_str()]
        };
        let items: Vec<&Value> = match value {
            Value::Null => continue,
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        let sent = async {
            let q = state.queue(connection, queue)?;
            q.create().await.map_err(|e| e.to_string())?;
            for item in items {
                let text = match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let text = if state.app.queues.base64 {
                    base64::engine::general_purpose::STANDARD.encode(text)
                } else {
                    text
                };
                q.send(&text, Duration::ZERO)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        };
        if let Err(e) = sent.await {
            tracing::warn!(function, output = %name, "cannot write a queue output: {e}");
        }
    }
}

/// A random id in the form of a GUID.
pub(super) fn uuid_like() -> String {
    let a = fastrand::u128(..);
    let h = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Sizes the instances to the queues: enough for their messages (one instance per
/// `batchSize + newBatchThreshold` waiting or running), at most the maximum; an instance idle
/// for `idle_timeout` is stopped.
pub(super) async fn scale(state: Arc<HostState>) {
    let per_instance =
        u64::from(state.app.queues.batch_size + state.app.queues.new_batch_threshold);
    let mut queues = Vec::new();
    for f in state.app.functions.values().filter(|f| !f.disabled) {
        if let Trigger::Queue {
            queue, connection, ..
        } = &f.trigger
            && let Ok(q) = state.queue(connection, queue)
        {
            queues.push(q);
        }
    }
    loop {
        let mut waiting = 0u64;
        for q in &queues {
            match q.approximate_count().await {
                Ok(n) => waiting += n,
                Err(e) => tracing::debug!("scale controller cannot count {}: {e}", q.name()),
            }
        }
        let live = state.live();
        let running: u64 = live
            .iter()
            .map(|i| u64::from(i.inflight.load(Ordering::SeqCst)))
            .sum();
        let wanted = (waiting + running).div_ceil(per_instance.max(1));
        let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
        if wanted > live.len() as u32 {
            state.scale_to(wanted);
        } else if waiting == 0 {
            // Scale in: stop instances idle for long enough.
            for i in &live {
                if i.idle_for()
                    .is_some_and(|d| d >= state.options.idle_timeout)
                {
                    tracing::info!(instance = i.id, "instance idle: stopped");
                    i.kill();
                }
            }
        }
        tokio::time::sleep(state.options.scale_interval).await;
    }
}
