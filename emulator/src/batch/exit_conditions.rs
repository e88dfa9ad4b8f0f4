//! Task exit conditions: which `exitOptions` apply to the way a task ended (`exitCodes`,
//! `exitCodeRanges`, `preProcessingError`, `fileUploadError`, `default`), and the job action
//! they ask for when the job's `onTaskFailure` is `performexitoptionsjobaction`.

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::BatchError;

/// Failure codes of a task that could not start (its resource files, its start).
const PRE_PROCESSING: &[&str] = &["BlobDownloadMiscError", "TaskStartFailed"];
/// Failure codes of a task whose output files could not be uploaded.
const FILE_UPLOAD: &[&str] = &["FileUploadMiscError"];

/// The exit options for a task that ended with `exit_code` (if it ran) and the failure code
/// (if it failed), if its exit conditions name any.
pub(super) fn options_for<'a>(
    task: &'a Map<String, Value>,
    exit_code: Option<i64>,
    failure: Option<&str>,
) -> Option<&'a Value> {
    let conditions = task.get("exitConditions")?;
    let options = |v: &'a Value| v.get("exitOptions");
    if let Some(failure) = failure {
        if PRE_PROCESSING.contains(&failure) {
            return conditions
                .get("preProcessingError")
                .or_else(|| conditions.get("default"));
        }
        if FILE_UPLOAD.contains(&failure) && conditions.get("fileUploadError").is_some() {
            return conditions.get("fileUploadError");
        }
    }
    if let Some(code) = exit_code {
        let listed = conditions
            .get("exitCodes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("code").and_then(Value::as_i64) == Some(code))
            .and_then(options);
        let ranged = || {
            conditions
                .get("exitCodeRanges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|r| {
                    let end = |k: &str| r.get(k).and_then(Value::as_i64);
                    matches!((end("start"), end("end")), (Some(s), Some(e)) if (s..=e).contains(&code))
                })
                .and_then(options)
        };
        if let Some(found) = listed.or_else(ranged) {
            return Some(found);
        }
        if code == 0 {
            return None;
        }
    }
    failure.and_then(|_| conditions.get("default"))
}

