//! Serving the objects running tasks ask for (broadcast values, result references): one
//! download per object however many workers ask for it at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use object_store::ObjectStoreExt;
use redwood_core::Storage;
use tracing::Instrument;

type Key = (String, Option<(u64, u64)>);
type Download = Shared<BoxFuture<'static, Result<Bytes, String>>>;

/// Downloads objects for workers; concurrent requests for the same object share one download.
#[derive(Clone, Default)]
pub(crate) struct Fetcher {
    in_flight: Arc<Mutex<HashMap<Key, Download>>>,
}

impl Fetcher {
    /// The object (or byte range) at `key`, read once for everyone asking at the same time.
    pub(crate) async fn fetch(
        &self,
        storage: Storage,
        key: String,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, String> {
        let id = (key.clone(), range);
        let download = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.clone())
                .or_insert_with(|| download(storage, key, range).boxed().shared())
                .clone()
        };
        let result = download.await;
        // Done: later requests read it again rather than keep large objects in memory.
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        result
    }
}

async fn download(
    storage: Storage,
    key: String,
    range: Option<(u64, u64)>,
) -> Result<Bytes, String> {
    let path = object_store::path::Path::from(key.as_str());
    let span = tracing::debug_span!("worker.fetch", key, ?range);
    let result = async {
        match range {
            Some((start, end)) => storage.store().get_range(&path, start..end).await,
            None => storage.store().get(&path).await?.bytes().await,
        }
    }
    .instrument(span)
    .await;
    result.map_err(|e| format!("cannot read {key}: {e}"))
}
