//! The emulator's own admin calls (`/_emulator/...`, signed like the API): lose a node, fail a
//! pool's allocation, firewall storage from a pool, inject API faults, rotate the bearer token.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::BatchError;
use super::exec;
use super::nodes;
use super::odata::json_body;
use super::pools::allocate;
use super::server::{AccountState, Shared};

/// Admin: the node is lost. Its running tasks go back to the queue (as on real node loss) and
/// a fresh node replaces it.
pub(super) async fn remove_node(
    State(state): State<Shared>,
    Path((pool, node)): Path<(String, String)>,
) -> Result<Response, BatchError> {
    let on_node: Vec<(String, String)> = {
        let mut data = state.data();
        let nodes = data
            .nodes
            .get_mut(&pool.to_lowercase())
            .ok_or_else(|| BatchError::not_found("PoolNotFound", "pool"))?;
        let before = nodes.len();
        nodes.retain(|n| n.id != node);
        if nodes.len() == before {
            return Err(BatchError::not_found("NodeNotFound", "node"));
        }
        let start_task = data
            .pools
            .get(&pool)
            .and_then(|p| p.body.get("startTask").cloned());
        nodes::replace_lost_node(
            &mut data.nodes,
            state.root.path(),
            &pool,
            start_task.as_ref(),
        );
        super::pool_update::running_on(&data, std::slice::from_ref(&node))
    };
    for (job, task) in &on_node {
        exec::stop_task(&state, job, task, exec::Stop::Requeue);
    }
    tracing::info!(pool, node, requeued = on_node.len(), "node removed");
    Ok(Json(json!({"requeuedTasks": on_node.len()})).into_response())
}

/// A fault to answer instead of the request, at the configured rate (after any latency).
pub(super) async fn injected_fault(state: &AccountState) -> Option<BatchError> {
    let (latency, fault) = {
        let mut data = state.data();
        let latency = data.latency_ms;
        data.fault_rng ^= data.fault_rng << 13;
        data.fault_rng ^= data.fault_rng >> 7;
        data.fault_rng ^= data.fault_rng << 17;
        let hit = data.fault_ppm > 0 && data.fault_rng % 1_000_000 < data.fault_ppm;
        (latency, hit.then_some(data.fault_status))
    };
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    let status = StatusCode::from_u16(fault?).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let code = match status.as_u16() {
        503 => "ServerBusy",
        429 => "TooManyRequests",
        _ => "InternalError",
    };
    Some(BatchError::new(
        status,
        code,
        "Injected by the emulator (/_emulator/faults).",
    ))
}

/// Admin: the allocation of pool `pool` (now or when created) fails with a code and message.
pub(super) async fn fail_allocation(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await.unwrap_or_default();
    let text = |name: &str, default: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let code = text("code", "AllocationFailed");
    let message = text(
        "message",
        "Desired number of dedicated nodes could not be allocated",
    );
    let mut data = state.data();
    data.failing_pools
        .insert(pool.to_lowercase(), (code, message));
    allocate(&mut data, &state, &pool, 0);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Admin: `{"status": 403}` makes storage refuse the pool's nodes (as a storage firewall that
/// does not let their network in does): every resource-file download there fails with that
/// status. `{"status": 0}` lets them in again.
pub(super) async fn set_storage_firewall(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    let status = body.get("status").and_then(Value::as_u64).unwrap_or(403);
    let mut data = state.data();
    if status == 0 {
        data.storage_refused.remove(&pool.to_lowercase());
    } else if (400..600).contains(&status) {
        data.storage_refused
            .insert(pool.to_lowercase(), status as u16);
    } else {
        return Err(BatchError::invalid_property(
            "status",
            &status.to_string(),
            "0, or an HTTP error status from 400 to 599",
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Admin: `{"rate": 0.1, "status": 503, "latencyMs": 20}` makes that share of API requests
/// fail (and every request slower); `{"rate": 0}` stops it.
pub(super) async fn set_faults(
    State(state): State<Shared>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    let rate = body.get("rate").and_then(Value::as_f64).unwrap_or(0.0);
    if !(0.0..=1.0).contains(&rate) {
        return Err(BatchError::invalid_property(
            "rate",
            &rate.to_string(),
            "from 0 to 1",
        ));
    }
    let mut data = state.data();
    data.fault_ppm = (rate * 1_000_000.0) as u64;
    data.fault_status = body.get("status").and_then(Value::as_u64).unwrap_or(503) as u16;
    data.latency_ms = body.get("latencyMs").and_then(Value::as_u64).unwrap_or(0);

    if data.fault_rng == 0 {
        data.fault_rng = 0x5EED_1234_ABCD;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Admin: `{"token": "..."}` makes that the only bearer token accepted from now on, as if the
/// previous one had been revoked.
pub(super) async fn rotate_bearer_token(
    State(state): State<Shared>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    let token = body
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| BatchError::invalid_property("token", "", "a string"))?;
    state.data().bearer_token = Some(token.to_string());
    Ok(StatusCode::NO_CONTENT.into_response())
}
