//! What `redwood cleanup` finds on a Batch account beyond the jobs it names: the Batch jobs
//! made for a storage home whose Redwood jobs are no longer stored there, and the pools Redwood
//! created (without `keep`) that no unfinished Batch job uses. Both are told apart by the
//! metadata the backend puts on what it makes; what an older version made carries none and is
//! never touched.

use std::collections::HashSet;

use redwood_core::Result;
use redwood_core::raw::backend::Leftovers;
use serde_json::{Value, json};

use super::client::BatchClient;

/// A Batch job's metadata entry naming the storage home its Redwood job is stored in.
const HOME: &str = "redwood-home";
/// A pool's metadata entry saying Redwood created it, and whether it is to be kept.
const POOL: &str = "redwood-pool";
/// The value of [`POOL`] on a pool Redwood may delete once no job uses it.
const DELETE_WHEN_IDLE: &str = "delete-when-idle";

/// The metadata of a Batch job made for a job stored in the home tagged `home`.
pub(crate) fn job_metadata(home: &str) -> Value {
    json!([{ "name": HOME, "value": home }])
}

/// The metadata of a pool Redwood creates.
pub(crate) fn pool_metadata(keep: bool) -> Value {
    let value = if keep { "keep" } else { DELETE_WHEN_IDLE };
    json!([{ "name": POOL, "value": value }])
}

/// The value of a resource's metadata entry `name`.
fn metadata<'a>(resource: &'a Value, name: &str) -> Option<&'a str> {
    resource["metadata"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?["value"]
        .as_str()
}

/// What a sweep found.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Batch jobs of the home whose Redwood job is no longer stored.
    pub jobs: Vec<String>,
    /// Pools Redwood created that no unfinished job uses once the deleted jobs are gone.
    pub pools: Vec<String>,
}

/// Lists the account's jobs and pools and picks the leftovers; `deleting` are the jobs being
/// deleted anyway (they keep no pool busy).
pub(crate) async fn find(
    client: &BatchClient,
    leftovers: &Leftovers,
    deleting: &[String],
) -> Result<Found> {
    let jobs = client
        .list(
            "list_jobs",
            "/jobs",
            &[("$select", "id,state,poolInfo,metadata")],
        )
        .await?;
    let lower = |s: &str| s.to_ascii_lowercase();
    let stored: HashSet<String> = leftovers.stored.iter().map(|s| lower(s)).collect();
    let deleting: HashSet<String> = deleting.iter().map(|s| lower(s)).collect();
    let mut found = Found::default();
    let mut busy: HashSet<String> = HashSet::new();
    for job in &jobs {
        let Some(id) = job["id"].as_str() else {
            continue;
        };
        let key = lower(id);
        let leftover = metadata(job, HOME) == Some(leftovers.home.as_str())
            && !stored.contains(&key)
            && !deleting.contains(&key);
        if leftover {
            found.jobs.push(id.to_string());
        }
        let unfinished = !matches!(job["state"].as_str(), Some("completed" | "deleting"));
        if unfinished
            && !leftover
            && !deleting.contains(&key)
            && let Some(pool) = job["poolInfo"]["poolId"].as_str()
        {
            busy.insert(lower(pool));
        }
    }
    let pools = client
        .list("list_pools", "/pools", &[("$select", "id,metadata")])
        .await?;
    for pool in &pools {
        if let Some(id) = pool["id"].as_str()
            && metadata(pool, POOL) == Some(DELETE_WHEN_IDLE)
            && !busy.contains(&lower(id))
        {
            found.pools.push(id.to_string());
        }
    }
    found.jobs.sort();
    found.pools.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_read_back_by_name() {
        let job = json!({ "id": "j", "metadata": job_metadata("abc") });
        assert_eq!(metadata(&job, HOME), Some("abc"));
        assert_eq!(metadata(&job, POOL), None);
        let pool = json!({ "id": "p", "metadata": pool_metadata(false) });
        assert_eq!(metadata(&pool, POOL), Some(DELETE_WHEN_IDLE));
        let kept = json!({ "id": "p", "metadata": pool_metadata(true) });
        assert_eq!(metadata(&kept, POOL), Some("keep"));
        assert_eq!(metadata(&json!({ "id": "old" }), POOL), None);
    }
}
