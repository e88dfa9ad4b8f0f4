//! Pools and their nodes: add, get, list, delete, resize, node allocation.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::conditions::{Access, check};
use super::error::BatchError;
use super::exec;
use super::middleware::query_pairs;
use super::nodes;
use super::odata::{created, json_body, list, one, set_resource_headers};
use super::pool_autoscale::{autoscale_pools, check_autoscale_settings};
use super::resources::{
    POOL_PROPERTIES, RESIZE_PROPERTIES, Resource, check_id, check_known, now_string, optional_int,
    require_str,
};
use super::server::{AccountState, Data, Shared};

pub(super) async fn add_pool(
    State(state): State<Shared>,
    request: Request,
) -> Result<Response, BatchError> {
    let mut body = json_body(request).await?;
    check_known(&body, POOL_PROPERTIES)?;
    let id = check_id(&body)?;
    require_str(&body, "vmSize")?;
    let dedicated = optional_int(&body, "targetDedicatedNodes", 0, MAX_POOL_NODES)?.unwrap_or(0);
    let spot = optional_int(&body, "targetLowPriorityNodes", 0, MAX_POOL_NODES)?.unwrap_or(0);
    optional_int(&body, "taskSlotsPerNode", 1, 256)?;
    if body.get("enableAutoScale") == Some(&Value::Bool(true)) {
        check_autoscale_settings(&body, true)?;
    }
    let url = format!("{}/pools/{id}", state.url);
    body.insert("url".into(), Value::String(url));
    body.insert("state".into(), Value::from("active"));
    body.insert("allocationState".into(), Value::from("steady"));
    body.insert(
        "allocationStateTransitionTime".into(),
        Value::from(now_string()),
    );
    body.insert("currentDedicatedNodes".into(), Value::from(dedicated));
    body.insert("currentLowPriorityNodes".into(), Value::from(spot));
    body.entry("taskSlotsPerNode").or_insert(Value::from(1));
    let mut data = state.data();
    let resource = data
        .pools
        .insert(&id, body, BatchError::exists("PoolExists", "pool"))?
        .clone();
    allocate(&mut data, &state, &id, (dedicated + spot) as usize);
    drop(data);
    autoscale_pools(&state);
    let data = state.data();
    let resource = data.pools.get(&id).cloned().unwrap_or(resource);
    state.changed.notify_one();
    Ok(created(&state, &format!("/pools/{id}"), &resource))
}

pub(super) async fn list_pools(
    State(state): State<Shared>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let data = state.data();
    list(&state, "pools", "/pools", &query, data.pools.all())
}

pub(super) async fn get_pool(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    let data = state.data();
    let resource = data
        .pools
        .get(&pool)
        .ok_or_else(|| BatchError::not_found("PoolNotFound", "pool"))?;
    check(&headers, resource, Access::Read)?;
    Ok(one(&state, "pools", resource))
}

