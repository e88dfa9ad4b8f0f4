//! Changing a pool after it was added: update (`PATCH`), replace properties
//! (`updateproperties`), stop a resize, remove chosen nodes, try an autoscale formula
//! (`evaluateautoscale`); and the account-wide node counts and supported images.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::conditions::{Access, check};
use super::error::BatchError;
use super::exec;
use super::middleware::query_pairs;
use super::nodes;
use super::odata::{json_body, list, set_resource_headers};
use super::pool_autoscale::evaluate_formula;
use super::pools::MAX_POOL_NODES;
use super::resources::{Resource, check_known, now_string, optional_int};
use super::server::{Data, Shared};

/// What an update (`PATCH`) may change (azure-batch 15.1.0's `BatchPoolUpdateOptions`).
const UPDATE_PROPERTIES: &[&str] = &[
    "displayName",
    "vmSize",
    "enableInterNodeCommunication",
    "startTask",
    "applicationPackageReferences",
    "metadata",
    "virtualMachineConfiguration",
    "taskSlotsPerNode",
    "taskSchedulingPolicy",
    "networkConfiguration",
    "userAccounts",
    "mountConfiguration",
    "upgradePolicy",
    "resourceTags",
    "targetNodeCommunicationMode",
    "certificateReferences",
];
/// What a replace (`updateproperties`) sets; omitted ones are cleared.
const REPLACE_PROPERTIES: &[&str] = &[
    "startTask",
    "applicationPackageReferences",
    "metadata",
    "certificateReferences",
    "targetNodeCommunicationMode",
];
/// Properties that change the nodes themselves: the service takes them only while the pool
/// has no nodes.
const NEEDS_EMPTY_POOL: &[&str] = &[
    "vmSize",
    "enableInterNodeCommunication",
    "virtualMachineConfiguration",
    "taskSlotsPerNode",
    "taskSchedulingPolicy",
    "networkConfiguration",
    "userAccounts",
    "mountConfiguration",
];
const REMOVE_PROPERTIES: &[&str] = &["nodeList", "resizeTimeout", "nodeDeallocationOption"];
/// The most nodes one `removenodes` call names, as on the service.
const MAX_REMOVE: usize = 100;

/// `PATCH /pools/{pool}`: the properties given replace the pool's; the rest stay.
pub(super) async fn update_pool(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, UPDATE_PROPERTIES)?;
    optional_int(&body, "taskSlotsPerNode", 1, 256)?;
    let mut data = state.data();
    let has_nodes = data
        .nodes
        .get(&pool.to_lowercase())
        .is_some_and(|n| !n.is_empty());
    let resource = data.pool_mut(&pool)?;
    check(&headers, resource, Access::Write)?;
    if has_nodes && let Some(name) = NEEDS_EMPTY_POOL.iter().find(|n| body.contains_key(**n)) {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "OperationInvalidForCurrentState",
            format!("{name} can be changed only while the pool has no nodes."),
        )
        .with("PropertyName", *name));
    }
    let fields: Vec<(&'static str, Value)> = UPDATE_PROPERTIES
        .iter()
        .filter_map(|&name| body.get(name).map(|v| (name, v.clone())))
        .collect();
    resource.update(fields);
    resource.body.retain(|_, v| !v.is_null());
    Ok(changed(&state, resource, StatusCode::OK))
}

/// `POST /pools/{pool}/updateproperties`: replaces the start task, application packages and
/// metadata (omitted ones are cleared; packages and metadata must be given, if empty).
pub(super) async fn replace_pool_properties(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, REPLACE_PROPERTIES)?;
    for required in ["applicationPackageReferences", "metadata"] {
        if !body.get(required).is_some_and(Value::is_array) {
            return Err(BatchError::missing_property(required));
        }
    }
    let mut data = state.data();
    let resource = data.pool_mut(&pool)?;
    check(&headers, resource, Access::Write)?;
    let fields: Vec<(&'static str, Value)> = REPLACE_PROPERTIES
        .iter()
        .map(|&name| (name, body.get(name).cloned().unwrap_or(Value::Null)))
        .collect();
    resource.update(fields);
    resource.body.retain(|_, v| !v.is_null());
    Ok(changed(&state, resource, StatusCode::NO_CONTENT))
}

/// `POST /pools/{pool}/stopresize`. Allocation here completes at once, so a pool is never
/// caught mid-resize: the call settles the pool in its current size.
pub(super) async fn stop_resize(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    let mut data = state.data();
    let resource = data.pool_mut(&pool)?;
    check(&headers, resource, Access::Write)?;
    resource.update([
        ("allocationState", Value::from("steady")),
        ("allocationStateTransitionTime", Value::from(now_string())),
    ]);
    Ok(changed(&state, resource, StatusCode::ACCEPTED))
}

