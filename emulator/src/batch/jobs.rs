//! Jobs: add, get, list, terminate, delete, and how the job preparation task went on each node.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::conditions::{Access, check};
use super::error::BatchError;
use super::exec;
use super::middleware::query_pairs;
use super::odata::{created, json_body, list, one, set_resource_headers};
use super::preparation;
use super::release::release_job;
use super::resources::{
    JOB_PROPERTIES, Resource, TERMINATE_PROPERTIES, check_id, check_known, now_string, optional_int,
};
use super::server::{Data, Shared};

pub(super) async fn terminate_job(
    State(state): State<Shared>,
    Path(job): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, BatchError> {
    let has_body = request
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "0");
    let reason = if has_body {
        let body = json_body(request).await?;
        check_known(&body, TERMINATE_PROPERTIES)?;
        match body.get("terminateReason") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => Some(r.clone()),
            Some(other) => {
                return Err(BatchError::invalid_property(
                    "terminateReason",
                    &other.to_string(),
                    "The value must be a string.",
                ));
            }
        }
    } else {
        None
    };
    let mut data = state.data();
    let resource = data.job_mut(&job)?;
    if resource.state() == "completed" {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "JobCompleted",
            "The specified job is already in a completed state.",
        ));
    }
    check(&headers, resource, Access::Write)?;
    let stopped = end_job(
        &mut data,
        &job,
        reason.as_deref().unwrap_or("UserTerminate"),
    );
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Some(resource) = data.jobs.get(&job) {
        set_resource_headers(response.headers_mut(), resource);
    }
    drop(data);
    for task in stopped {
        exec::stop_task(&state, &job, &task, exec::Stop::Terminate);
    }
    release_job(&state, &job);
    Ok(response)
}

/// Completes a job with `reason`, as terminating it does: its unfinished tasks end with it.
/// Returns the tasks that were running, for the caller to stop once the data is unlocked.
pub(super) fn end_job(data: &mut Data, job: &str, reason: &str) -> Vec<String> {
    let Some(resource) = data.jobs.get_mut(job) else {
        return Vec::new();
    };
    let now = now_string();
    let previous = resource.state().to_string();
    resource.update([
        ("state", Value::from("completed")),
        ("previousState", Value::from(previous)),
        ("stateTransitionTime", Value::from(now.clone())),
        (
            "executionInfo",
            json!({"endTime": now, "terminateReason": reason}),
        ),
    ]);
    let mut stopped = Vec::new();
    if let Some(tasks) = data.tasks.get_mut(&job.to_lowercase()) {
        for task in tasks.all_mut() {
            if task.state() != "completed" {
                if task.state() == "running" {
                    stopped.push(task.id().to_string());
                }
                exec::end_task(
                    task,
                    "The task was terminated because its job was terminated",
                );
            }
        }
    }
    stopped
}

pub(super) async fn add_job(
    State(state): State<Shared>,
    request: Request,
) -> Result<Response, BatchError> {
    let mut body = json_body(request).await?;
    check_known(&body, JOB_PROPERTIES)?;
    let id = check_id(&body)?;
    match body.get("poolInfo") {
        Some(Value::Object(info))
            if info.contains_key("poolId") || info.contains_key("autoPoolSpecification") => {}
        Some(Value::Object(_)) => return Err(BatchError::missing_property("poolInfo.poolId")),
        Some(other) => {
            return Err(BatchError::invalid_property(
                "poolInfo",
                &other.to_string(),
                "The value must be an object.",
            ));
        }
        None => return Err(BatchError::missing_property("poolInfo")),
    }
    optional_int(&body, "priority", -1000, 1000)?;
    if body.contains_key("jobReleaseTask") && !body.contains_key("jobPreparationTask") {
        return Err(BatchError::invalid_property(
            "jobReleaseTask",
            "",
            "A job release task needs a job preparation task.",
        ));
    }
    body.insert(
        "url".into(),
        Value::String(format!("{}/jobs/{id}", state.url)),
    );
    body.insert("state".into(), Value::from("active"));
    body.entry("onAllTasksComplete")
        .or_insert(Value::from("noaction"));
    body.entry("onTaskFailure")
        .or_insert(Value::from("noaction"));
    let mut data = state.data();
    let resource = data
        .jobs
        .insert(&id, body, BatchError::exists("JobExists", "job"))?
        .clone();
    data.tasks.entry(id.to_lowercase()).or_default();
    state.changed.notify_one();
    Ok(created(&state, &format!("/jobs/{id}"), &resource))
}

pub(super) async fn list_jobs(
    State(state): State<Shared>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let data = state.data();
    list(&state, "jobs", "/jobs", &query, data.jobs.all())
}

pub(super) async fn get_job(
    State(state): State<Shared>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    let data = state.data();
    let resource = data
        .jobs
        .get(&job)
        .ok_or_else(|| BatchError::not_found("JobNotFound", "job"))?;
    check(&headers, resource, Access::Read)?;
    Ok(one(&state, "jobs", resource))
}

/// The job preparation task's state on each node where it ran.
pub(super) async fn list_preparation_status(
    State(state): State<Shared>,
    Path(job): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let has_prep = {
        let data = state.data();
        let resource = data
            .jobs
            .get(&job)
            .ok_or_else(|| BatchError::not_found("JobNotFound", "job"))?;
        resource.body.contains_key("jobPreparationTask")
            || resource.body.contains_key("jobReleaseTask")
    };
    if !has_prep {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "JobPreparationTaskNotSpecified",
            "The specified job does not have a Job Preparation task.",
        ));
    }
    let key = job.to_lowercase();
    let mut entries: Vec<(String, Arc<preparation::Prep>)> = state
        .preps()
        .iter()
        .filter(|((_, j), _)| *j == key)
        .map(|((node, _), prep)| (node.clone(), prep.clone()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let items: Vec<Resource> = entries
        .into_iter()
        .filter_map(|(node, prep)| {
            let info = prep.info()?;
            let pool = prep.pool();
            let body = json!({
                "poolId": pool,
                "nodeId": node,
                "nodeUrl": format!("{}/pools/{pool}/nodes/{node}", state.url),
                "jobPreparationTaskExecutionInfo": info,
            });
            let mut body = body;
            if let Some(release) = prep.release_info() {
                body["jobReleaseTaskExecutionInfo"] = release;
            }
            match body {
                Value::Object(map) => Some(Resource::new(map, std::time::SystemTime::now())),
                _ => None,
            }
        })
        .collect();
    list(
        &state,
        "jobpreparationandreleasetaskstatuslist",
        &format!("/jobs/{job}/jobpreparationandreleasetaskstatus"),
        &query,
        items.iter(),
    )
}

pub(super) async fn delete_job(
    State(state): State<Shared>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    let data = state.data();
    let resource = data
        .jobs
        .get(&job)
        .ok_or_else(|| BatchError::not_found("JobNotFound", "job"))?;
    check(&headers, resource, Access::Write)?;
    drop(data);
    // As on the service, deleting a job runs its release task where it prepared.
    release_job(&state, &job);
    let mut data = state.data();
    data.jobs.remove(&job);
    let running = data.running_tasks(&job);
    data.tasks.remove(&job.to_lowercase());
    drop(data);
    // Its running tasks are stopped with it.
    for task in running {
        exec::stop_task(&state, &job, &task, exec::Stop::Delete);
    }
    let key = job.to_lowercase();
    state.preps().retain(|(_, j), _| *j != key);
    Ok(StatusCode::ACCEPTED.into_response())
}
