//! Changing a job after it was added: update (`PATCH`, omitted properties unchanged), replace
//! (`PUT`, omitted properties back to their defaults), disable and enable; and the task counts
//! Microsoft recommends polling for progress.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::conditions::{Access, check};
use super::error::BatchError;
use super::exec;
use super::odata::{json_body, set_resource_headers};
use super::placement::complete_job_if_done;
use super::resources::{Resource, check_known, now_string, optional_int};
use super::server::{Data, Shared};

/// What an update (`PATCH`) may change.
const UPDATE_PROPERTIES: &[&str] = &[
    "priority",
    "allowTaskPreemption",
    "maxParallelTasks",
    "constraints",
    "poolInfo",
    "onAllTasksComplete",
    "metadata",
    "networkConfiguration",
];
/// What a replace (`PUT`) sets; the rest of a job is fixed when it is added.
const REPLACE_PROPERTIES: &[&str] = &[
    "priority",
    "allowTaskPreemption",
    "maxParallelTasks",
    "constraints",
    "poolInfo",
    "onAllTasksComplete",
    "metadata",
];
/// A disable body.
const DISABLE_PROPERTIES: &[&str] = &["disableTasks"];

/// `PATCH /jobs/{job}`.
pub(super) async fn update_job(
    State(state): State<Shared>,
    Path(job): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, UPDATE_PROPERTIES)?;
    change_job(&state, &job, &headers, body, false)
}

/// `PUT /jobs/{job}`.
pub(super) async fn replace_job(
    State(state): State<Shared>,
    Path(job): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, REPLACE_PROPERTIES)?;
    if !body.contains_key("poolInfo") {
        return Err(BatchError::missing_property("poolInfo"));
    }
    change_job(&state, &job, &headers, body, true)
}

fn change_job(
    state: &Shared,
    job: &str,
    headers: &HeaderMap,
    body: Map<String, Value>,
    replace: bool,
) -> Result<Response, BatchError> {
    optional_int(&body, "priority", -1000, 1000)?;
    if let Some(n) = optional_int(&body, "maxParallelTasks", -1, i64::from(i32::MAX))?
        && n == 0
    {
        return Err(BatchError::invalid_property(
            "maxParallelTasks",
            "0",
            "The value must be -1 or greater than 0.",
        ));
    }
    let completion = match body.get("onAllTasksComplete") {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if ["noaction", "terminatejob"].contains(&s.to_ascii_lowercase().as_str()) =>
        {
            Some(s.to_ascii_lowercase())
        }
        Some(other) => {
            return Err(BatchError::invalid_property(
                "onAllTasksComplete",
                &other.to_string(),
                "The value must be noaction or terminatejob.",
            ));
        }
    };
    let mut data = state.data();
    let resource = data.job_mut(job)?;
    check(headers, resource, Access::Write)?;
    if resource.state() == "completed" || resource.state() == "terminating" {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "JobCompleted",
            "The specified job is already in a completed state.",
        ));
    }
    // Once automatic termination is on, it cannot be turned off (a replace that omits it
    // asks for noaction).
    let current = resource
        .str("onAllTasksComplete")
        .unwrap_or("noaction")
        .to_ascii_lowercase();
    let wanted = completion
        .clone()
        .or_else(|| replace.then(|| "noaction".to_string()));
    if current == "terminatejob" && wanted.as_deref() == Some("noaction") {
        return Err(BatchError::invalid_property(
            "onAllTasksComplete",
            "noaction",
            "A job's completion behavior cannot be changed from terminatejob to noaction.",
        ));
    }
    if let Some(info) = body.get("poolInfo")
        && resource.body.get("poolInfo") != Some(info)
        && resource.state() != "disabled"
    {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "OperationInvalidForCurrentState",
            "The pool of a job can be changed only while the job is disabled.",
        ));
    }
    let defaults = [
        ("priority", Value::from(0)),
        ("allowTaskPreemption", Value::Bool(false)),
        ("maxParallelTasks", Value::from(-1)),
        ("constraints", Value::Null),
        ("onAllTasksComplete", Value::from("noaction")),
        ("metadata", Value::Null),
    ];
    let mut fields: Vec<(&'static str, Value)> = Vec::new();
    for &name in UPDATE_PROPERTIES {
        match body.get(name) {
            Some(Value::Null) | None if replace => {
                if let Some((_, default)) = defaults.iter().find(|(n, _)| *n == name) {
                    fields.push((name, default.clone()));
                }
            }
            Some(Value::Null) | None => {}
            Some(value) => fields.push((name, value.clone())),
        }
    }
    if let Some(mode) = wanted {
        fields.push(("onAllTasksComplete", Value::from(mode)));
    }
    resource.update(fields);
    // Emptied properties are absent on the service, not null.
    resource.body.retain(|_, v| !v.is_null());
    let mut response = StatusCode::OK.into_response();
    set_resource_headers(response.headers_mut(), resource);
    // A job switched to terminatejob whose tasks are all done ends now.
    complete_job_if_done(&mut data, job);
    let ended = data.jobs.get(job).is_some_and(|j| j.state() == "completed");
    drop(data);
    if ended {
        super::release::release_job(state, job);
    }
    state.changed.notify_one();
    Ok(response)
}

