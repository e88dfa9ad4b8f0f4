//! Several regions: placement, pinning, data that follows the tasks, and regions that go down
//! (mid-job, at the start, all of them, under an attach). Run on the two-region set-ups; the
//! outage cases run alone in theirs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::functions::*;
use crate::{Case, CaseFuture, CaseResult, Ctx, Needs, Outage, check};
use redwood::{ErrorKind, Job, JobStats, TaskErrorKind, TaskOptions, WaitFor};

const REGIONS: Needs = Needs {
    regions: true,
    ..Needs::NOTHING
};
const OUTAGES: Needs = Needs {
    regions: true,
    outages: true,
    ..Needs::NOTHING
};
const COMPUTE_DOWN: Needs = Needs {
    outage_compute: true,
    ..OUTAGES
};
const STORAGE_DOWN: Needs = Needs {
    outage_storage: true,
    ..OUTAGES
};
const BOTH_DOWN: Needs = Needs {
    outage_compute: true,
    outage_storage: true,
    ..OUTAGES
};
const OUTAGES_SHARED: Needs = Needs {
    regions: true,
    outages: true,
    shared_store: true,
    ..Needs::NOTHING
};

/// The cases of this area, in a stable order.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(regions_both_get_tasks_when_both_have_room, REGIONS),
        case!(regions_a_pinned_job_runs_where_pinned, REGIONS),
        case!(regions_a_broadcast_is_copied_once_per_region, REGIONS),
        case!(
            regions_a_chained_job_reads_results_in_the_other_region,
            REGIONS
        ),
        case!(regions_compute_down_mid_job_loses_nothing, COMPUTE_DOWN),
        case!(regions_storage_down_mid_job_loses_nothing, STORAGE_DOWN),
        case!(regions_both_down_mid_job_loses_nothing, BOTH_DOWN),
        case!(regions_down_at_the_start_is_skipped, OUTAGES),
        case!(regions_all_down_is_a_clear_error, OUTAGES),
        case!(regions_attach_while_one_is_down, OUTAGES_SHARED),
    ]
}

/// Finished tasks per region.
fn per_region(stats: &JobStats) -> BTreeMap<String, u64> {
    stats
        .regions
        .iter()
        .map(|r| (r.name.clone(), r.succeeded + r.failed))
        .collect()
}

async fn regions_both_get_tasks_when_both_have_room(ctx: Ctx) -> CaseResult {
    let job = ctx
        .session
        .map(sleep_echo, (0..300u64).map(|i| (30, i)))
        .await?;
    let got = job.collect().await?;
    check!(got == (0..300).collect::<Vec<_>>(), "results {got:?}");
    let counts = per_region(&job.stats());
    check!(
        counts.len() == 2 && counts.values().all(|&n| n > 0),
        "tasks per region: {counts:?}"
    );
    check!(counts.values().sum::<u64>() == 300, "{counts:?}");
    Ok(())
}

async fn regions_a_pinned_job_runs_where_pinned(ctx: Ctx) -> CaseResult {
    let rw = &ctx.session;
    for region in rw.regions() {
        let options = TaskOptions::new().region(region.name());
        let job = rw.map_with(square, 0..30u64, options).await?;
        let got = job.collect().await?;
        check!(got == (0..30).map(|x| x * x).collect::<Vec<_>>(), "{got:?}");
        let counts = per_region(&job.stats());
        check!(
            counts.len() == 1 && counts.get(region.name()) == Some(&30),
            "pinned to {}: {counts:?}",
            region.name()
        );
    }
    let err = rw
        .map_with(square, 0..3u64, TaskOptions::new().region("atlantis"))
        .await
        .expect_err("an unknown region was accepted");
    check!(
        err.kind() == ErrorKind::InvalidInput && err.to_string().contains("atlantis"),
        "unclear error: {err}"
    );
    Ok(())
}

