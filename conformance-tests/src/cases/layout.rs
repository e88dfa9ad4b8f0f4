//! The storage layout is the one the README documents, whichever backend ran the job: every
//! object of a job has a documented name, every outcome is a packed entry under `results/`,
//! a crashed task's stderr tail is at `tasks/<n>/log`, and locations name their store.

use crate::functions::*;
use crate::{Case, CaseFuture, CaseResult, Ctx, Needs, check};
use redwood::raw::pack::read_pack;
use std::collections::BTreeSet;

/// The cases of this area, in a stable order.
pub(super) fn cases() -> Vec<Case> {
    vec![case!(the_stored_layout_is_the_documented_one)]
}

/// Whether `rest` (a key below `jobs/<job>/`) is a documented name.
fn documented(rest: &str) -> bool {
    let parts: Vec<&str> = rest.split('/').collect();
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        ["job.json"] | ["input"] | ["call"] | ["cancelled"] => true,
        ["results", name] | ["events", name] | ["groups", name] => !name.is_empty(),
        ["lease", n] => number(n),
        ["tasks", n, "log"] => number(n),
        _ => false,
    }
}

async fn the_stored_layout_is_the_documented_one(ctx: Ctx) -> CaseResult {
    let storage = ctx.session.storage();
    let layout = storage.layout();
    let squares = ctx.session.map(square, 0..20u64).await?;
    squares.collect().await?;
    let crashed = ctx.session.map(abort_worker, [7u32]).await?;
    check!(crashed.collect().await.is_err(), "the worker did not crash");
    for job in [squares.id(), crashed.id()] {
        let prefix = layout.job(job);
        let keys = storage.list(&prefix).await?;
        for key in &keys {
            let rest = key
                .as_ref()
                .strip_prefix(prefix.as_ref())
                .unwrap_or_default()
                .trim_start_matches('/');
            check!(documented(rest), "job {job}: undocumented object `{rest}`");
        }
    }
    // Every outcome of the squares is a packed entry under `results/`.
    let mut tasks = BTreeSet::new();
    for key in storage.list(&layout.result_segments(squares.id())).await? {
        for entry in read_pack(&storage.get(&key).await?)? {
            // The one documented entry that is no task: a group's attempt times.
            if entry.key != u64::MAX {
                tasks.insert(entry.key);
            }
        }
    }
    check!(
        tasks == (0..20).collect(),
        "stored outcomes for tasks {tasks:?}"
    );
    // Locations name the store they are in, so another store can find them.
    let url = storage.identity();
    let refs = squares.refs().await?;
    check!(
        refs.iter().all(|r| r.location().store == url),
        "result stores: {:?}",
        refs.first().map(|r| r.location())
    );
    let value = ctx.session.broadcast(&vec![1u64, 2, 3]).await?;
    check!(value.store() == url, "broadcast store {}", value.store());
    let blob = ctx.session.upload("layout/x", vec![1u8]).await?;
    check!(blob.store() == url, "blob store {}", blob.store());
    let log = storage.get(&layout.task_log(crashed.id(), 0)).await?;
    let log = String::from_utf8_lossy(&log);
    check!(
        log.contains("about to abort for input 7"),
        "the crashed task's log: {log}"
    );
    Ok(())
}
