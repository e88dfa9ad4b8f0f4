//! The stored data each task reads: the [`crate::Blob`], [`crate::Broadcast`] and
//! [`crate::ResultRef`] handles in its arguments, noted while the arguments are encoded, so a
//! session with several regions can copy them to the region that runs the task and prefer the
//! region that has them.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

/// One stored object a task reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataRef {
    /// The store it is in ([`crate::Storage::identity`]).
    pub store: String,
    /// Its key in that store.
    pub key: String,
}

thread_local! {
    static NOTED: RefCell<Option<Vec<DataRef>>> = const { RefCell::new(None) };
}

/// Notes a handle being encoded (nothing when no [`recording`] is under way).
pub(crate) fn note(store: &str, key: &str) {
    if store.is_empty() || key.is_empty() {
        return;
    }
    NOTED.with(|n| {
        if let Some(list) = n.borrow_mut().as_mut()
            && !list.iter().any(|r| r.store == store && r.key == key)
        {
            list.push(DataRef {
                store: store.to_string(),
                key: key.to_string(),
            });
        }
    });
}

/// Runs `f` (an encoding) and returns what it returned and the handles it encoded.
pub(crate) fn recording<R>(f: impl FnOnce() -> R) -> (R, Vec<DataRef>) {
    let outer = NOTED.with(|n| n.borrow_mut().replace(Vec::new()));
    let out = f();
    let noted = NOTED.with(|n| std::mem::replace(&mut *n.borrow_mut(), outer));
    (out, noted.unwrap_or_default())
}

/// The data of a job's tasks: each distinct object once, and the objects of each task that
/// reads any (tasks in order).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskData {
    /// Every object some task reads.
    pub objects: Vec<DataRef>,
    /// `(task, indices into objects)`, sorted by task.
    pub tasks: Vec<(u64, Vec<u32>)>,
}

impl TaskData {
    /// Collects the per-task lists of [`recording`].
    pub(crate) fn collect(per_task: Vec<Vec<DataRef>>) -> TaskData {
        let mut data = TaskData::default();
        let mut index: std::collections::HashMap<DataRef, u32> = Default::default();
        for (task, refs) in per_task.into_iter().enumerate() {
            if refs.is_empty() {
                continue;
            }
            let ids = refs
                .into_iter()
                .map(|r| {
                    *index.entry(r.clone()).or_insert_with(|| {
                        data.objects.push(r);
                        (data.objects.len() - 1) as u32
                    })
                })
                .collect();
            data.tasks.push((task as u64, ids));
        }
        data
    }

    /// Whether no task reads stored data.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The objects task `task` reads.
    pub fn of(&self, task: u64) -> impl Iterator<Item = &DataRef> {
        let ids = match self.tasks.binary_search_by_key(&task, |(t, _)| *t) {
            Ok(i) => self.tasks[i].1.as_slice(),
            Err(_) => &[],
        };
        ids.iter().filter_map(|&i| self.objects.get(i as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_noted_once_per_task_and_only_while_recording() {
        note("s", "outside");
        let ((), first) = recording(|| {
            note("s", "a");
            note("s", "a");
            let ((), inner) = recording(|| note("t", "b"));
            assert_eq!(inner.len(), 1);
            note("", "ignored");
        });
        assert_eq!(
            first,
            vec![DataRef {
                store: "s".into(),
                key: "a".into()
            }]
        );
        let data = TaskData::collect(vec![first.clone(), Vec::new(), first]);
        assert_eq!(data.objects.len(), 1);
        assert_eq!(data.of(2).count(), 1);
        assert_eq!(data.of(1).count(), 0);
        assert_eq!(data.of(9).count(), 0);
    }
}