async fn regions_a_broadcast_is_copied_once_per_region(ctx: Ctx) -> CaseResult {
    let rw = &ctx.session;
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(3, |d| d.subsec_nanos() as u64);
    let table: Vec<u64> = (0..50_000).map(|i| i ^ salt).collect();
    let want: u64 = table.iter().sum();
    let shared = rw.broadcast(&table).await?;
    let regions: Vec<String> = rw.regions().iter().map(|r| r.name().to_string()).collect();
    let mut copies = 0;
    // Read in every region, twice: each store that lacks it gets one copy, the first time.
    for round in 0..2 {
        for region in &regions {
            let options = TaskOptions::new().region(region);
            let job = rw
                .map_with(bcast_sum, (0..8).map(|i| (shared.clone(), i)), options)
                .await?;
            let got = job.collect().await?;
            check!(
                got.iter()
                    .enumerate()
                    .all(|(i, &(n, s))| n == 50_000 && s == want + i as u64),
                "{region}: {got:?}"
            );
            let copied: u64 = job.stats().regions.iter().map(|r| r.copied_objects).sum();
            copies += copied;
            if round == 1 {
                check!(copied == 0, "round 2 in {region} copied {copied} objects");
            }
        }
    }
    // The home store holds it; every other store got it once.
    let other_stores = rw
        .regions()
        .iter()
        .filter(|r| r.storage().identity() != rw.storage().identity())
        .count() as u64;
    check!(
        copies == other_stores,
        "{copies} copies for {other_stores} other store(s)"
    );
    for region in rw.regions() {
        let key = object_store::path::Path::from(shared.key());
        check!(
            region.storage().exists(&key).await?,
            "region {} lacks the value",
            region.name()
        );
    }
    Ok(())
}

async fn regions_a_chained_job_reads_results_in_the_other_region(ctx: Ctx) -> CaseResult {
    let rw = &ctx.session;
    let names: Vec<String> = rw.regions().iter().map(|r| r.name().to_string()).collect();
    let (first, second) = (&names[0], &names[names.len() - 1]);
    let job = rw
        .map_with(square, 0..40u64, TaskOptions::new().region(first))
        .await?;
    let refs = job.refs().await?;
    let next = rw
        .map_with(add_one, refs, TaskOptions::new().region(second))
        .await?;
    let got = next.collect().await?;
    check!(
        got == (0..40).map(|x| x * x + 1).collect::<Vec<_>>(),
        "{got:?}"
    );
    let counts = per_region(&next.stats());
    check!(counts.get(second) == Some(&40), "{counts:?}");
    let crossed =
        rw.regions()[0].storage().identity() != rw.regions()[names.len() - 1].storage().identity();
    let copied: u64 = next.stats().regions.iter().map(|r| r.copied_objects).sum();
    check!(
        !crossed || copied > 0,
        "results read in another store were not copied"
    );
    Ok(())
}

/// A job of `n` tasks of 150 ms on both regions; once a fifth finished, `outage` takes the
/// set-up's region down. Every result comes back once and right, in bounded time.
async fn down_mid_job(ctx: Ctx, outage: Outage) -> CaseResult {
    let Some(switch) = ctx.outages.clone() else {
        return Err("no outage switch".into());
    };
    let n = 80u64;
    let started = Instant::now();
    let job = ctx
        .session
        .map_with(
            sleep_echo,
            (0..n).map(|i| (150, i)),
            TaskOptions::new().retries(1),
        )
        .await?;
    job.wait(WaitFor::Fraction(0.2)).await?;
    (switch.switch)(&switch.region, outage)?;
    let result = tokio::time::timeout(Duration::from_secs(180), job.collect()).await;
    (switch.switch)(&switch.region, Outage::Up)?;
    let got = result.map_err(|_| format!("not done 180 s after a {outage:?} outage"))??;
    check!(got == (0..n).collect::<Vec<_>>(), "results {got:?}");
    let stats = job.stats();
    check!(
        stats.succeeded == n && stats.failed == 0,
        "{} succeeded, {} failed",
        stats.succeeded,
        stats.failed
    );
    eprintln!(
        "{outage:?} outage: done in {:.1?}, per region {:?}",
        started.elapsed(),
        stats.regions
    );
    Ok(())
}

async fn regions_compute_down_mid_job_loses_nothing(ctx: Ctx) -> CaseResult {
    down_mid_job(ctx, Outage::Compute).await
}

async fn regions_storage_down_mid_job_loses_nothing(ctx: Ctx) -> CaseResult {
    down_mid_job(ctx, Outage::Storage).await
}

async fn regions_both_down_mid_job_loses_nothing(ctx: Ctx) -> CaseResult {
    down_mid_job(ctx, Outage::Both).await
}

/// The outage a set-up can make of its region (compute when it can).
fn an_outage(ctx: &Ctx) -> Result<(crate::RegionSwitch, Outage), crate::CaseError> {
    let switch = ctx.outages.clone().ok_or("no outage switch")?;
    let outage = match (switch.compute, switch.storage) {
        (true, true) => Outage::Both,
        (true, false) => Outage::Compute,
        _ => Outage::Storage,
    };
    Ok((switch, outage))
}

