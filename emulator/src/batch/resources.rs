//! Stored resources (pools, jobs, tasks): the JSON the client sent plus the fields the service
//! computes, with an ETag and a last-modified time.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::error::BatchError;

/// One stored resource.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Its JSON, as returned by a get.
    pub body: Map<String, Value>,
    /// When it last changed.
    pub last_modified: SystemTime,
    /// A task's current run (0: none yet). A run that ends after the task was terminated,
    /// reactivated and placed again must not record its end on the new run.
    pub run: u64,
    /// A multi-instance task's subtasks (its instances other than the primary), as
    /// `subtasksinfo` lists them.
    pub subtasks: Vec<Value>,
    /// Copies of `state`, `id` and `creationTime`, which the scheduler reads for every task on
    /// every round (a JSON lookup each would cost more than the rest of the round).
    state: String,
    id: String,
    created: String,
}

impl Resource {
    /// A resource with this JSON.
    pub fn new(body: Map<String, Value>, last_modified: SystemTime) -> Resource {
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Resource {
            state: text("state"),
            id: text("id"),
            created: text("creationTime"),
            run: 0,
            subtasks: Vec::new(),
            body,
            last_modified,
        }
    }

    /// Its `state`.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Its `id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its `creationTime`.
    pub fn created(&self) -> &str {
        &self.created
    }

    /// The resource's ETag (quoted, as HTTP sends it).
    pub fn etag(&self) -> String {
        self.body
            .get("eTag")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    /// A string field.
    pub fn str(&self, field: &str) -> Option<&str> {
        self.body.get(field).and_then(Value::as_str)
    }

    /// Sets fields and refreshes the ETag and times.
    pub fn update(&mut self, fields: impl IntoIterator<Item = (&'static str, Value)>) {
        for (k, v) in fields {
            if k == "state" {
                self.state = v.as_str().unwrap_or("").to_string();
            }
            self.body.insert(k.to_string(), v);
        }
        stamp(&mut self.body, &mut self.last_modified);
    }
}

/// A time in the service's format (ISO 8601, UTC, 100 ns precision).
pub fn rfc3339(t: SystemTime) -> String {
    // The service's form: seconds, then 7 fractional digits (100 ns).
    let seconds = humantime::format_rfc3339_seconds(t).to_string();
    let nanos = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{}.{:07}Z", seconds.trim_end_matches('Z'), nanos / 100)
}

/// The service's time format (ISO 8601, UTC, 100 ns precision).
pub fn now_string() -> String {
    rfc3339(SystemTime::now())
}

fn stamp(body: &mut Map<String, Value>, last_modified: &mut SystemTime) {
    *last_modified = SystemTime::now();
    let nanos = last_modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    body.insert("eTag".into(), Value::String(format!("\"0x{nanos:X}\"")));
    body.insert(
        "lastModified".into(),
        Value::String(rfc3339(*last_modified)),
    );
}

/// Resources of one kind, by id (ids compare case-insensitively, as in the service).
#[derive(Debug, Default)]
pub struct Collection {
    items: BTreeMap<String, Resource>,
}

impl Collection {
    /// Adds a resource; `exists` is the error when the id is taken.
    pub fn insert(
        &mut self,
        id: &str,
        mut body: Map<String, Value>,
        exists: BatchError,
    ) -> Result<&Resource, BatchError> {
        let key = id.to_lowercase();
        if self.items.contains_key(&key) {
            return Err(exists);
        }
        let now = now_string();
        body.entry("creationTime")
            .or_insert(Value::String(now.clone()));
        body.entry("stateTransitionTime")
            .or_insert(Value::String(now));
        let mut last_modified = SystemTime::now();
        stamp(&mut body, &mut last_modified);
        Ok(self
            .items
            .entry(key)
            .or_insert(Resource::new(body, last_modified)))
    }

    /// The resource with an id.
    pub fn get(&self, id: &str) -> Option<&Resource> {
        self.items.get(&id.to_lowercase())
    }

    /// The resource with an id, to change it.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Resource> {
        self.items.get_mut(&id.to_lowercase())
    }

    /// Removes a resource.
    pub fn remove(&mut self, id: &str) -> Option<Resource> {
        self.items.remove(&id.to_lowercase())
    }

    /// How many resources there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Every resource, by id.
    pub fn all(&self) -> impl Iterator<Item = &Resource> {
        self.items.values()
    }

    /// Every resource, to change.
    pub fn all_mut(&mut self) -> impl Iterator<Item = &mut Resource> {
        self.items.values_mut()
    }
}

/// The properties a pool-add body may have (azure-batch 15.1.0's `BatchPoolCreateOptions`,
/// plus properties of the older api-versions).
pub const POOL_PROPERTIES: &[&str] = &[
    "id",
    "displayName",
    "vmSize",
    "virtualMachineConfiguration",
    "resizeTimeout",
    "resourceTags",
    "targetDedicatedNodes",
    "targetLowPriorityNodes",
    "enableAutoScale",
    "autoScaleFormula",
    "autoScaleEvaluationInterval",
    "enableInterNodeCommunication",
    "networkConfiguration",
    "startTask",
    "applicationPackageReferences",
    "taskSlotsPerNode",
    "taskSchedulingPolicy",
    "userAccounts",
    "metadata",
    "mountConfiguration",
    "targetNodeCommunicationMode",
    "upgradePolicy",
    "certificateReferences",
    "applicationLicenses",
    "cloudServiceConfiguration",
];
/// The properties a job-add body may have.
pub const JOB_PROPERTIES: &[&str] = &[
    "id",
    "displayName",
    "usesTaskDependencies",
    "priority",
    "allowTaskPreemption",
    "maxParallelTasks",
    "constraints",
    "jobManagerTask",
    "jobPreparationTask",
    "jobReleaseTask",
    "commonEnvironmentSettings",
    "poolInfo",
    "onAllTasksComplete",
    "onTaskFailure",
    "networkConfiguration",
    "metadata",
];
/// The properties a task-add body may have.
pub const TASK_PROPERTIES: &[&str] = &[
    "id",
    "displayName",
    "exitConditions",
    "commandLine",
    "containerSettings",
    "resourceFiles",
    "outputFiles",
    "environmentSettings",
    "affinityInfo",
    "constraints",
    "requiredSlots",
    "userIdentity",
    "multiInstanceSettings",
    "dependsOn",
    "applicationPackageReferences",
    "authenticationTokenSettings",
];
/// The properties of a resize body.
pub const RESIZE_PROPERTIES: &[&str] = &[
    "targetDedicatedNodes",
    "targetLowPriorityNodes",
    "resizeTimeout",
    "nodeDeallocationOption",
];
/// The properties of a job-terminate body.
pub const TERMINATE_PROPERTIES: &[&str] = &["terminateReason"];

/// Refuses a body with a property the service does not support (`UnsupportedProperty`).
pub fn check_known(body: &Map<String, Value>, known: &[&str]) -> Result<(), BatchError> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(BatchError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "UnsupportedProperty",
            "One of the properties specified in the request body is not supported.",
        )
        .with("PropertyName", unknown.clone())),
    }
}

