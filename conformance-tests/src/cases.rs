//! The cases. Each is a plain `async fn(Ctx) -> CaseResult`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redwood::raw::backend::{JobSpec, SubmitRequest, TaskEvent, TaskInput};
use redwood::raw::envelope::Outcome;
use redwood::{ErrorKind, Job, Session, TaskErrorKind, TaskOptions, WaitFor};

use crate::functions::*;
use crate::{Case, CaseFuture, CaseResult, Ctx, Needs, check};

macro_rules! case {
    ($name:ident) => {
        case!($name, Needs::default())
    };
    ($name:ident, $needs:expr) => {
        Case {
            name: stringify!($name),
            needs: $needs,
            run: |ctx| -> CaseFuture { Box::pin($name(ctx)) },
        }
    };
}

/// Every case, in a stable order.
pub fn all() -> Vec<Case> {
    let cancel = Needs {
        cancel: true,
        ..Needs::default()
    };
    let timeout = Needs {
        timeout: true,
        ..Needs::default()
    };
    let retries = Needs {
        retries: true,
        ..Needs::default()
    };
    let cancel_and_retries = Needs {
        cancel: true,
        retries: true,
        timeout: true,
        ..Needs::default()
    };
    let concurrency = Needs {
        concurrency: true,
        ..Needs::default()
    };
    let shared = Needs {
        shared_store: true,
        ..Needs::default()
    };
    vec![
        case!(call_every_arity),
        case!(map_of_many_types),
        case!(large_vectors_travel),
        case!(empty_map),
        case!(map_ten_thousand),
        case!(collect_keeps_task_order),
        case!(results_stream_in_completion_order),
        case!(reduce_streams),
        case!(broadcast_is_stored_once_and_read_by_tasks),
        case!(broadcast_bytes_are_read_without_decoding),
        case!(corrupt_broadcast_is_refused_and_rewritten),
        case!(chained_jobs_pass_result_refs),
        case!(remote_panic_is_a_task_error),
        case!(remote_err_is_a_task_error),
        case!(worker_crash_is_a_task_error),
        case!(worker_output_does_not_disturb_results),
        case!(timeout_kills_the_task, timeout),
        case!(retry_then_succeed, retries),
        case!(crash_then_retry_succeeds, retries),
        case!(endless_timeouts_and_backoffs_mean_never, cancel_and_retries),
        case!(concurrency_limit_is_honoured, concurrency),
        case!(cancel_mid_job, cancel),
        case!(wait_variants),
        case!(attach_after_client_restart, shared),
        case!(attach_resumes_unfinished_tasks, shared),
        case!(attach_while_the_runner_lives_never_runs_twice),
        case!(workers_die_with_a_killed_client, shared),
        case!(attach_unknown_job_is_not_found),
        case!(mismatched_binary_is_refused),
        case!(unknown_function_is_refused),
        case!(stats_count_everything),
        case!(call_records_are_stored),
    ]
}

async fn call_every_arity(ctx: Ctx) -> CaseResult {
    let rw = &ctx.session;
    check!(rw.call(zero, ()).await? == 42, "zero()");
    check!(rw.call(square, 12).await? == 144, "square(12)");
    check!(rw.call(square, (13,)).await? == 169, "square((13,))");
    let s = rw
        .call(concat, ("red".to_string(), "wood".to_string()))
        .await?;
    check!(s == "redwood", "concat gave {s}");
    let m = rw.call(mix, (5i8, 1.5f32, true)).await?;
    check!(m == (-5, 3.0, false), "mix gave {m:?}");
    let e = rw
        .call(eight, (1u8, 2u16, 3u32, 4u64, -5i8, -6i16, 7i32, -8i64))
        .await?;
    check!(e == -2, "eight gave {e}");
    rw.call(unit, ()).await?;
    // Run concurrently too: the calls are independent futures.
    let (a, b) = tokio::join!(rw.call(square, 3), rw.call(square, 4));
    check!(a? + b? == 25, "joined calls");
    Ok(())
}

async fn map_of_many_types(ctx: Ctx) -> CaseResult {
    let rw = &ctx.session;
    let words: Vec<(String, String)> = (0..20)
        .map(|i| (format!("w{i}"), "é✓".repeat(i % 4)))
        .collect();
    let got = rw.map(concat, words.clone()).await?.collect().await?;
    let want: Vec<String> = words.iter().map(|(a, b)| format!("{a}{b}")).collect();
    check!(got == want, "strings differ");

    let point = Point {
        label: "root".into(),
        coords: vec![(1, 2), (3, -4)],
        child: Some(Box::new(Point {
            label: "leaf".into(),
            coords: vec![],
            child: None,
        })),
    };
    let got = rw
        .map(mirror, vec![point.clone(); 3])
        .await?
        .collect()
        .await?;
    check!(
        got.len() == 3 && got[0] == mirror(point),
        "nested structs differ"
    );

    let units = rw.map(unit, vec![(); 5]).await?.collect().await?;
    check!(units.len() == 5, "unit results");
    Ok(())
}

