//! The finished tasks of a job as the client holds them: a fixed-size row per task (about 56
//! bytes), the stored objects' keys once each, failures apart (they are rare), and the values
//! of successes in one buffer up to a budget. Past the budget a value is not held: it is read
//! back from storage (it is stored before it is reported) when asked for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::raw::backend::Finished;
use crate::raw::envelope::Outcome;
use crate::types::result_ref::ResultLocation;
use crate::types::task_error::{TaskError, TaskErrorKind};

/// The most value bytes one job holds in memory.
const HELD_BUDGET: usize = 64 << 20;
const NONE: u32 = u32::MAX;

/// The index of each key of one store into `FinishedTable::keys`.
type KeyIndex = HashMap<Arc<str>, u32>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Pending,
    Ok,
    Err,
}

#[derive(Debug, Clone, Copy, Default)]
struct Row {
    state: State,
    requeues: u32,
    /// Index into `keys`, or `NONE` when the outcome is not stored.
    key: u32,
    /// The byte range inside the stored object (`start == end == 0`: the whole object).
    range: (u64, u64),
    /// Where the value is in `values`, and its length (`NONE`: not held).
    value: (u64, u32),
    /// How long the attempt ran, in microseconds (`u64::MAX`: unknown).
    took_us: u64,
}

/// Where a finished task's outcome is.
pub(crate) enum OutcomeAt<'a> {
    /// The task has not finished.
    Pending,
    /// A success whose value is held.
    Held(&'a [u8]),
    /// A success whose value is in storage only.
    Stored(ResultLocation),
    /// A failure.
    Failed(&'a TaskError),
}

/// Every task's outcome, compact.
#[derive(Debug)]
pub(crate) struct FinishedTable {
    rows: Vec<Row>,
    /// The stored objects outcomes are in: (index into `stores`, key).
    keys: Vec<(usize, Arc<str>)>,
    /// The stores they are in (usually one), each with its keys' indices into `keys`.
    stores: Vec<(Arc<str>, KeyIndex)>,
    values: Vec<u8>,
    errors: HashMap<u64, TaskError>,
}

impl FinishedTable {
    /// A table of `tasks` unfinished tasks.
    pub(crate) fn new(tasks: usize) -> Self {
        FinishedTable {
            rows: vec![
                Row {
                    key: NONE,
                    value: (0, NONE),
                    took_us: u64::MAX,
                    ..Row::default()
                };
                tasks
            ],
            keys: Vec::new(),
            stores: Vec::new(),
            values: Vec::new(),
            errors: HashMap::new(),
        }
    }

    /// Whether `task` is a task of the job.
    pub(crate) fn contains(&self, task: u64) -> bool {
        (task as usize) < self.rows.len()
    }

    /// Whether `task` has finished.
    pub(crate) fn is_finished(&self, task: u64) -> bool {
        self.rows
            .get(task as usize)
            .is_some_and(|r| r.state != State::Pending)
    }

    /// Records a finished task; false when it was already (a late duplicate is ignored).
    pub(crate) fn insert(&mut self, f: Finished) -> bool {
        let Some(row) = self.rows.get(f.task as usize).copied() else {
            return false;
        };
        if row.state != State::Pending {
            return false;
        }
        let key = if f.location.key.is_empty() {
            NONE
        } else {
            self.intern(&f.location.store, &f.location.key)
        };
        let range = f
            .location
            .range
            .as_ref()
            .map_or((0, 0), |r| (r.start, r.end));
        let took_us = f
            .started
            .and_then(|s| f.finished.duration_since(s).ok())
            .map_or(u64::MAX, |d| {
                u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
            });
        let mut new = Row {
            state: State::Ok,
            requeues: f.requeues,
            key,
            range,
            value: (0, NONE),
            took_us,
        };
        match f.outcome {
            Outcome::Ok(bytes) => {
                // A value that is not stored anywhere is always held.
                let fits = self.values.len().saturating_add(bytes.len()) <= HELD_BUDGET;
                if let (true, Ok(len)) = (fits || key == NONE, u32::try_from(bytes.len())) {
                    new.value = (self.values.len() as u64, len);
                    self.values.extend_from_slice(&bytes);
                }
            }
            Outcome::Err(e) => {
                new.state = State::Err;
                self.errors.insert(f.task, e);
            }
        }
        self.rows[f.task as usize] = new;
        true
    }

    fn intern(&mut self, store: &str, key: &str) -> u32 {
        let s = match self.stores.iter().position(|(name, _)| &**name == store) {
            Some(s) => s,
            None => {
                self.stores.push((Arc::from(store), HashMap::new()));
                self.stores.len() - 1
            }
        };
        if let Some(&i) = self.stores[s].1.get(key) {
            return i;
        }
        let i = u32::try_from(self.keys.len()).unwrap_or(NONE);
        let key: Arc<str> = Arc::from(key);
        self.keys.push((s, key.clone()));
        self.stores[s].1.insert(key, i);
        i
    }

    /// Where `task`'s stored outcome is.
    pub(crate) fn location(&self, task: u64) -> ResultLocation {
        let found = self
            .rows
            .get(task as usize)
            .and_then(|row| Some((row, self.keys.get(row.key as usize)?)));
        let Some((row, (store, key))) = found else {
            return ResultLocation::nowhere();
        };
        ResultLocation {
            store: self.stores[*store].0.to_string(),
            key: key.to_string(),
            range: (row.range != (0, 0)).then_some(row.range.0..row.range.1),
        }
    }

    /// `task`'s outcome, or where to read it.
    pub(crate) fn outcome(&self, task: u64) -> OutcomeAt<'_> {
        let Some(row) = self.rows.get(task as usize) else {
            return OutcomeAt::Pending;
        };
        match row.state {
            State::Pending => OutcomeAt::Pending,
            State::Err => match self.errors.get(&task) {
                Some(e) => OutcomeAt::Failed(e),
                None => OutcomeAt::Pending,
            },
            State::Ok if row.value.1 != NONE => {
                let start = row.value.0 as usize;
                OutcomeAt::Held(&self.values[start..start + row.value.1 as usize])
            }
            State::Ok => OutcomeAt::Stored(self.location(task)),
        }
    }

    /// The tasks that have not finished.
    pub(crate) fn missing(&self) -> Vec<u64> {
        (0..self.rows.len() as u64)
            .filter(|&t| !self.is_finished(t))
            .collect()
    }

    /// How many tasks ended cancelled.
    pub(crate) fn cancelled(&self) -> u64 {
        self.errors
            .values()
            .filter(|e| e.kind == TaskErrorKind::Cancelled)
            .count() as u64
    }

    /// The run times of the final attempts that are known.
    pub(crate) fn task_times(&self) -> Vec<Duration> {
        self.rows
            .iter()
            .filter(|r| r.state != State::Pending && r.took_us != u64::MAX)
            .map(|r| Duration::from_micros(r.took_us))
            .collect()
    }

    /// How often tasks were requeued after losing their node.
    pub(crate) fn requeues(&self) -> u64 {
        self.rows.iter().map(|r| u64::from(r.requeues)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn finished(task: u64, outcome: Outcome, key: &str) -> Finished {
        Finished {
            task,
            attempt: 1,
            outcome,
            location: ResultLocation {
                store: "memory://t".into(),
                key: key.into(),
                range: Some(10..20),
            },
            started: None,
            finished: SystemTime::now(),
            worker: None,
            requeues: 0,
            region: None,
        }
    }

    #[test]
    fn rows_stay_small() {
        assert!(
            std::mem::size_of::<Row>() <= 64,
            "{}",
            std::mem::size_of::<Row>()
        );
    }

    #[test]
    fn values_are_held_and_keys_shared() {
        let mut t = FinishedTable::new(3);
        assert!(t.insert(finished(0, Outcome::Ok(vec![1, 2]), "seg")));
        assert!(
            !t.insert(finished(0, Outcome::Ok(vec![9]), "seg")),
            "duplicate"
        );
        let e = TaskError::new(TaskErrorKind::Cancelled, "x");
        assert!(t.insert(finished(2, Outcome::Err(e), "seg")));
        assert!(matches!(t.outcome(0), OutcomeAt::Held(&[1, 2])));
        assert!(matches!(t.outcome(1), OutcomeAt::Pending));
        assert!(matches!(t.outcome(2), OutcomeAt::Failed(_)));
        assert_eq!(t.keys.len(), 1);
        assert_eq!(t.location(0).range, Some(10..20));
        assert_eq!(t.location(0).store, "memory://t");
        assert_eq!(t.missing(), vec![1]);
        assert_eq!(t.cancelled(), 1);
    }

    #[test]
    fn values_past_the_budget_are_read_back() {
        let mut t = FinishedTable::new(2);
        t.values = vec![0; HELD_BUDGET];
        t.insert(finished(0, Outcome::Ok(vec![1]), "seg"));
        assert!(matches!(t.outcome(0), OutcomeAt::Stored(ref l) if l.key == "seg"));
        // Not stored anywhere: held all the same.
        t.insert(finished(1, Outcome::Ok(vec![1]), ""));
        assert!(matches!(t.outcome(1), OutcomeAt::Held(_)));
    }
}
