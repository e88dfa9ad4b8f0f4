//! Tasks: add one or a collection of up to 100, get, list, terminate, delete, reactivate.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::conditions::{Access, check};
use super::error::BatchError;
use super::exec;
use super::middleware::query_pairs;
use super::odata::{created, json_body, list, one, set_resource_headers};
use super::pools::MAX_POOL_NODES;
use super::resources::{
    Collection, Resource, TASK_PROPERTIES, check_id, check_known, now_string, optional_int,
    require_str,
};
use super::server::{AccountState, Data, MAX_TASKS_PER_COLLECTION, Shared};
use super::{dependencies, exit_conditions};

/// Checks a task's body and adds the service's fields.
fn prepare_task(
    state: &AccountState,
    job: &str,
    mut body: Map<String, Value>,
) -> Result<(String, Map<String, Value>), BatchError> {
    check_known(&body, TASK_PROPERTIES)?;
    let id = check_id(&body)?;
    require_str(&body, "commandLine")?;
    check_task_limits(&body)?;
    body.insert(
        "url".into(),
        Value::String(format!("{}/jobs/{job}/tasks/{id}", state.url)),
    );
    body.insert("state".into(), Value::from("active"));
    body.insert(
        "executionInfo".into(),
        json!({"retryCount": 0, "requeueCount": 0}),
    );
    Ok((id, body))
}

/// Numbers a task body gives the scheduler, checked on the way in as the service does:
/// `requiredSlots`, the instances of a multi-instance task, and the constraints' durations.
fn check_task_limits(body: &Map<String, Value>) -> Result<(), BatchError> {
    optional_int(body, "requiredSlots", 1, 256)?;
    if let Some(multi) = body.get("multiInstanceSettings").and_then(Value::as_object) {
        optional_int(multi, "numberOfInstances", 1, MAX_POOL_NODES)?;
    }
    let Some(constraints) = body.get("constraints") else {
        return Ok(());
    };
    let Some(constraints) = constraints.as_object() else {
        return Err(BatchError::invalid_property(
            "constraints",
            &constraints.to_string(),
            "The value must be an object.",
        ));
    };
    optional_int(constraints, "maxTaskRetryCount", -1, i64::from(i32::MAX))?;
    for name in ["maxWallClockTime", "retentionTime"] {
        match constraints.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) if exec::parse_duration(text).is_some() => {}
            Some(other) => {
                return Err(BatchError::invalid_property(
                    name,
                    &other.to_string(),
                    "The value must be an ISO 8601 duration (e.g. PT1H30M).",
                ));
            }
        }
    }
    Ok(())
}

/// The job tasks are added to: it must exist and take tasks (not completed or terminating).
fn open_job<'a>(data: &'a Data, job: &str) -> Result<&'a Resource, BatchError> {
    let resource = data
        .jobs
        .get(job)
        .ok_or_else(|| BatchError::not_found("JobNotFound", "job"))?;
    if matches!(resource.state(), "completed" | "terminating" | "deleting") {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "JobCompleted",
            "The specified job is already in a completed state.",
        ));
    }
    Ok(resource)
}

/// What the service checks of a task against its job: dependencies and exit conditions.
fn check_against_job(job: &Resource, body: &Map<String, Value>) -> Result<(), BatchError> {
    dependencies::check_new_task(job, body)?;
    exit_conditions::check(&job.body, body)
}

pub(super) async fn add_task(
    State(state): State<Shared>,
    Path(job): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    let (id, body) = prepare_task(&state, &job, body)?;
    let mut data = state.data();
    check_against_job(open_job(&data, &job)?, &body)?;
    let tasks = data.tasks.entry(job.to_lowercase()).or_default();
    let resource = tasks
        .insert(&id, body, BatchError::exists("TaskExists", "task"))?
        .clone();
    state.changed.notify_one();
    Ok(created(
        &state,
        &format!("/jobs/{job}/tasks/{id}"),
        &resource,
    ))
}

pub(super) async fn add_task_collection(
    State(state): State<Shared>,
    Path(job): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    let Some(Value::Array(items)) = body.get("value") else {
        return Err(BatchError::missing_property("value"));
    };
    if items.len() > MAX_TASKS_PER_COLLECTION {
        return Err(BatchError::invalid_property(
            "value",
            &items.len().to_string(),
            &format!("A task collection can contain at most {MAX_TASKS_PER_COLLECTION} tasks."),
        ));
    }
    let mut data = state.data();
    let job_resource = open_job(&data, &job)?.clone();
    let tasks = data.tasks.entry(job.to_lowercase()).or_default();
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let task_id = item
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let outcome = match item {
            Value::Object(map) => prepare_task(&state, &job, map.clone()).and_then(|(id, body)| {
                check_against_job(&job_resource, &body)?;
                tasks
                    .insert(&id, body, BatchError::exists("TaskExists", "task"))
                    .cloned()
            }),
            _ => Err(BatchError::invalid_body("Each task must be a JSON object.")),
        };
        results.push(match outcome {
            Ok(resource) => json!({
                "status": "success",
                "taskId": task_id,
                "eTag": resource.etag(),
                "lastModified": resource.body.get("lastModified"),
                "location": resource.str("url"),
            }),
            Err(e) => json!({
                "status": if e.status.is_server_error() { "servererror" } else { "clienterror" },
                "taskId": task_id,
                "error": {
                    "code": e.code,
                    "message": {"lang": "en-US", "value": e.message},
                    "values": e.values.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                },
            }),
        });
    }
    state.changed.notify_one();
    Ok(Json(json!({
        "odata.metadata": format!("{}/$metadata#taskaddresult", state.url),
        "value": results,
    }))
    .into_response())
}