/// `POST /pools/{pool}/removenodes`: the named nodes leave the pool, which shrinks by as many.
/// Their running tasks are requeued (`requeue`, the default) or ended (`terminate`), or the
/// nodes leave once their tasks finish (`taskcompletion`, `retaineddata`).
pub(super) async fn remove_nodes(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, REMOVE_PROPERTIES)?;
    let ids: Vec<String> = match body.get("nodeList") {
        Some(Value::Array(ids)) if !ids.is_empty() && ids.len() <= MAX_REMOVE => ids
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                BatchError::invalid_property("nodeList", "", "Node ids must be strings.")
            })?,
        Some(other) => {
            return Err(BatchError::invalid_property(
                "nodeList",
                &other.to_string(),
                &format!("The value must list 1 to {MAX_REMOVE} node ids."),
            ));
        }
        None => return Err(BatchError::missing_property("nodeList")),
    };
    let option = deallocation_option(&body)?;
    let mut data = state.data();
    let resource = data.pool_mut(&pool)?;
    check(&headers, resource, Access::Write)?;
    if resource.body.get("enableAutoScale") == Some(&Value::Bool(true)) {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "AutoScalingEnabled",
            "The specified pool has autoscale enabled; nodes cannot be removed manually.",
        ));
    }
    let list = data.nodes.entry(pool.to_lowercase()).or_default();
    if let Some(missing) = ids.iter().find(|id| !list.iter().any(|n| &n.id == *id)) {
        return Err(BatchError::not_found("NodeNotFound", "node").with("NodeId", missing.clone()));
    }
    let wait = matches!(option.as_str(), "taskcompletion" | "retaineddata");
    for node in list.iter_mut().filter(|n| ids.contains(&n.id)) {
        node.leaving = true;
    }
    list.retain(|n| !(n.leaving && (n.slots_used == 0 || !wait)));
    let removed = ids.len() as i64;
    let on_nodes = if wait {
        Vec::new()
    } else {
        running_on(&data, &ids)
    };
    if let Some(resource) = data.pools.get_mut(&pool) {
        shrink_targets(resource, removed);
    }
    let response = match data.pools.get(&pool) {
        Some(resource) => changed(&state, resource, StatusCode::ACCEPTED),
        None => StatusCode::ACCEPTED.into_response(),
    };
    drop(data);
    let stop = if option == "terminate" {
        exec::Stop::Terminate
    } else {
        exec::Stop::Requeue
    };
    for (job, task) in on_nodes {
        exec::stop_task(&state, &job, &task, stop);
    }
    Ok(response)
}

/// `POST /pools/{pool}/evaluateautoscale`: evaluates a formula on the pool without applying
/// it; the pool must have autoscale enabled.
pub(super) async fn evaluate_autoscale(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, &["autoScaleFormula"])?;
    let formula = super::resources::require_str(&body, "autoScaleFormula")?.to_string();
    let mut data = state.data();
    let resource = data
        .pools
        .get(&pool)
        .ok_or_else(|| BatchError::not_found("PoolNotFound", "pool"))?;
    if resource.body.get("enableAutoScale") != Some(&Value::Bool(true)) {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "AutoScaleNotEnabled",
            "The specified pool does not have autoscale enabled.",
        ));
    }
    let mut body = evaluate_formula(&mut data, &pool, &formula);
    body["odata.metadata"] = Value::from(format!(
        "{}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.AutoScaleRun",
        state.url
    ));
    Ok(Json(body).into_response())
}

/// `GET /nodecounts`: each pool's nodes by state (all emulated nodes are dedicated).
pub(super) async fn node_counts(
    State(state): State<Shared>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let data = state.data();
    let items: Vec<Resource> = data
        .pools
        .all()
        .filter_map(|pool| {
            let id = pool.id();
            let mut counts = json!({
                "creating": 0, "idle": 0, "offline": 0, "preempted": 0, "rebooting": 0,
                "reimaging": 0, "running": 0, "starting": 0, "startTaskFailed": 0,
                "leavingPool": 0, "unknown": 0, "unusable": 0, "waitingForStartTask": 0,
                "deallocated": 0, "deallocating": 0, "total": 0, "upgradingOS": 0,
            });
            let low_priority = counts.clone();
            for node in data.nodes.get(&id.to_lowercase()).into_iter().flatten() {
                let key = match node.state() {
                    "waitingforstarttask" => "waitingForStartTask",
                    "starttaskfailed" => "startTaskFailed",
                    "leavingpool" => "leavingPool",
                    other => other,
                };
                for k in [key, "total"] {
                    counts[k] = Value::from(counts[k].as_i64().unwrap_or(0) + 1);
                }
            }
            let body = json!({"poolId": id, "dedicated": counts, "lowPriority": low_priority});
            body.as_object()
                .cloned()
                .map(|b| Resource::new(b, std::time::SystemTime::now()))
        })
        .collect();
    list(
        &state,
        "poolnodecounts",
        "/nodecounts",
        &query,
        items.iter(),
    )
}

