//! Calls and maps of every shape, every way to read results, waiting, stats, and the record a call stores.

use crate::functions::*;
use crate::{Case, CaseFuture, CaseResult, Ctx, Needs, check};
use futures::StreamExt;
use redwood::{ErrorKind, TaskOptions, WaitFor};
use std::collections::HashSet;
use std::time::{Duration, Instant};

use redwood::raw::call_record::read_call_record;
use redwood::raw::envelope::Outcome;

use super::redwood_core_encode;

/// The cases of this area, in a stable order.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(call_every_arity),
        case!(map_of_many_types),
        case!(large_vectors_travel),
        case!(empty_map),
        case!(map_ten_thousand),
        case!(collect_keeps_task_order),
        case!(results_stream_in_completion_order),
        case!(reduce_streams),
        case!(wait_variants),
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

/// Cases about the order results come in run their tasks side by side in one region: two
/// regions' own latencies (a job's first tasks wait for its preparation on each node) are not
/// what they test (the region cases test placement), and neither is packing (tasks packed
/// into one Batch task run one after another by design, so a slow one holds back the quick
/// ones behind it; `pack(1)` gives each its own).
fn one_region(ctx: &Ctx) -> TaskOptions {
    match ctx.session.regions() {
        [first, _, ..] => TaskOptions::new().region(first.name()).pack(1),
        _ => TaskOptions::new().pack(1),
    }
}

async fn results_stream_in_completion_order(ctx: Ctx) -> CaseResult {
    // Task 0 sleeps long; every other task is quick and must come out before it (with a
    // margin for a loaded machine: a quick task on a cloud set-up may wait for a slot, and
    // under the whole suite on 2 cores two quick Batch tasks once took more than 4 s). On the
    // local pool, shared by the cases running at once, a longer sleep would hold a worker
    // other cases' quick tasks wait for.
    let slow = if ctx.session.backend().name() == "local" {
        4000u64
    } else {
        8000
    };
    let mut items = vec![(slow, 0u64)];
    items.extend((1..8).map(|i| (0, i)));
    let job = ctx
        .session
        .map_with(sleep_echo, items, one_region(&ctx))
        .await?;
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

    // Results stream: the fast task's arrives well before the slow one's. (Measured as the gap
    // between the two, which holds on a slow machine too; results held back to the end of the
    // job would arrive together.)
    let job = ctx
        .session
        .map_with(
            sleep_echo,
            vec![(10_000u64, 1u64), (0, 2)],
            one_region(&ctx),
        )
        .await?;
    let mut stream = Box::pin(job.results());
    let first = stream.next().await;
    let first_at = Instant::now();
    check!(matches!(first, Some((1, Ok(2)))), "first was {first:?}");
    let second = stream.next().await;
    let gap = first_at.elapsed();
    check!(matches!(second, Some((0, Ok(1)))), "second was {second:?}");
    check!(
        gap > Duration::from_millis(3000),
        "the results came {gap:?} apart: held back, not streamed"
    );
    Ok(())
}

async fn wait_variants(ctx: Ctx) -> CaseResult {
    const LONG: Duration = Duration::from_millis(3000);
    let mut items = vec![(LONG.as_millis() as u64, 0u64)];
    items.extend((1..10).map(|i| (0, i)));
    let submitted = Instant::now();
    let job = ctx
        .session
        .map_with(sleep_echo, items, one_region(&ctx))
        .await?;
    let any = job.wait(WaitFor::Any).await?;
    check!(any.finished >= 1, "any: {any:?}");
    let most = job.wait(WaitFor::Fraction(0.9)).await?;
    check!(most.finished >= 9, "fraction: {most:?}");
    let err = job
        .wait_timeout(WaitFor::All, Duration::from_millis(100))
        .await;
    // On a loaded machine the long task may be done by now; then the wait owes no timeout.
    let long_may_be_done = submitted.elapsed() >= LONG;
    check!(
        matches!(&err, Err(e) if e.kind() == ErrorKind::Timeout)
            || (long_may_be_done && matches!(&err, Ok(s) if s.finished == 10)),
        "wait_timeout gave {err:?} {:?} after submitting",
        submitted.elapsed()
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

async fn stats_count_everything(ctx: Ctx) -> CaseResult {
    let job = ctx.session.map(fails_on_odd, 0..10u32).await?;
    job.wait(WaitFor::All).await?;
    let s = job.stats();
    check!(
        s.total == 10 && s.succeeded == 5 && s.failed == 5 && s.pending == 0,
        "{s:?}"
    );
    check!(s.median_task_time.is_some(), "no task times: {s:?}");
    // One record per attempt, appended while the job ran; each task's last one is final.
    let records = redwood::raw::events::read_events(ctx.session.storage(), job.id()).await?;
    let mut finals: Vec<u64> = records
        .iter()
        .filter(|r| !r.retried)
        .map(|r| r.task)
        .collect();
    finals.sort_unstable();
    check!(
        finals == (0..10).collect::<Vec<_>>(),
        "final records: {records:?}"
    );
    check!(
        records
            .iter()
            .all(|r| r.executor.as_deref() == Some(ctx.session.backend().name())),
        "executor names: {records:?}"
    );
    Ok(())
}

async fn call_records_are_stored(ctx: Ctx) -> CaseResult {
    // A call reports its value first and stores its record (one object: manifest, input and
    // outcome) right after: it must arrive, and attaching to it reads the value back.
    let storage = ctx.session.storage();
    let jobs = storage.layout().jobs();
    let value = 0xC0FFEEu64;
    check!(
        ctx.session.call(square, value).await? == value * value,
        "value"
    );
    let args = redwood_core_encode(&(value,))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = storage.list(&jobs).await?;
        for key in keys.iter().filter(|k| k.as_ref().ends_with("/call")) {
            let record = read_call_record(&storage.get(key).await?)?;
            if !record.manifest.spec.function.ends_with("functions::square")
                || !record
                    .input
                    .windows(args.len())
                    .any(|w| w == args.as_slice())
            {
                continue;
            }
            let id = record.manifest.spec.id.clone();
            check!(
                record.outcome == Outcome::Ok(redwood_core_encode(&(value * value))?),
                "stored outcome {:?}",
                record.outcome
            );
            let job = redwood::Job::<u64>::attach(&ctx.session, &id).await?;
            check!(
                job.collect().await? == vec![value * value],
                "attached value"
            );
            return Ok(());
        }
        check!(
            Instant::now() < deadline,
            "the call's record never reached storage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
