//! Data follows the tasks: before attempts launch in a region, the stored objects they read
//! (broadcast values, uploads, earlier results) are copied into that region's store, each
//! object once per store; and a task prefers the region whose store already has all of its
//! data.

use futures::StreamExt;
use tracing::Instrument;

use super::lanes::NO_LANE;
use super::run::Driver;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::backend::TaskEvent;
use crate::storage::Storage;
use crate::types::data_refs::TaskData;

/// How many objects are copied at once.
const COPIES_AT_ONCE: usize = 8;

/// For each task, the lane whose store holds every object it reads (empty: no task reads
/// stored data).
pub(super) fn preferred_lanes(data: &TaskData, stores: &[&str], task_count: u64) -> Vec<u8> {
    if data.is_empty() || stores.len() < 2 {
        return Vec::new();
    }
    let mut preferred = vec![NO_LANE; task_count as usize];
    for (task, _) in &data.tasks {
        let mut where_ = data.of(*task).map(|r| r.store.as_str());
        let Some(first) = where_.next() else {
            continue;
        };
        if where_.all(|s| s == first)
            && let Some(lane) = stores.iter().position(|s| *s == first)
            && let Some(slot) = preferred.get_mut(*task as usize)
        {
            *slot = lane as u8;
        }
    }
    preferred
}

impl Driver {
    /// Copies into `lane`'s store the objects the tasks `ids` read that it lacks.
    pub(super) async fn replicate(&mut self, lane: usize, ids: &[(u64, u32)]) -> Result<()> {
        if self.data.is_empty() {
            return Ok(());
        }
        let dest = self.lanes[lane].region.storage().clone();
        let mut wanted: Vec<u32> = Vec::new();
        for (task, _) in ids {
            let Ok(i) = self.data.tasks.binary_search_by_key(task, |(t, _)| *t) else {
                continue;
            };
            for &object in &self.data.tasks[i].1 {
                let Some(r) = self.data.objects.get(object as usize) else {
                    continue;
                };
                if r.store != dest.identity()
                    && !wanted.contains(&object)
                    && !self.replicated.contains(&(lane as u8, object))
                {
                    wanted.push(object);
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let mut copies = Vec::with_capacity(wanted.len());
        for object in &wanted {
            let r = &self.data.objects[*object as usize];
            let Some(source) = self.store_of(&r.store) else {
                tracing::warn!(store = %r.store, key = %r.key, "a task reads an object from a store that is not one of the session's: it is not copied");
                continue;
            };
            copies.push(copy_object(source, dest.clone(), r.key.clone()));
        }
        let results: Vec<Result<u64>> = futures::stream::iter(copies)
            .buffer_unordered(COPIES_AT_ONCE)
            .collect()
            .await;
        let (mut objects, mut bytes) = (0u64, 0u64);
        let mut failed = None;
        for result in results {
            match result {
                Ok(0) => {}
                Ok(n) => {
                    objects += 1;
                    bytes = bytes.saturating_add(n);
                }
                Err(e) => failed = Some(e),
            }
        }
        if objects > 0 {
            let region = self.lanes[lane].name().to_string();
            tracing::debug!(region = %region, objects, bytes, "copied data for the region's tasks");
            let _ = self.events.unbounded_send(TaskEvent::Copied {
                region,
                objects,
                bytes,
            });
        }
        if let Some(e) = failed {
            // Copied again on the next try.
            return Err(e);
        }
        self.replicated
            .extend(wanted.into_iter().map(|object| (lane as u8, object)));
        Ok(())
    }

    /// The session's store known as `identity`: the home store or a region's.
    fn store_of(&self, identity: &str) -> Option<Storage> {
        if self.home.identity() == identity {
            return Some(self.home.clone());
        }
        self.lanes
            .iter()
            .map(|l| l.region.storage())
            .find(|s| s.identity() == identity)
            .cloned()
    }
}

/// Copies one object (the same key) from `source` to `dest`; returns the bytes copied, 0 when
/// `dest` has it already: a result (never changed once stored), or a broadcast value whose
/// bytes match the sha256 its key names (a corrupt copy is replaced).
async fn copy_object(source: Storage, dest: Storage, key: String) -> Result<u64> {
    let path = object_store::path::Path::from(key.as_str());
    let layout = dest.layout();
    if key.starts_with(layout.broadcasts().as_ref()) {
        let named = key.rsplit('/').next().unwrap_or_default();
        if dest
            .sha256(&path)
            .await?
            .is_some_and(|(sha, _)| sha == named)
        {
            return Ok(0);
        }
    } else if key.starts_with(layout.jobs().as_ref()) && dest.exists(&path).await? {
        return Ok(0);
    }
    let span = tracing::debug_span!("replicate", key = %key, to = %dest.identity());
    async {
        let bytes = source.get(&path).await.map_err(|e| {
            Error::new(
                ErrorKind::Storage,
                format!(
                    "could not read {key} to copy it to {}: {e}",
                    dest.identity()
                ),
            )
        })?;
        let len = bytes.len() as u64;
        dest.put(&path, bytes).await?;
        Ok(len.max(1))
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::data_refs::DataRef;

    #[test]
    fn a_task_prefers_the_one_store_that_has_all_its_data() {
        let r = |store: &str, key: &str| DataRef {
            store: store.into(),
            key: key.into(),
        };
        let data = TaskData::collect(vec![
            vec![r("west", "a")],
            vec![r("west", "a"), r("east", "b")],
            Vec::new(),
            vec![r("east", "b"), r("east", "c")],
            vec![r("elsewhere", "d")],
        ]);
        let preferred = preferred_lanes(&data, &["west", "east"], 5);
        assert_eq!(preferred, [0, NO_LANE, NO_LANE, 1, NO_LANE]);
        assert!(preferred_lanes(&data, &["west"], 5).is_empty());
    }
}
