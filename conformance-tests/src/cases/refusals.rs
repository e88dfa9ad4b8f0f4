//! Tasks a worker must refuse: made by another binary, or naming a function it does not have.

use crate::functions::*;
use crate::{Case, CaseFuture, CaseResult, Ctx, Needs, check};
use futures::StreamExt;
use redwood::raw::backend::JobSpec;
use redwood::raw::envelope::Outcome;
use redwood::raw::executor::{Attempt, OpenRequest};
use redwood::raw::pack::PackWriter;
use redwood::{TaskErrorKind, TaskOptions};

use super::redwood_core_encode;

/// The cases of this area, in a stable order.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(mismatched_binary_is_refused),
        case!(unknown_function_is_refused),
    ]
}

/// Runs one attempt straight on the executor with a hand-made spec, returning its outcome.
async fn submit_raw(ctx: &Ctx, spec: JobSpec, args: Vec<u8>) -> Result<Outcome, crate::CaseError> {
    let storage = ctx.session.storage().clone();
    let executor = ctx.session.backend();
    let mut pack = PackWriter::new();
    pack.push(0, &args);
    let range = pack.ranges()[0].clone();
    if executor.capabilities().inputs_from_storage {
        storage
            .put(&storage.layout().input(&spec.id), pack.finish())
            .await?;
    }
    let opened = executor
        .open(OpenRequest::new(std::sync::Arc::new(spec), storage))
        .await?;
    let attempt = Attempt {
        task: 0,
        attempt: 1,
        args: args.into(),
        range: (range.start, range.end),
    };
    opened.job.launch(vec![attempt]).await?;
    let mut ends = opened.ends;
    let end = ends.next().await.ok_or("no outcome")?;
    opened.job.close().await;
    Ok(end.outcome().clone())
}

fn spec_for(function: &str, signature: u64, binary: &str) -> JobSpec {
    JobSpec {
        id: format!(
            "raw-{}",
            std::process::id() as u64 * 1000 + signature % 1000
        ),
        function: function.to_string(),
        signature,
        binary: binary.to_string(),
        task_count: 1,
        options: TaskOptions::default(),
    }
}

fn refused(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Err(e) if e.kind == TaskErrorKind::Refused => Some(&e.message),
        _ => None,
    }
}

async fn mismatched_binary_is_refused(ctx: Ctx) -> CaseResult {
    let args = redwood_core_encode(&(3u64,))?;
    let fake = "0".repeat(64);
    let outcome = submit_raw(
        &ctx,
        spec_for(square.id(), square.signature(), &fake),
        args.clone(),
    )
    .await?;
    let msg = refused(&outcome).ok_or(format!("not refused: {outcome:?}"))?;
    check!(msg.contains("binary"), "message {msg}");

    let real = redwood::raw::binary::current_binary_hash()?;
    let outcome = submit_raw(
        &ctx,
        spec_for(square.id(), square.signature() ^ 1, real),
        args,
    )
    .await?;
    let msg = refused(&outcome).ok_or(format!("not refused: {outcome:?}"))?;
    check!(msg.contains("signature"), "message {msg}");
    Ok(())
}

async fn unknown_function_is_refused(ctx: Ctx) -> CaseResult {
    let real = redwood::raw::binary::current_binary_hash()?;
    let outcome = submit_raw(&ctx, spec_for("nowhere::nothing", 1, real), vec![]).await?;
    let msg = refused(&outcome).ok_or(format!("not refused: {outcome:?}"))?;
    check!(
        msg.contains("nowhere::nothing") && msg.contains("not registered"),
        "message {msg}"
    );
    Ok(())
}