/// Checks a resource id: 1 to 64 letters, digits, hyphens and underscores.
pub fn check_id(body: &Map<String, Value>) -> Result<String, BatchError> {
    let id = match body.get("id") {
        None | Some(Value::Null) => return Err(BatchError::missing_property("id")),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(BatchError::invalid_property(
                "id",
                &other.to_string(),
                "The id must be a string.",
            ));
        }
    };
    let ok = (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(id)
    } else {
        Err(BatchError::invalid_property(
            "id",
            &id,
            "The id can contain any combination of alphanumeric characters including hyphens and underscores, and cannot contain more than 64 characters.",
        ))
    }
}

/// Checks that a required string property is present.
pub fn require_str<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, BatchError> {
    match body.get(name) {
        None | Some(Value::Null) => Err(BatchError::missing_property(name)),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(BatchError::invalid_property(
            name,
            &other.to_string(),
            "The value must be a string.",
        )),
    }
}

/// Checks that an optional integer property is within bounds.
pub fn optional_int(
    body: &Map<String, Value>,
    name: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, BatchError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|v| (min..=max).contains(&v)) => {
            Ok(n.as_i64())
        }
        Some(other) => Err(BatchError::invalid_property(
            name,
            &other.to_string(),
            &format!("The value must be an integer from {min} to {max}."),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso8601() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_547_000);
        assert_eq!(rfc3339(t), "2026-11-24T19:03:20.0000000Z");
    }

    #[test]
    fn ids_are_checked() {
        let mut body = Map::new();
        assert_eq!(check_id(&body).unwrap_err().code, "MissingRequiredProperty");
        body.insert("id".into(), Value::from(5));
        assert_eq!(check_id(&body).unwrap_err().code, "InvalidPropertyValue");
        body.insert("id".into(), Value::from("has space"));
        assert_eq!(check_id(&body).unwrap_err().code, "InvalidPropertyValue");
        body.insert("id".into(), Value::from("pool_1-a"));
        assert_eq!(check_id(&body).unwrap(), "pool_1-a");
    }
}
