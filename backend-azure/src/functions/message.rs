//! What travels between the client and the handler: a queue message carrying a group of a
//! job's tasks (one attempt number for all), with read access to the job's container and
//! write access to exactly one result segment and one note. A group's outcomes are stored as
//! one pack (`jobs/<job>/results/fn-<token>-<seq>-a<attempt>`) with an index entry of the
//! attempts' times under key [`TIMES_KEY`], which readers of outcomes skip (it is no task).

use serde::{Deserialize, Serialize};

/// The pack key of a segment's times entry (no task has it: readers skip keys past the
/// job's task count).
pub const TIMES_KEY: u64 = u64::MAX;

/// The format version of a message.
pub const VERSION: u8 = 1;

/// One queue message: a group of tasks of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// The format version ([`VERSION`]).
    pub v: u8,
    /// The job id.
    pub job: String,
    /// The remote function's id.
    pub function: String,
    /// The function's signature hash.
    pub signature: u64,
    /// The sha256 of the executable the tasks must run in.
    pub binary: String,
    /// The container URL (no query).
    pub container: String,
    /// A read-only SAS (query string) on the container.
    pub read_sas: String,
    /// The key of the job's packed input.
    pub input: String,
    /// The key whose existence means the job was cancelled (checked before the group runs).
    pub stop: String,
    /// The per-task timeout, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The attempt number of every task in the group.
    pub attempt: u32,
    /// The tasks: index and byte range in the input.
    pub tasks: Vec<GroupTask>,
    /// The segment this group's outcomes go to (its key; for messages).
    pub segment: String,
    /// A write-only SAS URL on exactly the segment (created once: a second delivery of the
    /// message finds it there and stores nothing).
    pub result_url: String,
    /// A write-only SAS URL on the group's note (what went wrong in a delivery that could not
    /// store the outcomes, for the client to report if the message ends in the poison queue).
    pub note_url: String,
    /// The group was sent as a call too (`invoke = "http"`), and this message is its backup:
    /// a delivery runs it only if nothing is stored yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub called: bool,
}

/// One task of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTask {
    /// Its index in the job.
    pub task: u64,
    /// Its byte range in the job's input.
    pub range: (u64, u64),
    /// Its arguments, inline (base64), when small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
}

/// The start and end (µs since the Unix epoch) of each task of a stored group, in the
/// segment's [`TIMES_KEY`] entry (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTimes {
    /// `(task, started, finished)`.
    pub tasks: Vec<(u64, u64, u64)>,
    /// The instance that ran the group (its process id).
    #[serde(default)]
    pub instance: Option<u32>,
}

impl TaskMessage {
    /// The name of the group's segment (the last part of its key).
    pub fn segment_name(&self) -> &str {
        self.segment.rsplit('/').next().unwrap_or(&self.segment)
    }

    /// The message from a queue trigger's value: the JSON text (as a custom handler receives
    /// a queue message: a string), or the object itself.
    pub fn from_trigger(value: &serde_json::Value) -> Result<TaskMessage, String> {
        let message: TaskMessage = match value {
            serde_json::Value::String(text) => serde_json::from_str(text)
                .or_else(|first| {
                    // A string quoted once more (a host that serialises strings as JSON).
                    serde_json::from_str::<String>(text)
                        .map_err(|_| first.to_string())
                        .and_then(|inner| serde_json::from_str(&inner).map_err(|e| e.to_string()))
                })
                .map_err(|e| format!("the queue message is not a Redwood task group: {e}"))?,
            other => serde_json::from_value(other.clone())
                .map_err(|e| format!("the queue message is not a Redwood task group: {e}"))?,
        };
        if message.v != VERSION {
            return Err(format!(
                "the queue message has format {} but this handler reads format {VERSION}: deploy \
                 the same build as the client",
                message.v
            ));
        }
        Ok(message)
    }
}

/// The segment name of a group: `fn-<token>-<seq>-a<attempt>`.
pub fn segment_name(token: &str, seq: u64, attempt: u32) -> String {
    format!("fn-{token}-{seq}-a{attempt}")
}

/// The attempt number a segment name carries, if it is a group's.
pub fn segment_attempt(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("fn-")?;
    rest.rsplit_once("-a")?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> TaskMessage {
        TaskMessage {
            v: VERSION,
            job: "j".into(),
            function: "f".into(),
            signature: 1,
            binary: "b".into(),
            container: "http://c".into(),
            read_sas: "sv=1".into(),
            input: "jobs/j/input".into(),
            stop: "jobs/j/fn/stop".into(),
            timeout_ms: None,
            attempt: 2,
            tasks: vec![GroupTask {
                task: 3,
                range: (0, 4),
                args: None,
            }],
            segment: "jobs/j/results/fn-t-1-a2".into(),
            result_url: "http://c/r?sig=x".into(),
            note_url: "http://c/n?sig=y".into(),
            called: false,
        }
    }

    #[test]
    fn a_message_arrives_as_text_quoted_text_or_an_object() {
        let m = message();
        let text = serde_json::to_string(&m).unwrap();
        let as_string = serde_json::Value::String(text.clone());
        assert_eq!(TaskMessage::from_trigger(&as_string).unwrap(), m);
        let quoted = serde_json::Value::String(serde_json::to_string(&text).unwrap());
        assert_eq!(TaskMessage::from_trigger(&quoted).unwrap(), m);
        let object: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(TaskMessage::from_trigger(&object).unwrap(), m);
        let e = TaskMessage::from_trigger(&serde_json::Value::String("hello".into())).unwrap_err();
        assert!(e.contains("not a Redwood task group"), "{e}");
        let mut old = m;
        old.v = 9;
        let e = TaskMessage::from_trigger(&serde_json::to_value(&old).unwrap()).unwrap_err();
        assert!(e.contains("format 9"), "{e}");
    }

    #[test]
    fn segment_names_carry_the_attempt() {
        let name = segment_name("ab12", 7, 3);
        assert_eq!(name, "fn-ab12-7-a3");
        assert_eq!(segment_attempt(&name), Some(3));
        assert_eq!(segment_attempt("w1-5"), None);
        assert_eq!(segment_attempt("t3-a1"), None);
    }
}
