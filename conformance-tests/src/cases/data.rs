//! Data that tasks read from storage: broadcast values (checked, read without decoding) and earlier results by reference.

use crate::functions::*;
use crate::{Case, CaseFuture, CaseResult, Ctx, Needs, check};

/// The cases of this area, in a stable order.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(broadcast_is_stored_once_and_read_by_tasks),
        case!(broadcast_bytes_are_read_without_decoding),
        case!(corrupt_broadcast_is_refused_and_rewritten),
        case!(chained_jobs_pass_result_refs),
    ]
}

async fn broadcast_is_stored_once_and_read_by_tasks(ctx: Ctx) -> CaseResult {
    let rw = &ctx.session;
    let table: Vec<u64> = (0..250_000).collect(); // 2 MB
    let b1 = rw.broadcast(&table).await?;
    let b2 = rw.broadcast(&table).await?;
    check!(b1.key() == b2.key(), "same value, different keys");
    let stored = rw
        .storage()
        .list(&rw.storage().layout().broadcasts())
        .await?;
    check!(stored.len() == 1, "{} broadcast objects", stored.len());
    let back: Vec<u64> = rw.fetch_broadcast(&b1).await?;
    check!(back == table, "client read differs");

    let want_sum: u64 = table.iter().sum();
    let got = rw
        .map(bcast_sum, (0..16).map(|i| (b1.clone(), i)))
        .await?
        .collect()
        .await?;
    for (i, (len, sum)) in got.into_iter().enumerate() {
        check!(
            len == 250_000 && sum == want_sum + i as u64,
            "task {i}: {len} {sum}"
        );
    }
    Ok(())
}

async fn broadcast_bytes_are_read_without_decoding(ctx: Ctx) -> CaseResult {
    // Big enough to take the local backend's shared-memory path, and one small value.
    for n in [3 << 20, 1000usize] {
        let data: Vec<u8> = (0..n).map(|i| (i * 31 % 256) as u8).collect();
        let want = (n as u64, data.iter().map(|&b| b as u64).sum::<u64>());
        let shared = ctx.session.broadcast(&data).await?;
        let got = ctx
            .session
            .map(bytes_sum, vec![shared; 6])
            .await?
            .collect()
            .await?;
        check!(
            got.iter().all(|g| *g == want),
            "{n} bytes: got {got:?}, want {want:?}"
        );
    }
    Ok(())
}

async fn corrupt_broadcast_is_refused_and_rewritten(ctx: Ctx) -> CaseResult {
    let rw = &ctx.session;
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let table: Vec<u64> = (0..1000).map(|i| i + salt % 1_000_000_007).collect();
    let b = rw.broadcast(&table).await?;
    // One flipped byte in storage.
    let key = object_store::path::Path::from(b.key());
    let mut bytes = rw.storage().get(&key).await?.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    rw.storage().put(&key, bytes).await?;
    let err = rw
        .map(bcast_sum, vec![(b.clone(), 0)])
        .await?
        .collect()
        .await;
    let Err(err) = err else {
        return Err("a task read a corrupt broadcast value without an error".into());
    };
    check!(
        err.to_string().contains("corrupt") && err.to_string().contains("sha256"),
        "unclear error: {err}"
    );
    // Broadcasting the value again finds the object corrupt and rewrites it.
    let again = rw.broadcast(&table).await?;
    check!(again.key() == b.key(), "the key changed");
    let got = rw.map(bcast_sum, vec![(b, 1)]).await?.collect().await?;
    let want: u64 = table.iter().sum::<u64>() + 1;
    check!(got == vec![(1000, want)], "after the rewrite: {got:?}");
    Ok(())
}

async fn chained_jobs_pass_result_refs(ctx: Ctx) -> CaseResult {
    let rw = &ctx.session;
    let first = rw.map(square, 0..20u64).await?;
    let refs = first.refs().await?;
    check!(refs.len() == 20, "{} refs", refs.len());
    check!(rw.fetch_ref(&refs[7]).await? == 49, "fetch_ref");
    let second = rw.map(add_one, refs).await?.collect().await?;
    let want: Vec<u64> = (0..20).map(|x| x * x + 1).collect();
    check!(second == want, "chained results {second:?}");

    // A failed upstream task surfaces downstream as an error naming it.
    let bad = rw.map(panics, vec![1u32]).await?;
    let bad_refs = bad.refs().await;
    check!(bad_refs.is_err(), "refs of a failed job should be an error");
    Ok(())
}
