//! Tasks a worker must refuse: made by another binary, or naming a function it does not have.

use crate::functions::*;
use crate::{Case, CaseFuture, CaseResult, Ctx, Needs, check};
use futures::StreamExt;
use redwood::raw::backend::{JobSpec, SubmitRequest, TaskEvent, TaskInput};
use redwood::raw::envelope::Outcome;
use redwood::{TaskErrorKind, TaskOptions};

use super::redwood_core_encode;

/// The cases of this area, in a stable order.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(mismatched_binary_is_refused),
        case!(unknown_function_is_refused),
    ]
}

/// Submits one task straight to the backend with a hand-made spec, returning its outcome.
async fn submit_raw(ctx: &Ctx, spec: JobSpec, args: Vec<u8>) -> Result<Outcome, crate::CaseError> {
    let request = SubmitRequest::new(
        std::sync::Arc::new(spec),
        vec![TaskInput {
            index: 0,
            args: args.into(),
        }],
        ctx.session.storage().clone(),
    );
    let mut events = ctx.session.backend().submit(request).await?.events;
    while let Some(event) = events.next().await {
        if let TaskEvent::Finished(f) = event {
            return Ok(f.outcome);
        }
    }
    Err("no outcome".into())
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