/// `POST /jobs/{job}/disable`: no new task starts; running ones are requeued, terminated or
/// left to finish (`disableTasks`).
pub(super) async fn disable_job(
    State(state): State<Shared>,
    Path(job): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, DISABLE_PROPERTIES)?;
    let how = match body.get("disableTasks").and_then(Value::as_str) {
        Some(s) if ["requeue", "terminate", "wait"].contains(&s.to_ascii_lowercase().as_str()) => {
            s.to_ascii_lowercase()
        }
        Some(s) => {
            return Err(BatchError::invalid_property(
                "disableTasks",
                s,
                "The value must be requeue, terminate or wait.",
            ));
        }
        None => return Err(BatchError::missing_property("disableTasks")),
    };
    let mut data = state.data();
    let resource = data.job_mut(&job)?;
    check(&headers, resource, Access::Write)?;
    if resource.state() != "active" {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "JobNotActive",
            "The specified job is not in an active state.",
        ));
    }
    let running = disable(&mut data, &job);
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Some(resource) = data.jobs.get(&job) {
        set_resource_headers(response.headers_mut(), resource);
    }
    drop(data);
    let stop = match how.as_str() {
        "requeue" => Some(exec::Stop::Requeue),
        "terminate" => Some(exec::Stop::Terminate),
        _ => None,
    };
    if let Some(stop) = stop {
        for task in running {
            exec::stop_task(&state, &job, &task, stop);
        }
    }
    Ok(response)
}

/// Disables an active job; returns its running tasks (for the caller to stop or let finish).
pub(super) fn disable(data: &mut Data, job: &str) -> Vec<String> {
    let Some(resource) = data.jobs.get_mut(job) else {
        return Vec::new();
    };
    resource.update([
        ("previousState", Value::from("active")),
        ("state", Value::from("disabled")),
        ("stateTransitionTime", Value::from(now_string())),
    ]);
    data.running_tasks(job)
}

/// `POST /jobs/{job}/enable`.
pub(super) async fn enable_job(
    State(state): State<Shared>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    let mut data = state.data();
    let resource = data.job_mut(&job)?;
    check(&headers, resource, Access::Write)?;
    if resource.state() != "disabled" {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "JobNotDisabled",
            "The specified job is not in a disabled state.",
        ));
    }
    resource.update([
        ("previousState", Value::from("disabled")),
        ("state", Value::from("active")),
        ("stateTransitionTime", Value::from(now_string())),
    ]);
    let mut response = StatusCode::ACCEPTED.into_response();
    set_resource_headers(response.headers_mut(), resource);
    drop(data);
    state.changed.notify_one();
    Ok(response)
}

/// `GET /jobs/{job}/taskcounts`: tasks and slots by state, succeeded and failed apart.
pub(super) async fn task_counts(
    State(state): State<Shared>,
    Path(job): Path<String>,
) -> Result<Response, BatchError> {
    let data = state.data();
    if data.jobs.get(&job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    let mut tasks = Counts::default();
    let mut slots = Counts::default();
    if let Some(all) = data.tasks.get(&job.to_lowercase()) {
        for task in all.all() {
            let n = task
                .body
                .get("requiredSlots")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            tasks.add(task, 1);
            slots.add(task, n);
        }
    }
    Ok(Json(json!({
        "odata.metadata": format!("{}/$metadata#taskcounts/@Element", state.url),
        "taskCounts": tasks.json(),
        "taskSlotCounts": slots.json(),
    }))
    .into_response())
}

#[derive(Default)]
struct Counts {
    active: u64,
    running: u64,
    completed: u64,
    succeeded: u64,
    failed: u64,
}

impl Counts {
    fn add(&mut self, task: &Resource, n: u64) {
        match task.state() {
            "active" | "preparing" => self.active += n,
            "running" => self.running += n,
            "completed" => {
                self.completed += n;
                let result = task
                    .body
                    .get("executionInfo")
                    .and_then(|e| e.get("result"))
                    .and_then(Value::as_str);
                if result == Some("success") {
                    self.succeeded += n;
                } else {
                    self.failed += n;
                }
            }
            _ => {}
        }
    }

    fn json(&self) -> Value {
        json!({
            "active": self.active, "running": self.running, "completed": self.completed,
            "succeeded": self.succeeded, "failed": self.failed,
        })
    }
}