pub(super) async fn delete_pool(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    let mut data = state.data();
    let resource = data
        .pools
        .get(&pool)
        .ok_or_else(|| BatchError::not_found("PoolNotFound", "pool"))?;
    check(&headers, resource, Access::Write)?;
    data.pools.remove(&pool);
    data.nodes.remove(&pool.to_lowercase());
    // Its nodes are gone, and with them the processes of the tasks they ran.
    let running: Vec<(String, String)> = data
        .tasks
        .iter()
        .flat_map(|(job, tasks)| tasks.all().map(move |t| (job, t)))
        .filter(|(_, t)| t.str("state") == Some("running"))
        .filter(|(_, t)| {
            t.body
                .get("nodeInfo")
                .and_then(|n| n.get("poolId"))
                .and_then(Value::as_str)
                .is_some_and(|p| p.eq_ignore_ascii_case(&pool))
        })
        .filter_map(|(job, t)| Some((job.clone(), t.str("id")?.to_string())))
        .collect();
    drop(data);
    for (job, task) in running {
        exec::stop_task(&state, &job, &task, exec::Stop::Requeue);
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

pub(super) async fn resize_pool(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, RESIZE_PROPERTIES)?;
    let dedicated = optional_int(&body, "targetDedicatedNodes", 0, MAX_POOL_NODES)?;
    let spot = optional_int(&body, "targetLowPriorityNodes", 0, MAX_POOL_NODES)?;
    let mut data = state.data();
    let resource = data.pool_mut(&pool)?;
    if resource.body.get("enableAutoScale") == Some(&Value::Bool(true)) {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "AutoScalingEnabled",
            "The specified pool has autoscale enabled; it cannot be resized manually.",
        ));
    }
    // Nodes are emulated: allocation completes at once.
    let mut fields = vec![("allocationStateTransitionTime", Value::from(now_string()))];
    if let Some(n) = dedicated {
        fields.push(("targetDedicatedNodes", Value::from(n)));
        fields.push(("currentDedicatedNodes", Value::from(n)));
    }
    if let Some(n) = spot {
        fields.push(("targetLowPriorityNodes", Value::from(n)));
        fields.push(("currentLowPriorityNodes", Value::from(n)));
    }
    resource.update(fields);
    let resource = resource.clone();
    let count = ["currentDedicatedNodes", "currentLowPriorityNodes"]
        .iter()
        .filter_map(|f| resource.body.get(*f).and_then(Value::as_i64))
        .sum::<i64>();
    allocate(&mut data, &state, &pool, count as usize);
    state.changed.notify_one();
    let mut response = StatusCode::ACCEPTED.into_response();
    set_resource_headers(response.headers_mut(), &resource);
    Ok(response)
}

/// Gives a pool its nodes, unless its allocation was made to fail: then it has none and
/// reports the error in `resizeErrors`, as the service does.
pub(super) fn allocate(data: &mut Data, state: &AccountState, pool: &str, count: usize) {
    let start_task = data
        .pools
        .get(pool)
        .and_then(|p| p.body.get("startTask").cloned());
    match data.failing_pools.get(&pool.to_lowercase()).cloned() {
        None => nodes::resize_nodes(
            &mut data.nodes,
            state.root.path(),
            pool,
            count,
            start_task.as_ref(),
        ),
        Some((code, message)) => {
            nodes::resize_nodes(&mut data.nodes, state.root.path(), pool, 0, None);
            if let Some(resource) = data.pools.get_mut(pool) {
                resource.update([
                    ("currentDedicatedNodes", Value::from(0)),
                    ("currentLowPriorityNodes", Value::from(0)),
                    ("resizeErrors", json!([{"code": code, "message": message}])),
                ]);
            }
        }
    }
}

/// The most nodes of each kind a pool may have here (the service's default quota is lower).
pub(super) const MAX_POOL_NODES: i64 = 10_000;

pub(super) async fn list_nodes(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let data = state.data();
    let vm_size = data
        .pools
        .get(&pool)
        .ok_or_else(|| BatchError::not_found("PoolNotFound", "pool"))?
        .str("vmSize")
        .unwrap_or("");
    let nodes: Vec<Resource> = data
        .nodes
        .get(&pool.to_lowercase())
        .map(|list| {
            list.iter()
                .filter_map(|n| match nodes::node_json(&state.url, &pool, vm_size, n) {
                    Value::Object(body) => Some(Resource::new(body, std::time::SystemTime::now())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    list(
        &state,
        "nodes",
        &format!("/pools/{pool}/nodes"),
        &query,
        nodes.iter(),
    )
}

pub(super) async fn get_node(
    State(state): State<Shared>,
    Path((pool, node)): Path<(String, String)>,
) -> Result<Response, BatchError> {
    let data = state.data();
    if data.pools.get(&pool).is_none() {
        return Err(BatchError::not_found("PoolNotFound", "pool"));
    }
    let found = data
        .nodes
        .get(&pool.to_lowercase())
        .and_then(|list| list.iter().find(|n| n.id == node))
        .ok_or_else(|| BatchError::not_found("NodeNotFound", "node"))?;
    let vm_size = data
        .pools
        .get(&pool)
        .and_then(|p| p.str("vmSize"))
        .unwrap_or("");
    let mut body = nodes::node_json(&state.url, &pool, vm_size, found);
    body["odata.metadata"] = Value::String(format!("{}/$metadata#nodes/@Element", state.url));
    Ok(Json(body).into_response())
}
