//! Autoscale on pools: enabling and disabling it, the metrics a formula reads (sampled into each
//! pool's history), and the evaluation that resizes a pool to its formula's targets. The
//! emulator evaluates formulas on every scheduling pass rather than every
//! `autoScaleEvaluationInterval`, so a pool follows its formula at once.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::autoscale::{self, Outcome, Sample, metric};
use super::conditions::{Access, check};
use super::error::BatchError;
use super::odata::{json_body, set_resource_headers};
use super::pools::{MAX_POOL_NODES, allocate};
use super::resources::{check_known, now_string, require_str};
use super::server::{AccountState, Data, Shared};

/// The properties of an enable-autoscale body.
const AUTOSCALE_PROPERTIES: &[&str] = &["autoScaleFormula", "autoScaleEvaluationInterval"];
/// The shortest and longest evaluation interval the service takes.
const INTERVALS: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_secs(5 * 60),
    std::time::Duration::from_secs(168 * 3600),
);

/// Checks a formula and the evaluation interval, as the service does when autoscale is enabled
/// (what depends on the pool's samples fails later, in the pool's `autoScaleRun`).
pub(super) fn check_autoscale_settings(
    body: &Map<String, Value>,
    formula_required: bool,
) -> Result<(), BatchError> {
    match body.get("autoScaleFormula") {
        None | Some(Value::Null) if !formula_required => {}
        _ => {
            let formula = require_str(body, "autoScaleFormula")?;
            autoscale::validate(formula)
                .map_err(|why| BatchError::invalid_property("autoScaleFormula", formula, &why))?;
        }
    }
    if let Some(interval) = body
        .get("autoScaleEvaluationInterval")
        .filter(|v| !v.is_null())
    {
        let parsed = interval.as_str().and_then(super::exec::parse_duration);
        if !parsed.is_some_and(|d| d >= INTERVALS.0 && d <= INTERVALS.1) {
            return Err(BatchError::invalid_property(
                "autoScaleEvaluationInterval",
                &interval.to_string(),
                "The interval must be an ISO 8601 duration from 5 minutes (PT5M) to 168 hours.",
            ));
        }
    }
    Ok(())
}

