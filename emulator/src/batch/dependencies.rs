//! Task dependencies: `dependsOn` (task ids and id ranges) checked when a task is added, and
//! whether a waiting task may start. A task starts once every task it depends on completed
//! successfully, or failed with an exit condition whose `dependencyAction` is `satisfy`; one
//! that failed otherwise blocks it for good (it stays active, as on the service).

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::BatchError;
use super::resources::{Collection, Resource};

/// The longest `taskIds` list (its ids' combined length), as on the service.
const MAX_IDS_LENGTH: usize = 64_000;

/// Checks a new task's `dependsOn` against its job's `usesTaskDependencies`.
pub(super) fn check_new_task(job: &Resource, task: &Map<String, Value>) -> Result<(), BatchError> {
    let Some(depends) = task.get("dependsOn").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    if job.body.get("usesTaskDependencies") != Some(&Value::Bool(true)) {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "TaskDependenciesNotSpecifiedOnJob",
            "The task depends on other tasks, but its job was not created with usesTaskDependencies set to true.",
        ));
    }
    let invalid = |why: &str| BatchError::invalid_property("dependsOn", &depends.to_string(), why);
    let Some(depends) = depends.as_object() else {
        return Err(invalid("The value must be an object."));
    };
    let ids = match depends.get("taskIds") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| {
                id.as_str()
                    .ok_or_else(|| invalid("Task ids must be strings."))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid("taskIds must be a list of task ids.")),
    };
    if ids.iter().map(|id| id.len()).sum::<usize>() > MAX_IDS_LENGTH {
        return Err(BatchError::new(
            StatusCode::BAD_REQUEST,
            "TaskDependencyListTooLong",
            format!(
                "The task ids a task depends on are longer than {MAX_IDS_LENGTH} characters in all; use task id ranges."
            ),
        ));
    }
    if let Some(own) = task.get("id").and_then(Value::as_str)
        && ids.iter().any(|id| id.eq_ignore_ascii_case(own))
    {
        return Err(invalid("A task cannot depend on itself."));
    }
    for range in ranges(depends).map_err(|why| invalid(&why))? {
        if range.0 > range.1 {
            return Err(invalid("A task id range must start at or before its end."));
        }
    }
    Ok(())
}

/// The `taskIdRanges` of a `dependsOn` object.
fn ranges(depends: &Map<String, Value>) -> Result<Vec<(u64, u64)>, String> {
    match depends.get("taskIdRanges") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ranges)) => ranges
            .iter()
            .map(|r| {
                let end = |k: &str| r.get(k).and_then(Value::as_u64);
                match (end("start"), end("end")) {
                    (Some(start), Some(end)) => Ok((start, end)),
                    _ => Err("Each task id range needs a start and an end (whole numbers).".into()),
                }
            })
            .collect(),
        Some(_) => Err("taskIdRanges must be a list of ranges.".into()),
    }
}

/// Whether a waiting task may start: every task it depends on has completed and satisfies it.
pub(super) fn ready(task: &Resource, tasks: &Collection) -> bool {
    let Some(depends) = task.body.get("dependsOn").and_then(Value::as_object) else {
        return true;
    };
    let ids = depends
        .get("taskIds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    for id in ids {
        if !tasks.get(id).is_some_and(satisfies) {
            return false;
        }
    }
    let Ok(ranges) = ranges(depends) else {
        return false;
    };
    // A range names the tasks whose ids are whole numbers within it (`"7"`, not `"007"`); each
    // must have been added and satisfy. Looked up by id: no scan of the job per waiting task.
    for (start, end) in ranges {
        let members = end.saturating_sub(start).saturating_add(1);
        if members > tasks.len() as u64 {
            return false; // more members than the job has tasks: some are not added yet
        }
        if !(start..=end).all(|n| tasks.get(&n.to_string()).is_some_and(satisfies)) {
            return false;
        }
    }
    true
}

/// Whether a task satisfies the tasks that depend on it: completed, and successful or failed
/// with `dependencyAction: satisfy` for the way it failed.
fn satisfies(task: &Resource) -> bool {
    if task.state() != "completed" {
        return false;
    }
    let info = task.body.get("executionInfo");
    let result = info.and_then(|e| e.get("result")).and_then(Value::as_str);
    if result == Some("success") {
        return true;
    }
    let exit_code = info.and_then(|e| e.get("exitCode")).and_then(Value::as_i64);
    let category = info
        .and_then(|e| e.get("failureInfo"))
        .and_then(|f| f.get("code"))
        .and_then(Value::as_str);
    super::exit_conditions::options_for(&task.body, exit_code, category)
        .and_then(|o| o.get("dependencyAction"))
        .and_then(Value::as_str)
        .is_some_and(|a| a.eq_ignore_ascii_case("satisfy"))
}
