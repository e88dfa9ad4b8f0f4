//! Jobs that outlive their client: attaching after a restart, resuming unfinished tasks, never running a task twice, workers that die with their client. A second client is this test binary run as a child process.

use crate::functions::*;
use crate::{Case, CaseFuture, CaseResult, Ctx, Needs, check};
use redwood::{ErrorKind, Job, Session, TaskOptions, WaitFor};
use std::time::{Duration, Instant};

use super::SHARED;

/// The cases of this area, in a stable order.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(attach_after_client_restart, SHARED),
        case!(attach_resumes_unfinished_tasks, SHARED),
        case!(attach_while_the_runner_lives_never_runs_twice),
        case!(workers_die_with_a_killed_client, SHARED),
        case!(attach_unknown_job_is_not_found),
    ]
}

/// This test binary as a second client process with `role`, on the same store and backend.
pub(super) fn child_command(ctx: &Ctx, role: &str) -> tokio::process::Command {
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
pub(super) async fn run_child(ctx: &Ctx, role: &str) -> Result<String, crate::CaseError> {
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

pub(super) fn job_id_from(stdout: &str) -> Result<String, crate::CaseError> {
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
        other => {
            return match super::restarts::child_role(&rw, other).await {
                Some(result) => result,
                None => Err(format!("unknown child role {other}").into()),
            };
        }
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