/// What a task's end asks of its job: `"terminate"`, `"disable"` or nothing. Only a job whose
/// `onTaskFailure` is `performexitoptionsjobaction` acts, and then a failed task with no
/// matching exit options terminates it (the service's default).
pub(super) fn job_action(
    job: &Map<String, Value>,
    task: &Map<String, Value>,
    exit_code: Option<i64>,
    failure: Option<&str>,
) -> Option<&'static str> {
    let acts = job
        .get("onTaskFailure")
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("performexitoptionsjobaction"));
    if !acts {
        return None;
    }
    let chosen = options_for(task, exit_code, failure)
        .and_then(|o| o.get("jobAction"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    match chosen.as_deref() {
        Some("terminate") => Some("terminate"),
        Some("disable") => Some("disable"),
        Some(_) => None,
        None if failure.is_some() => Some("terminate"),
        None => None,
    }
}

/// Checks a new task's `exitConditions`: known keys, actions and ranges, and no job action on
/// a job that does not act on them (`onTaskFailure: noaction`), as the service refuses.
pub(super) fn check(job: &Map<String, Value>, task: &Map<String, Value>) -> Result<(), BatchError> {
    let Some(conditions) = task.get("exitConditions").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let invalid =
        |why: &str| BatchError::invalid_property("exitConditions", &conditions.to_string(), why);
    let Some(map) = conditions.as_object() else {
        return Err(invalid("The value must be an object."));
    };
    let known = [
        "exitCodes",
        "exitCodeRanges",
        "preProcessingError",
        "fileUploadError",
        "default",
    ];
    if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(BatchError::new(
            StatusCode::BAD_REQUEST,
            "UnsupportedProperty",
            "One of the properties specified in the request body is not supported.",
        )
        .with("PropertyName", format!("exitConditions.{k}")));
    }
    let mut all_options: Vec<&Value> = Vec::new();
    for list in ["exitCodes", "exitCodeRanges"] {
        for entry in map
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let number = |k: &str| entry.get(k).and_then(Value::as_i64);
            let well_formed = if list == "exitCodes" {
                number("code").is_some()
            } else {
                matches!((number("start"), number("end")), (Some(s), Some(e)) if s <= e)
            };
            if !well_formed {
                return Err(invalid(&format!("An entry of {list} is malformed.")));
            }
            all_options.extend(entry.get("exitOptions"));
        }
    }
    all_options.extend(
        ["preProcessingError", "fileUploadError", "default"]
            .iter()
            .filter_map(|k| map.get(*k)),
    );
    let acts = job
        .get("onTaskFailure")
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("performexitoptionsjobaction"));
    for options in all_options {
        let action = options.get("jobAction").and_then(Value::as_str);
        if let Some(a) = action {
            if !["none", "disable", "terminate"].contains(&a.to_ascii_lowercase().as_str()) {
                return Err(invalid("jobAction must be none, disable or terminate."));
            }
            if !acts && !a.eq_ignore_ascii_case("none") {
                return Err(invalid(
                    "jobAction needs a job whose onTaskFailure is performexitoptionsjobaction.",
                ));
            }
        }
        if let Some(d) = options.get("dependencyAction").and_then(Value::as_str)
            && !["satisfy", "block"].contains(&d.to_ascii_lowercase().as_str())
        {
            return Err(invalid("dependencyAction must be satisfy or block."));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(conditions: Value) -> Map<String, Value> {
        json!({"id": "t", "exitConditions": conditions})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn the_most_specific_options_apply() {
        let t = task(json!({
            "exitCodes": [{"code": 3, "exitOptions": {"jobAction": "disable"}}],
            "exitCodeRanges": [{"start": 2, "end": 9, "exitOptions": {"dependencyAction": "satisfy"}}],
            "preProcessingError": {"jobAction": "none"},
            "default": {"jobAction": "terminate"},
        }));
        let action = |code, failure| {
            options_for(&t, code, failure)
                .map(|o| o.as_object().unwrap().keys().next().unwrap().clone())
        };
        assert_eq!(
            action(Some(3), Some("FailureExitCode")).as_deref(),
            Some("jobAction")
        );
        assert_eq!(
            action(Some(5), Some("FailureExitCode")).as_deref(),
            Some("dependencyAction")
        );
        assert_eq!(
            options_for(&t, Some(1), Some("FailureExitCode")),
            t["exitConditions"].get("default")
        );
        assert_eq!(options_for(&t, Some(0), None), None);
        assert_eq!(
            options_for(&t, None, Some("BlobDownloadMiscError")),
            t["exitConditions"].get("preProcessingError")
        );
    }

    #[test]
    fn job_actions_need_a_job_that_acts() {
        let acts = json!({"onTaskFailure": "performexitoptionsjobaction"})
            .as_object()
            .cloned()
            .unwrap();
        let idle = json!({"onTaskFailure": "noaction"})
            .as_object()
            .cloned()
            .unwrap();
        let t = task(json!({"exitCodes": [{"code": 1, "exitOptions": {"jobAction": "disable"}}]}));
        assert!(check(&acts, &t).is_ok());
        assert_eq!(check(&idle, &t).unwrap_err().code, "InvalidPropertyValue");
        assert_eq!(
            job_action(&acts, &t, Some(1), Some("FailureExitCode")),
            Some("disable")
        );
        assert_eq!(
            job_action(&acts, &t, Some(2), Some("FailureExitCode")),
            Some("terminate")
        );
        assert_eq!(job_action(&acts, &t, Some(0), None), None);
        assert_eq!(
            job_action(&idle, &t, Some(1), Some("FailureExitCode")),
            None
        );
        let bad = task(json!({"exitCodeRanges": [{"start": 5, "end": 1}]}));
        assert!(check(&acts, &bad).is_err());
    }
}