async fn regions_down_at_the_start_is_skipped(ctx: Ctx) -> CaseResult {
    let (switch, outage) = an_outage(&ctx)?;
    (switch.switch)(&switch.region, outage)?;
    let run = async {
        let job = ctx.session.map(square, 0..40u64).await?;
        let got = tokio::time::timeout(Duration::from_secs(120), job.collect())
            .await
            .map_err(|_| "not done 120 s after the start".to_string())??;
        Ok::<_, crate::CaseError>((got, job.stats()))
    };
    let result = run.await;
    (switch.switch)(&switch.region, Outage::Up)?;
    let (got, stats) = result?;
    check!(got == (0..40).map(|x| x * x).collect::<Vec<_>>(), "{got:?}");
    let counts = per_region(&stats);
    check!(
        counts.get(&switch.region).copied().unwrap_or(0) == 0 || counts.values().sum::<u64>() == 40,
        "{counts:?}"
    );
    Ok(())
}

async fn regions_all_down_is_a_clear_error(ctx: Ctx) -> CaseResult {
    let (switch, outage) = an_outage(&ctx)?;
    let rw = &ctx.session;
    // Pinned to a region that is down: lost, naming it. The tasks read a value the region's
    // store lacks, so a region whose store is down cannot run them either.
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(5, |d| d.subsec_nanos() as u64);
    let shared = rw.broadcast(&vec![salt; 100]).await?;
    (switch.switch)(&switch.region, outage)?;
    let pinned = async {
        let job = rw
            .map_with(
                bcast_sum,
                (0..4).map(|i| (shared.clone(), i)),
                TaskOptions::new().region(&switch.region),
            )
            .await;
        match job {
            Err(e) => Ok::<_, crate::CaseError>(e.to_string()),
            Ok(job) => {
                let outcomes =
                    tokio::time::timeout(Duration::from_secs(120), job.collect_outcomes())
                        .await
                        .map_err(|_| "a job pinned to a down region hung".to_string())?;
                let first = outcomes.into_iter().find_map(Result::err);
                Ok(first.map(|e| e.to_string()).unwrap_or_default())
            }
        }
    };
    let pinned = pinned.await;
    if !switch.all_compute {
        (switch.switch)(&switch.region, Outage::Up)?;
    }
    let text = pinned?;
    check!(
        text.contains(&switch.region) && text.contains("down"),
        "unclear error for a pinned job: {text}"
    );
    if !switch.all_compute {
        return Ok(());
    }
    // Every region down: lost, naming each, no hang.
    let names: Vec<String> = rw.regions().iter().map(|r| r.name().to_string()).collect();
    for name in &names {
        (switch.switch)(name, Outage::Compute)?;
    }
    let all = async {
        match rw.map(square, 0..4u64).await {
            Err(e) => Ok::<_, crate::CaseError>((e.to_string(), None)),
            Ok(job) => {
                let outcomes =
                    tokio::time::timeout(Duration::from_secs(120), job.collect_outcomes())
                        .await
                        .map_err(|_| "a job with every region down hung".to_string())?;
                let first = outcomes.into_iter().find_map(Result::err);
                let kind = first.as_ref().and_then(|e| e.task_error().map(|t| t.kind));
                Ok((first.map(|e| e.to_string()).unwrap_or_default(), kind))
            }
        }
    };
    let all = all.await;
    for name in &names {
        (switch.switch)(name, Outage::Up)?;
    }
    let (text, kind) = all?;
    check!(
        names.iter().all(|n| text.contains(&format!("`{n}`"))),
        "the error does not name every region: {text}"
    );
    check!(
        kind.is_none() || kind == Some(TaskErrorKind::Lost),
        "{kind:?}: {text}"
    );
    Ok(())
}

async fn regions_attach_while_one_is_down(ctx: Ctx) -> CaseResult {
    let stdout = super::attach::run_child(&ctx, "die-midway").await?;
    let id = super::attach::job_id_from(&stdout)?;
    let (switch, outage) = an_outage(&ctx)?;
    (switch.switch)(&switch.region, outage)?;
    let attached = async {
        let job: Job<u64> = Job::attach(&ctx.session, &id).await?;
        let got = tokio::time::timeout(Duration::from_secs(180), job.collect())
            .await
            .map_err(|_| "an attached job did not finish with a region down".to_string())??;
        Ok::<_, crate::CaseError>(got)
    };
    let got = attached.await;
    (switch.switch)(&switch.region, Outage::Up)?;
    let got = got?;
    check!(got == (0..12).collect::<Vec<_>>(), "{got:?}");
    Ok(())
}