async fn large_vectors_travel(ctx: Ctx) -> CaseResult {
    // 10 MB of f64 in and out of a task.
    let v: Vec<f64> = (0..1_310_720).map(|i| i as f64).collect();
    let got = ctx.session.call(scale, (v.clone(), 0.5)).await?;
    check!(got.len() == v.len(), "length {}", got.len());
    check!(
        got.iter().zip(&v).all(|(g, x)| *g == x * 0.5),
        "values differ"
    );
    Ok(())
}

async fn empty_map(ctx: Ctx) -> CaseResult {
    let job = ctx.session.map(square, Vec::<u64>::new()).await?;
    check!(job.is_empty(), "job has {} tasks", job.len());
    let stream: Vec<_> = job.results().collect().await;
    check!(stream.is_empty(), "stream not empty");
    check!(job.wait(WaitFor::All).await?.total == 0, "wait");
    check!(job.collect().await?.is_empty(), "collect not empty");
    Ok(())
}

async fn map_ten_thousand(ctx: Ctx) -> CaseResult {
    let n = 10_000u64;
    let job = ctx.session.map(noop, 0..n).await?;
    check!(job.len() == n, "len");
    let got = job.collect().await?;
    check!(got == (0..n).collect::<Vec<_>>(), "10,000 results differ");
    Ok(())
}

async fn collect_keeps_task_order(ctx: Ctx) -> CaseResult {
    // Later tasks finish first; collect is still in task order.
    let items: Vec<(u64, u64)> = (0..6).map(|i| ((6 - i) * 40, i)).collect();
    let got = ctx.session.map(sleep_echo, items).await?.collect().await?;
    check!(got == vec![0, 1, 2, 3, 4, 5], "got {got:?}");
    Ok(())
}

async fn results_stream_in_completion_order(ctx: Ctx) -> CaseResult {
    // Task 0 sleeps long; every other task is quick and must come out before it.
    let mut items = vec![(1500u64, 0u64)];
    items.extend((1..8).map(|i| (0, i)));
    let job = ctx.session.map(sleep_echo, items).await?;
    let order: Vec<u64> = job
        .results()
        .map(|(i, r)| r.map(|_| i))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    check!(order.len() == 8, "order {order:?}");
    check!(
        *order.last().unwrap_or(&0) == 0,
        "task 0 was not last: {order:?}"
    );
    let distinct: HashSet<_> = order.iter().collect();
    check!(distinct.len() == 8, "duplicates in {order:?}");
    Ok(())
}

async fn reduce_streams(ctx: Ctx) -> CaseResult {
    let n = 200u64;
    let sum = ctx
        .session
        .map(square, 0..n)
        .await?
        .reduce(0u64, |a, b| a + b)
        .await?;
    check!(sum == (0..n).map(|x| x * x).sum::<u64>(), "sum {sum}");

    // The first result arrives long before the slowest task ends.
    let job = ctx
        .session
        .map(sleep_echo, vec![(2000u64, 1u64), (0, 2)])
        .await?;
    let started = Instant::now();
    let mut stream = Box::pin(job.results());
    let first = stream.next().await;
    let waited = started.elapsed();
    check!(matches!(first, Some((1, Ok(2)))), "first was {first:?}");
    check!(
        waited < Duration::from_millis(1500),
        "first result took {waited:?}"
    );
    Ok(())
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

async fn wait_variants(ctx: Ctx) -> CaseResult {
    let mut items = vec![(3000u64, 0u64)];
    items.extend((1..10).map(|i| (0, i)));
    let job = ctx.session.map(sleep_echo, items).await?;
    let any = job.wait(WaitFor::Any).await?;
    check!(any.finished >= 1, "any: {any:?}");
    let most = job.wait(WaitFor::Fraction(0.9)).await?;
    check!(most.finished >= 9, "fraction: {most:?}");
    let err = job
        .wait_timeout(WaitFor::All, Duration::from_millis(100))
        .await;
    check!(
        matches!(&err, Err(e) if e.kind() == ErrorKind::Timeout),
        "wait_timeout gave {err:?}"
    );
    let bad = job.wait(WaitFor::Fraction(1.5)).await;
    check!(
        matches!(&bad, Err(e) if e.kind() == ErrorKind::InvalidInput),
        "fraction 1.5: {bad:?}"
    );
    let all = job.wait(WaitFor::All).await?;
    check!(all.finished == 10 && all.failed == 0, "all: {all:?}");
    Ok(())
}

/// This test binary as a second client process with `role`, on the same store and backend.
fn child_command(ctx: &Ctx, role: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&ctx.exe);
    command
        .env("REDWOOD_CONFORMANCE_CHILD", role)
        .env("REDWOOD_STORAGE", &ctx.storage_url)
        .env("REDWOOD_NAMESPACE", &ctx.namespace)
        .env("REDWOOD_BACKEND", ctx.session.backend().name())
        .envs(ctx.child_env.iter().map(|(k, v)| (k, v)));
    command
}