pub(super) async fn list_tasks(
    State(state): State<Shared>,
    Path(job): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let data = state.data();
    if data.jobs.get(&job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    let path = format!("/jobs/{job}/tasks");
    let empty = Collection::default();
    let tasks = data.tasks.get(&job.to_lowercase()).unwrap_or(&empty);
    list(&state, "tasks", &path, &query, tasks.all())
}

pub(super) async fn get_task(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    let data = state.data();
    if data.jobs.get(&job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    let resource = data
        .tasks
        .get(&job.to_lowercase())
        .and_then(|t| t.get(&task))
        .ok_or_else(|| BatchError::not_found("TaskNotFound", "task"))?;
    check(&headers, resource, Access::Read)?;
    Ok(one(&state, "tasks", resource))
}

/// `PUT /jobs/{job}/tasks/{task}`: a task's constraints (the only part the service lets
/// change); omitted ones go back to their defaults.
pub(super) async fn replace_task(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, &["constraints"])?;
    check_task_limits(&body)?;
    let mut data = state.data();
    let resource = task_mut(&mut data, &job, &task)?;
    check(&headers, resource, Access::Write)?;
    if resource.state() == "completed" {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "TaskCompleted",
            "The specified task is already completed.",
        ));
    }
    let constraints = body.get("constraints").cloned().unwrap_or(Value::Null);
    resource.update([("constraints", constraints)]);
    resource.body.retain(|_, v| !v.is_null());
    let mut response = StatusCode::OK.into_response();
    set_resource_headers(response.headers_mut(), resource);
    Ok(response)
}

/// `GET /jobs/{job}/tasks/{task}/subtasksinfo`: the instances of a multi-instance task other
/// than its primary (none for another task).
pub(super) async fn list_subtasks(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
) -> Result<Response, BatchError> {
    let data = state.data();
    if data.jobs.get(&job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    let resource = data
        .tasks
        .get(&job.to_lowercase())
        .and_then(|t| t.get(&task))
        .ok_or_else(|| BatchError::not_found("TaskNotFound", "task"))?;
    Ok(Json(json!({
        "odata.metadata": format!("{}/$metadata#subtaskinformations", state.url),
        "value": resource.subtasks,
    }))
    .into_response())
}

/// A task of a job, to change it.
fn task_mut<'a>(data: &'a mut Data, job: &str, task: &str) -> Result<&'a mut Resource, BatchError> {
    if data.jobs.get(job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    data.tasks
        .get_mut(&job.to_lowercase())
        .and_then(|t| t.get_mut(task))
        .ok_or_else(|| BatchError::not_found("TaskNotFound", "task"))
}

pub(super) async fn terminate_task(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    {
        let mut data = state.data();
        let resource = task_mut(&mut data, &job, &task)?;
        check(&headers, resource, Access::Write)?;
        if resource.str("state") == Some("completed") {
            return Err(BatchError::new(
                StatusCode::CONFLICT,
                "TaskCompleted",
                "The specified task is already completed.",
            ));
        }
        // Completed now, whether it runs or not: its end can no longer change that.
        exec::end_task(resource, "The task was terminated by a request");
    }
    exec::stop_task(&state, &job, &task, exec::Stop::Terminate);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn delete_task(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    {
        let mut data = state.data();
        check(&headers, task_mut(&mut data, &job, &task)?, Access::Write)?;
        if let Some(tasks) = data.tasks.get_mut(&job.to_lowercase()) {
            tasks.remove(&task);
        }
    }
    exec::stop_task(&state, &job, &task, exec::Stop::Delete);
    Ok(StatusCode::OK.into_response())
}

pub(super) async fn reactivate_task(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, BatchError> {
    let mut data = state.data();
    let resource = task_mut(&mut data, &job, &task)?;
    check(&headers, resource, Access::Write)?;
    let failed = resource.state() == "completed"
        && resource
            .body
            .get("executionInfo")
            .and_then(|e| e.get("result"))
            .and_then(Value::as_str)
            == Some("failure");
    if !failed {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "TaskNotFailed",
            "Only a completed task that failed can be reactivated.",
        ));
    }
    resource.update([
        ("state", Value::from("active")),
        ("stateTransitionTime", Value::from(now_string())),
        ("executionInfo", json!({"retryCount": 0, "requeueCount": 0})),
    ]);
    state.changed.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}