/// The metrics of a pool now, in a formula's terms, and its task slots per node.
fn pool_metrics(data: &Data, pool: &str) -> (Sample, f64) {
    let mut sample: Sample = Default::default();
    let mut set = |name: &str, value: f64| {
        if let Some(i) = metric(name) {
            sample[i] = value;
        }
    };
    let (mut active, mut running, mut succeeded, mut failed) = (0.0, 0.0, 0.0, 0.0);
    for job in data.jobs.all() {
        let on_pool = job
            .body
            .get("poolInfo")
            .and_then(|i| i.get("poolId"))
            .and_then(Value::as_str)
            .is_some_and(|p| p.eq_ignore_ascii_case(pool));
        if !on_pool {
            continue;
        }
        let dependencies = job.body.get("usesTaskDependencies") == Some(&Value::Bool(true));
        let Some(tasks) = data.tasks.get(&job.id().to_lowercase()) else {
            continue;
        };
        for task in tasks.all() {
            match task.state() {
                // Only tasks that could start count, each instance of a multi-instance one.
                "active"
                    if job.state() == "active"
                        && (!dependencies || super::dependencies::ready(task, tasks)) =>
                {
                    active += task
                        .body
                        .get("multiInstanceSettings")
                        .and_then(|m| m.get("numberOfInstances"))
                        .and_then(Value::as_f64)
                        .unwrap_or(1.0);
                }
                "running" => running += 1.0,
                "completed" => {
                    let result = task
                        .body
                        .get("executionInfo")
                        .and_then(|e| e.get("result"))
                        .and_then(Value::as_str);
                    if result == Some("success") {
                        succeeded += 1.0;
                    } else {
                        failed += 1.0;
                    }
                }
                _ => {}
            }
        }
    }
    set("$ActiveTasks", active);
    set("$RunningTasks", running);
    set("$PendingTasks", active + running);
    set("$SucceededTasks", succeeded);
    set("$FailedTasks", failed);
    let resource = data.pools.get(pool);
    let field = |name: &str| {
        resource
            .and_then(|r| r.body.get(name))
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    set("$CurrentDedicatedNodes", field("currentDedicatedNodes"));
    set("$CurrentLowPriorityNodes", field("currentLowPriorityNodes"));
    let slots_per_node = field("taskSlotsPerNode").max(1.0);
    let nodes = data.nodes.get(&pool.to_lowercase());
    let count = nodes.map_or(0, Vec::len) as f64;
    let usable = nodes.map_or(0, |n| n.iter().filter(|n| n.takes_tasks()).count()) as f64;
    let busy: f64 = nodes.map_or(0.0, |n| n.iter().map(|n| n.slots_used as f64).sum());
    set("$SampleNodeCount", count);
    set("$UsableNodeCount", usable);
    // A node's "CPU" here is its share of busy task slots.
    if count > 0.0 {
        set("$CPUPercent", 100.0 * busy / (count * slots_per_node));
    }
    (sample, slots_per_node)
}

/// Samples a pool's metrics and evaluates `formula` on its history.
fn evaluate_on(data: &mut Data, pool: &str, formula: &str) -> Result<Outcome, String> {
    let (sample, slots) = pool_metrics(data, pool);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let targets = data.pools.get(pool).map_or((0, 0), |p| {
        let get = |k: &str| p.body.get(k).and_then(Value::as_i64).unwrap_or(0);
        (get("targetDedicatedNodes"), get("targetLowPriorityNodes"))
    });
    let history = data
        .autoscale_history
        .entry(pool.to_lowercase())
        .or_default();
    history.record(now, sample, slots);
    autoscale::evaluate(formula, history, targets)
}

/// An `autoScaleRun`: the values a formula set, or why it failed.
pub(super) fn autoscale_run(result: &Result<Outcome, String>) -> Value {
    match result {
        Ok(outcome) => json!({"timestamp": now_string(), "results": outcome.results}),
        Err(why) => json!({"timestamp": now_string(), "error": {
            "code": "AutoScalingFormulaEvaluationError",
            "message": format!("The autoscale formula could not be evaluated: {why}"),
        }}),
    }
}

/// `evaluateautoscale`: a formula's outcome on the pool, not applied.
pub(super) fn evaluate_formula(data: &mut Data, pool: &str, formula: &str) -> Value {
    autoscale_run(&evaluate_on(data, pool, formula))
}

/// Evaluates the formula of every autoscale pool and resizes it to the targets.
pub(super) fn autoscale_pools(state: &AccountState) {
    let mut data = state.data();
    let pools: Vec<(String, String)> = data
        .pools
        .all()
        .filter(|p| p.body.get("enableAutoScale") == Some(&Value::Bool(true)))
        .filter_map(|p| Some((p.id().to_string(), p.str("autoScaleFormula")?.to_string())))
        .collect();
    for (pool, formula) in pools {
        let result = evaluate_on(&mut data, &pool, &formula);
        let run = autoscale_run(&result);
        let Some(resource) = data.pools.get_mut(&pool) else {
            continue;
        };
        resource.body.insert("autoScaleRun".into(), run);
        let Ok(targets) = result else {
            continue;
        };
        // As on the service, targets are clamped to what a pool may have.
        let d = targets.dedicated.clamp(0, MAX_POOL_NODES);
        let l = targets.low_priority.clamp(0, MAX_POOL_NODES);
        let get = |k: &str| resource.body.get(k).and_then(Value::as_i64);
        if get("targetDedicatedNodes") != Some(d) || get("targetLowPriorityNodes") != Some(l) {
            resource.update([
                ("targetDedicatedNodes", Value::from(d)),
                ("targetLowPriorityNodes", Value::from(l)),
                ("currentDedicatedNodes", Value::from(d)),
                ("currentLowPriorityNodes", Value::from(l)),
            ]);
            allocate(&mut data, state, &pool, usize::try_from(d + l).unwrap_or(0));
            state.changed.notify_one();
        }
    }
}

/// `POST /pools/{pool}/enableautoscale`: a new formula, interval, or both (a pool without
/// autoscale needs a formula).
pub(super) async fn enable_autoscale(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, AUTOSCALE_PROPERTIES)?;
    let response = {
        let mut data = state.data();
        let resource = data.pool_mut(&pool)?;
        check(&headers, resource, Access::Write)?;
        let enabled = resource.body.get("enableAutoScale") == Some(&Value::Bool(true));
        check_autoscale_settings(&body, !enabled)?;
        let mut fields = vec![("enableAutoScale", Value::Bool(true))];
        for name in AUTOSCALE_PROPERTIES {
            if let Some(v) = body.get(*name).filter(|v| !v.is_null()) {
                fields.push((name, v.clone()));
            }
        }
        resource.update(fields);
        let mut response = StatusCode::OK.into_response();
        set_resource_headers(response.headers_mut(), resource);
        response
    };
    autoscale_pools(&state);
    Ok(response)
}

/// `POST /pools/{pool}/disableautoscale`.
pub(super) async fn disable_autoscale(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    let mut data = state.data();
    let resource = data.pool_mut(&pool)?;
    check(&headers, resource, Access::Write)?;
    resource.update([("enableAutoScale", Value::Bool(false))]);
    let mut response = StatusCode::OK.into_response();
    set_resource_headers(response.headers_mut(), resource);
    Ok(response)
}
