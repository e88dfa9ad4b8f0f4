//! Tasks that fail, crash, time out or are cancelled, and the options that act on them: retries with backoff, timeouts, concurrency limits.

use crate::functions::*;
use crate::{Case, CaseFuture, CaseResult, Ctx, Needs, check};
use redwood::{ErrorKind, TaskErrorKind, TaskOptions, WaitFor};
use std::time::{Duration, Instant};

use super::{CANCEL, CANCEL_RETRIES_TIMEOUT, CONCURRENCY, RETRIES, TIMEOUT};

/// The cases of this area, in a stable order.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(remote_panic_is_a_task_error),
        case!(remote_err_is_a_task_error),
        case!(worker_crash_is_a_task_error),
        case!(worker_output_does_not_disturb_results),
        case!(timeout_kills_the_task, TIMEOUT),
        case!(retry_then_succeed, RETRIES),
        case!(crash_then_retry_succeeds, RETRIES),
        case!(
            endless_timeouts_and_backoffs_mean_never,
            CANCEL_RETRIES_TIMEOUT
        ),
        case!(concurrency_limit_is_honoured, CONCURRENCY),
        case!(cancel_mid_job, CANCEL),
    ]
}

async fn remote_panic_is_a_task_error(ctx: Ctx) -> CaseResult {
    let err = match ctx.session.call(panics, 7).await {
        Ok(v) => return Err(format!("expected a panic, got {v}").into()),
        Err(e) => e,
    };
    check!(err.kind() == ErrorKind::TaskFailed, "kind {:?}", err.kind());
    let te = err.task_error().ok_or("no task error")?;
    check!(te.kind == TaskErrorKind::Panic, "task kind {:?}", te.kind);
    check!(
        te.message.contains("conformance panic for input 7"),
        "message {}",
        te.message
    );
    let loc = te.location.as_deref().unwrap_or("");
    check!(loc.contains("functions.rs"), "location {loc}");
    check!(
        te.function.ends_with("functions::panics"),
        "function {}",
        te.function
    );
    // The pool goes on.
    check!(ctx.session.call(panics, 2000).await? == 2000, "after panic");
    Ok(())
}

async fn remote_err_is_a_task_error(ctx: Ctx) -> CaseResult {
    let outcomes = ctx
        .session
        .map(fails_on_odd, 0..6u32)
        .await?
        .collect_outcomes()
        .await;
    for (i, o) in outcomes.iter().enumerate() {
        match (i % 2, o) {
            (0, Ok(v)) => check!(*v == i as u32 / 2, "task {i} value {v}"),
            (1, Err(e)) => {
                let te = e.task_error().ok_or("no task error")?;
                check!(te.kind == TaskErrorKind::Error, "kind {:?}", te.kind);
                check!(
                    te.message == format!("odd input {i} is not allowed"),
                    "message {}",
                    te.message
                );
                check!(te.task == i as u64, "task index {}", te.task);
            }
            _ => return Err(format!("task {i}: unexpected {o:?}").into()),
        }
    }
    let err = ctx
        .session
        .map(fails_on_odd, 0..6u32)
        .await?
        .collect()
        .await;
    let err = err.err().ok_or("collect should fail")?;
    check!(
        err.task_error().map(|t| t.task) == Some(1),
        "first failure should be task 1: {err}"
    );
    Ok(())
}

async fn worker_crash_is_a_task_error(ctx: Ctx) -> CaseResult {
    // Earlier tasks on the same workers write to stderr (a panic, a line): none of it may
    // show in the crashed task's stderr tail.
    let earlier = ctx.session.map(panics, 0..16u32).await?;
    let _ = earlier.collect_outcomes().await;
    let err = ctx
        .session
        .call(abort_worker, 3)
        .await
        .err()
        .ok_or("expected a crash")?;
    let te = err.task_error().ok_or("no task error")?;
    check!(te.kind == TaskErrorKind::Crash, "kind {:?}", te.kind);
    check!(
        te.signal == Some(6),
        "signal {:?} (want SIGABRT)",
        te.signal
    );
    let tail = te.stderr_tail.as_deref().unwrap_or("");
    check!(
        tail.contains("about to abort for input 3"),
        "stderr tail {tail:?}"
    );
    check!(
        !tail.contains("conformance panic"),
        "the stderr tail holds an earlier task's output: {tail:?}"
    );
    check!(
        !tail.contains("redwood-task"),
        "a task marker shows: {tail:?}"
    );
    check!(err.to_string().contains("crashed"), "display {err}");

    // SIGKILL, as the OOM killer sends it.
    let err = ctx
        .session
        .call(sigkill_self, 1)
        .await
        .err()
        .ok_or("expected a kill")?;
    let te = err.task_error().ok_or("no task error")?;
    check!(
        te.kind == TaskErrorKind::Crash && te.signal == Some(9),
        "{te:?}"
    );
    check!(te.message.contains("SIGKILL"), "message {}", te.message);

    // The pool replaced the worker.
    let got = ctx.session.map(square, 0..50u64).await?.collect().await?;
    check!(got[49] == 2401, "after crash");
    Ok(())
}