/// Runs this test binary as a second client process with `role`, returning its stdout.
async fn run_child(ctx: &Ctx, role: &str) -> Result<String, crate::CaseError> {
    let out = child_command(ctx, role).output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "child `{role}` failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(stdout)
}

fn job_id_from(stdout: &str) -> Result<String, crate::CaseError> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("job "))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| format!("no job id in child output: {stdout}").into())
}

/// What the child process does for the attach cases.
pub async fn child_main(role: &str) -> CaseResult {
    let rw = Session::from_config()?;
    match role {
        "finish" => {
            let job = rw.map(square, 0..50u64).await?;
            println!("job {}", job.id());
            job.wait(WaitFor::All).await?;
        }
        "die-midway" => {
            let options = TaskOptions::new().concurrency(2);
            let job = rw
                .map_with(sleep_echo, (0..12u64).map(|i| (500, i)), options)
                .await?;
            println!("job {}", job.id());
            job.wait(WaitFor::Fraction(0.25)).await?;
            // Leave without waiting: the rest of the tasks stop with this process, or keep
            // running on a cloud backend.
            use std::io::Write;
            std::io::stdout().flush()?;
            std::process::exit(0);
        }
        hang if hang.starts_with("hang:") => {
            let dir = hang["hang:".len()..].to_string();
            let job = rw
                .map(pid_then_sleep, (0..2).map(|_| (dir.clone(), 120_000u64)))
                .await?;
            println!("job {}", job.id());
            job.wait(WaitFor::All).await?;
        }
        other => return Err(format!("unknown child role {other}").into()),
    }
    Ok(())
}

async fn attach_after_client_restart(ctx: Ctx) -> CaseResult {
    let stdout = run_child(&ctx, "finish").await?;
    let id = job_id_from(&stdout)?;
    let job = Job::<u64>::attach(&ctx.session, &id).await?;
    check!(job.len() == 50, "len {}", job.len());
    let got = job.collect().await?;
    check!(
        got == (0..50u64).map(|x| x * x).collect::<Vec<_>>(),
        "attached results differ"
    );
    Ok(())
}

/// A client leaves with most tasks unfinished; attaching gets every result: backends whose
/// tasks stop with the client run the unfinished ones again, the others follow their tasks,
/// which kept running.
async fn attach_resumes_unfinished_tasks(ctx: Ctx) -> CaseResult {
    let stdout = run_child(&ctx, "die-midway").await?;
    let id = job_id_from(&stdout)?;
    let job = Job::<u64>::attach(&ctx.session, &id).await?;
    let at_attach = job.summary().finished;
    check!(
        at_attach < 12,
        "every task had finished before the attach: the case proved nothing"
    );
    let got = job.collect().await?;
    check!(
        got == (0..12u64).collect::<Vec<_>>(),
        "resumed results {got:?}"
    );
    // Every task has exactly one stored outcome now; a second attach resubmits nothing.
    let again = Job::<u64>::attach(&ctx.session, &id).await?;
    check!(
        again.summary().finished == 12,
        "second attach: {:?}",
        again.summary()
    );
    Ok(())
}