/// `GET /supportedimages`: the Linux images the service lists most often. Every image runs as
/// a local process here; the list is what SDK code that picks an image expects to find.
pub(super) async fn supported_images(
    State(state): State<Shared>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let images = [
        (
            "canonical",
            "ubuntu-24_04-lts",
            "server",
            "batch.node.ubuntu 24.04",
            "linux",
        ),
        (
            "canonical",
            "0001-com-ubuntu-server-jammy",
            "22_04-lts",
            "batch.node.ubuntu 22.04",
            "linux",
        ),
        (
            "almalinux",
            "almalinux-hpc",
            "8_7-hpc-gen2",
            "batch.node.el 8",
            "linux",
        ),
        (
            "microsoftwindowsserver",
            "windowsserver",
            "2022-datacenter",
            "batch.node.windows amd64",
            "windows",
        ),
    ];
    let items: Vec<Resource> = images
        .iter()
        .filter_map(|(publisher, offer, sku, agent, os)| {
            json!({
                "nodeAgentSKUId": agent,
                "imageReference": {"publisher": publisher, "offer": offer, "sku": sku, "version": "latest"},
                "osType": os,
                "verificationType": "verified",
                "capabilities": [],
            })
            .as_object()
            .cloned()
            .map(|b| Resource::new(b, std::time::SystemTime::now()))
        })
        .collect();
    list(
        &state,
        "supportedimages",
        "/supportedimages",
        &query,
        items.iter(),
    )
}

/// A response with the pool's new ETag, and the scheduler told.
fn changed(state: &Shared, resource: &Resource, status: StatusCode) -> Response {
    let mut response = status.into_response();
    set_resource_headers(response.headers_mut(), resource);
    state.changed.notify_one();
    response
}

/// `nodeDeallocationOption`, lower-cased (`requeue` when absent).
pub(super) fn deallocation_option(body: &Map<String, Value>) -> Result<String, BatchError> {
    match body.get("nodeDeallocationOption") {
        None | Some(Value::Null) => Ok("requeue".into()),
        Some(Value::String(s))
            if ["requeue", "terminate", "taskcompletion", "retaineddata"]
                .contains(&s.to_ascii_lowercase().as_str()) =>
        {
            Ok(s.to_ascii_lowercase())
        }
        Some(other) => Err(BatchError::invalid_property(
            "nodeDeallocationOption",
            &other.to_string(),
            "The value must be requeue, terminate, taskcompletion or retaineddata.",
        )),
    }
}

/// The running tasks (job, task) on the named nodes.
pub(super) fn running_on(data: &Data, ids: &[String]) -> Vec<(String, String)> {
    data.tasks
        .values()
        .flat_map(|tasks| tasks.all())
        .filter(|t| t.state() == "running")
        .filter_map(|t| {
            let node = t.body.get("nodeInfo")?.get("nodeId")?.as_str()?;
            if !ids.iter().any(|id| id == node) {
                return None;
            }
            let url = t.str("url")?;
            let mut parts = url.rsplit('/');
            let task = parts.next()?.to_string();
            parts.next(); // "tasks"
            Some((parts.next()?.to_string(), task))
        })
        .collect()
}

/// Lowers a pool's targets by `removed` nodes, dedicated first.
fn shrink_targets(resource: &mut Resource, removed: i64) {
    let get = |r: &Resource, k: &str| r.body.get(k).and_then(Value::as_i64).unwrap_or(0);
    let dedicated = get(resource, "targetDedicatedNodes");
    let spot = get(resource, "targetLowPriorityNodes");
    let from_dedicated = removed.min(dedicated);
    let from_spot = (removed - from_dedicated).min(spot);
    let (d, s) = (
        (dedicated - from_dedicated).clamp(0, MAX_POOL_NODES),
        (spot - from_spot).clamp(0, MAX_POOL_NODES),
    );
    resource.update([
        ("targetDedicatedNodes", Value::from(d)),
        ("targetLowPriorityNodes", Value::from(s)),
        ("currentDedicatedNodes", Value::from(d)),
        ("currentLowPriorityNodes", Value::from(s)),
        ("allocationStateTransitionTime", Value::from(now_string())),
    ]);
}

/// Drops a pool's nodes that were removed while busy once they are idle.
pub(super) fn drop_left_nodes(data: &mut Data, pool: &str) {
    if let Some(list) = data.nodes.get_mut(&pool.to_lowercase()) {
        list.retain(|n: &nodes::Node| !(n.leaving && n.slots_used == 0));
    }
}
