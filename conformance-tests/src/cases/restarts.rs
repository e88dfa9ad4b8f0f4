//! What the job driver keeps across clients: attempt numbers that continue after a restart,
//! the events of a client killed mid-job, and attaches in one process that leave each other
//! alone.

use std::time::{Duration, Instant};

use crate::functions::*;
use crate::{Case, CaseFuture, CaseResult, Ctx, Needs, check};
use redwood::raw::events::{TaskRecord, read_events};
use redwood::{ErrorKind, Job, Session, TaskOptions, WaitFor};
use tokio::io::AsyncBufReadExt;

use super::attach::{child_command, job_id_from, run_child};

/// The cases of this area, in a stable order.
pub(super) fn cases() -> Vec<Case> {
    const SHARED_RETRIES: Needs = Needs {
        shared_store: true,
        retries: true,
        ..Needs::NOTHING
    };
    vec![
        case!(attempt_numbers_continue_after_a_restart, SHARED_RETRIES),
        case!(
            a_killed_client_leaves_the_events_of_finished_tasks,
            super::SHARED
        ),
        case!(a_second_attach_does_not_disturb_the_first, super::SHARED),
    ]
}

/// The child roles of this area; `None` for a role it does not know.
pub(super) async fn child_role(rw: &Session, role: &str) -> Option<CaseResult> {
    Some(match role {
        "retry-later" => retry_later(rw).await,
        "report-then-hang" => report_then_hang(rw).await,
        _ => return None,
    })
}

/// Maps four tasks whose first attempt fails, with retries due in a day; leaves once the
/// failed attempts are recorded.
async fn retry_later(rw: &Session) -> CaseResult {
    let options = TaskOptions::new()
        .retries(3)
        .backoff(Duration::from_secs(24 * 3600));
    let job = rw.map_with(flaky, [2u32; 4], options).await?;
    println!("job {}", job.id());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let records = read_events(rw.storage(), job.id()).await?;
        if records.iter().filter(|r| r.retried).count() == 4 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the first attempts were not recorded: {records:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    std::process::exit(0);
}

/// Maps four quick tasks and four that take a minute; prints each finished task as the
/// program sees it, then waits to be killed.
async fn report_then_hang(rw: &Session) -> CaseResult {
    use std::io::Write;
    let args = (0..8u64).map(|i| (if i < 4 { 0 } else { 60_000 }, i));
    let job = rw.map(sleep_echo, args).await?;
    println!("job {}", job.id());
    let mut results = job.results();
    while let Some((task, result)) = futures::StreamExt::next(&mut results).await {
        result?;
        println!("done {task}");
        std::io::stdout().flush()?;
    }
    Err("the slow tasks finished before the client was killed".into())
}

/// A task whose first attempt failed in a client that then left is retried by the client that
/// attaches, as attempt 2 at once (not attempt 1 again, and not after the old backoff).
async fn attempt_numbers_continue_after_a_restart(ctx: Ctx) -> CaseResult {
    let stdout = run_child(&ctx, "retry-later").await?;
    let id = job_id_from(&stdout)?;
    let job = Job::<u32>::attach(&ctx.session, &id).await?;
    let got = tokio::time::timeout(Duration::from_secs(120), job.collect())
        .await
        .map_err(|_| "the attach waited for the old backoff")??;
    check!(got == vec![2; 4], "succeeded on attempts {got:?}");
    let records = read_events(ctx.session.storage(), &id).await?;
    for task in 0..4 {
        let mut attempts: Vec<(u32, bool)> = records
            .iter()
            .filter(|r| r.task == task)
            .map(|r| (r.attempt, r.retried))
            .collect();
        attempts.sort_unstable();
        check!(
            attempts == [(1, true), (2, false)],
            "task {task}: attempts (number, retried) {attempts:?}"
        );
    }
    Ok(())
}

/// Every task the program saw finish before its client was killed (SIGKILL: no handler
/// runs) has its record in the job's events.
async fn a_killed_client_leaves_the_events_of_finished_tasks(ctx: Ctx) -> CaseResult {
    let mut child = child_command(&ctx, "report-then-hang")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut id = None;
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(job) = line.strip_prefix("job ") {
                id = Some(job.trim().to_string());
            } else if let Some(task) = line.strip_prefix("done ") {
                seen.push(task.trim().parse::<u64>()?);
                if seen.len() == 4 {
                    return Ok(());
                }
            }
        }
        Err::<(), crate::CaseError>("the child ended early".into())
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .map_err(|_| "the quick tasks did not finish")??;
    child.start_kill()?;
    child.wait().await?;
    let id = id.ok_or("no job id")?;
    let records = read_events(ctx.session.storage(), &id).await?;
    let recorded = |task: u64| {
        records
            .iter()
            .any(|r: &TaskRecord| r.task == task && r.ok && !r.retried)
    };
    let missing: Vec<u64> = seen.iter().copied().filter(|&t| !recorded(t)).collect();
    check!(
        missing.is_empty(),
        "tasks {missing:?} finished before the kill but have no record: {records:?}"
    );
    // The slow tasks: cancelled (where they outlive the client) or never run again.
    let job = Job::<u64>::attach(&ctx.session, &id).await?;
    job.cancel().await?;
    Ok(())
}

/// Two handles on one running job in one process: dropping or finishing one leaves the
/// other's tasks running. Where tasks stop with their client, the second attach is refused
/// and the first is unharmed.
async fn a_second_attach_does_not_disturb_the_first(ctx: Ctx) -> CaseResult {
    let rw = &ctx.session;
    let job = rw
        .map(sleep_echo, (0..4u64).map(|i| (400 + 100 * i, i)))
        .await?;
    let second = Job::<u64>::attach(rw, job.id()).await;
    let third = Job::<u64>::attach(rw, job.id()).await;
    if rw.backend().capabilities().survives_client {
        let (second, third) = (second?, third?);
        // A handle dropped before its tasks finish stops nothing.
        drop(second);
        let got = third.collect().await?;
        check!(got == (0..4u64).collect::<Vec<_>>(), "third: {got:?}");
    } else {
        for attach in [second, third] {
            match attach {
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                Err(e) => return Err(format!("refused, but not as a conflict: {e}").into()),
                Ok(_) => return Err("a second runner attached in the same process".into()),
            }
        }
    }
    job.wait(WaitFor::All).await?;
    let got = job.collect().await?;
    check!(got == (0..4u64).collect::<Vec<_>>(), "first: {got:?}");
    let s = job.stats();
    check!(s.failed == 0 && s.succeeded == 4, "first: {s:?}");
    Ok(())
}