/// An attach while the submitting client still runs the job: where tasks stop with their
/// client (they would be run again) it is refused; where they keep running it follows them.
async fn attach_while_the_runner_lives_never_runs_twice(ctx: Ctx) -> CaseResult {
    let rw = &ctx.session;
    let options = TaskOptions::new().concurrency(1);
    let job = rw
        .map_with(sleep_echo, (0..4u64).map(|i| (300, i)), options)
        .await?;
    let second = Job::<u64>::attach(rw, job.id()).await;
    if rw.backend().capabilities().survives_client {
        let got = second?.collect().await?;
        check!(got == (0..4u64).collect::<Vec<_>>(), "followed: {got:?}");
    } else {
        match second {
            Err(e) if e.kind() == ErrorKind::Conflict => {
                check!(e.to_string().contains("another client"), "unclear: {e}");
            }
            Err(e) => return Err(format!("refused, but not as a conflict: {e}").into()),
            Ok(_) => return Err("a second client attached while the first ran the job".into()),
        }
    }
    let id = job.id().to_string();
    let got = job.collect().await?;
    check!(got == (0..4u64).collect::<Vec<_>>(), "results {got:?}");
    // Once the runner is done, an attach finds everything finished.
    let after = Job::<u64>::attach(rw, &id).await?;
    check!(
        after.summary().finished == 4,
        "after: {:?}",
        after.summary()
    );
    Ok(())
}

/// A client killed with SIGKILL leaves no worker behind where tasks stop with their client
/// (the local backend); on a backend whose tasks outlive the client there is nothing to check.
async fn workers_die_with_a_killed_client(ctx: Ctx) -> CaseResult {
    if ctx.session.backend().capabilities().survives_client {
        return Ok(());
    }
    let dir = tempfile_dir()?;
    let mut child = child_command(&ctx, &format!("hang:{}", dir.display()))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let started = Instant::now();
    let pids = loop {
        let pids: Vec<u32> = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        if pids.len() == 2 {
            break pids;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("the tasks did not start: pids {pids:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.start_kill()?; // SIGKILL: no handler runs
    child.wait().await?;
    let killed = Instant::now();
    while pids.iter().any(|&pid| alive(pid)) {
        if killed.elapsed() > Duration::from_secs(10) {
            let left: Vec<_> = pids.iter().filter(|&&p| alive(p)).collect();
            return Err(format!("workers {left:?} outlived their killed client").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Whether a process runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "redwood-kill-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn attach_unknown_job_is_not_found(ctx: Ctx) -> CaseResult {
    let err = Job::<u64>::attach(&ctx.session, "no-such-job")
        .await
        .err()
        .ok_or("attached to nothing")?;
    check!(err.kind() == ErrorKind::NotFound, "kind {:?}", err.kind());
    check!(err.to_string().contains("no-such-job"), "message {err}");
    Ok(())
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

async fn stats_count_everything(ctx: Ctx) -> CaseResult {
    let job = ctx.session.map(fails_on_odd, 0..10u32).await?;
    job.wait(WaitFor::All).await?;
    let s = job.stats();
    check!(
        s.total == 10 && s.succeeded == 5 && s.failed == 5 && s.pending == 0,
        "{s:?}"
    );
    check!(s.median_task_time.is_some(), "no task times: {s:?}");
    let events = ctx.session.storage().layout().events(job.id());
    let stored = ctx.session.storage().get(&events).await?;
    check!(!stored.is_empty(), "events record is empty");
    Ok(())
}

fn redwood_core_encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, crate::CaseError> {
    Ok(redwood::codec::encode(v)?)
}

async fn call_records_are_stored(ctx: Ctx) -> CaseResult {
    // A call reports its value first and stores its record right after: it must arrive.
    let storage = ctx.session.storage();
    let jobs = storage.layout().jobs();
    let value = 0xC0FFEEu64;
    check!(
        ctx.session.call(square, value).await? == value * value,
        "value"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = storage.list(&jobs).await?;
        for key in keys.iter().filter(|k| k.as_ref().ends_with("job.json")) {
            let manifest = storage.get(key).await?;
            let text = String::from_utf8_lossy(&manifest);
            if !text.contains("functions::square") || !text.contains("\"task_count\": 1") {
                continue;
            }
            let job_prefix = key.as_ref().trim_end_matches("/job.json");
            let has = |what: &str| {
                keys.iter()
                    .any(|k| k.as_ref().starts_with(&format!("{job_prefix}/{what}")))
            };
            // Packed result segments (local) or one result per task (the layout's default).
            if has("input") && (has("results/") || has("tasks/")) {
                let id = job_prefix.rsplit('/').next().unwrap_or_default();
                let input = storage.get(&storage.layout().input(id)).await?;
                let args = redwood_core_encode(&(value,))?;
                if input.windows(args.len()).any(|w| w == args.as_slice()) {
                    return Ok(());
                }
            }
        }
        check!(
            Instant::now() < deadline,
            "the call's record never reached storage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