async fn worker_output_does_not_disturb_results(ctx: Ctx) -> CaseResult {
    let got = ctx
        .session
        .map(noisy, vec![200u32; 4])
        .await?
        .collect()
        .await?;
    check!(got == vec![200; 4], "got {got:?}");
    Ok(())
}

async fn timeout_kills_the_task(ctx: Ctx) -> CaseResult {
    let started = Instant::now();
    let options = TaskOptions::new().timeout(Duration::from_millis(300));
    let err = ctx
        .session
        .call_with(sleep_echo, (30_000u64, 1u64), options)
        .await
        .err()
        .ok_or("expected a timeout")?;
    let took = started.elapsed();
    let te = err.task_error().ok_or("no task error")?;
    check!(te.kind == TaskErrorKind::Timeout, "kind {:?}", te.kind);
    check!(took < Duration::from_secs(10), "timeout took {took:?}");
    check!(ctx.session.call(square, 9).await? == 81, "after timeout");
    Ok(())
}

/// `Duration::MAX` as a timeout or a backoff means "never", not a panic in the dispatcher.
async fn endless_timeouts_and_backoffs_mean_never(ctx: Ctx) -> CaseResult {
    let endless = TaskOptions::new().timeout(Duration::MAX);
    let got = ctx
        .session
        .map_with(square, 0..3u64, endless)
        .await?
        .collect()
        .await?;
    check!(got == vec![0, 1, 4], "with an endless timeout: {got:?}");
    // The first attempt fails; its retry is due in a century, so the job waits until cancelled.
    let options = TaskOptions::new()
        .retries(1)
        .backoff(Duration::MAX)
        .max_backoff(Duration::MAX);
    let job = ctx.session.map_with(flaky, vec![2u32], options).await?;
    let waited = job.wait_timeout(WaitFor::All, Duration::from_secs(3)).await;
    check!(waited.is_err(), "the retry ran before its endless backoff");
    job.cancel().await?;
    let outcomes = job.collect_outcomes().await;
    check!(
        outcomes.len() == 1 && outcomes[0].is_err(),
        "after cancel: {outcomes:?}"
    );
    Ok(())
}

async fn retry_then_succeed(ctx: Ctx) -> CaseResult {
    let options = TaskOptions::new()
        .retries(3)
        .backoff(Duration::from_millis(10));
    let job = ctx
        .session
        .map_with(flaky, vec![3u32; 4], options.clone())
        .await?;
    let stats_job = job.clone();
    let got = job.collect().await?;
    // Attempts count from 1: two failures, then attempt 3 succeeds.
    check!(got == vec![3; 4], "succeeded on attempts {got:?}");
    check!(
        stats_job.stats().retries == 8,
        "retries {}",
        stats_job.stats().retries
    );

    // Out of retries: the last attempt's error, with its attempt number.
    let options = TaskOptions::new()
        .retries(1)
        .backoff(Duration::from_millis(10));
    let err = ctx
        .session
        .call_with(flaky, 5, options)
        .await
        .err()
        .ok_or("expected failure")?;
    let te = err.task_error().ok_or("no task error")?;
    check!(te.attempt == 2, "attempt {}", te.attempt);
    check!(
        err.to_string().contains("attempt 2)"),
        "the text names another attempt than TaskError::attempt: {err}"
    );
    Ok(())
}

async fn crash_then_retry_succeeds(ctx: Ctx) -> CaseResult {
    let options = TaskOptions::new()
        .retries(2)
        .backoff(Duration::from_millis(10));
    let got = ctx
        .session
        .map_with(crash_once, 0..3u32, options)
        .await?
        .collect()
        .await?;
    check!(got == vec![1, 2, 3], "got {got:?}");
    Ok(())
}

async fn concurrency_limit_is_honoured(ctx: Ctx) -> CaseResult {
    let options = TaskOptions::new().concurrency(1);
    let spans = ctx
        .session
        .map_with(timed_sleep, vec![60u64; 6], options)
        .await?
        .collect()
        .await?;
    let mut spans = spans;
    spans.sort();
    for w in spans.windows(2) {
        check!(
            w[1].0 >= w[0].1,
            "tasks overlapped: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    Ok(())
}

async fn cancel_mid_job(ctx: Ctx) -> CaseResult {
    let options = TaskOptions::new().concurrency(2);
    let job = ctx
        .session
        .map_with(sleep_echo, (0..40u64).map(|i| (150, i)), options)
        .await?;
    job.wait(WaitFor::Any).await?;
    let started = Instant::now();
    let cancelled = job.cancel().await?;
    check!(
        started.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        started.elapsed()
    );
    check!(cancelled > 0, "nothing was cancelled");
    let outcomes = job.clone().collect_outcomes().await;
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    let was_cancelled = outcomes
        .iter()
        .filter(|o| matches!(o, Err(e) if e.kind() == ErrorKind::Cancelled))
        .count();
    check!(ok >= 1, "no task finished before cancel");
    check!(
        ok + was_cancelled == 40,
        "{ok} ok + {was_cancelled} cancelled != 40"
    );
    check!(
        was_cancelled as u64 == cancelled,
        "{was_cancelled} vs {cancelled}"
    );
    // The pool still works.
    check!(ctx.session.call(square, 5).await? == 25, "after cancel");
    Ok(())
}
