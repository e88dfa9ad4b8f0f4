//! The azure-batch backend under faults, against the Batch emulator and a real Azurite: a node
//! lost mid-job, a storm of 503s and 429s on the Batch API, a wrong account key, a pool
//! whose nodes cannot be allocated, a reused pool smaller than configured; and MPI tasks.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use redwood::azure::PoolConfig;
use redwood::azure::{AzureBatchBackendBuilder, BatchClient, BatchClientBuilder};
use redwood::{Broadcast, Session, TaskOptions};
use redwood_conformance::functions::{mpi_world, square, wait_for_gate};
use redwood_conformance::watchdog::{Watchdog, message_of};
use redwood_emulator::azurite::Azurite;
use redwood_emulator::batch::{BatchAccount, BatchEmulator};
use serde_json::json;

const ACCOUNT: &str = "faults";
const KEY: &str = "ZmF1bHRzLWtleS1mb3ItdGVzdHMtb25seQ==";
/// The Entra ID token the emulated account accepts, which the stand-in `az` prints.
const TOKEN: &str = "faults-entra-id-token";

type TrialResult = Result<(), Failed>;

/// What every trial gets: the emulator's URL and a storage connection string.
#[derive(Clone)]
struct Env {
    url: String,
    storage: String,
}

impl Env {
    fn session(&self, pool: &str, key: &str, nodes: u32) -> Result<Session, Failed> {
        let pool = PoolConfig {
            id: pool.into(),
            dedicated: nodes,
            task_slots_per_node: 4,
            ..Default::default()
        };
        self.session_on(pool, key)
    }

    fn session_on(&self, pool: PoolConfig, key: &str) -> Result<Session, Failed> {
        let pool_id = pool.id.clone();
        let backend = AzureBatchBackendBuilder::new(&self.url, ACCOUNT, key)
            .pool(pool)
            .poll_interval(Duration::from_millis(100))
            .allocation_timeout(Duration::from_secs(30))
            .progress(false)
            .build()
            .map_err(|e| Failed::from(e.to_string()))?;
        Session::builder()
            .backend(Arc::new(backend))
            // A root per pool: trials run at once, and one's cleanup must not delete another's.
            .storage_url(format!(
                "az://batch-faults-{}/{pool_id}",
                std::process::id()
            ))
            .storage_option("connection_string", &self.storage)
            .progress(false)
            .build()
            .map_err(|e| Failed::from(e.to_string()))
    }

    fn session_with_backend(
        &self,
        backend: Arc<dyn redwood::raw::executor::Executor>,
        root: &str,
    ) -> Result<Session, Failed> {
        Session::builder()
            .backend(backend)
            .storage_url(format!("az://batch-faults-{}/{root}", std::process::id()))
            .storage_option("connection_string", &self.storage)
            .progress(false)
            .build()
            .map_err(|e| Failed::from(e.to_string()))
    }

    fn client(&self) -> Result<BatchClient, Failed> {
        BatchClientBuilder::new(&self.url, ACCOUNT, KEY)
            .build()
            .map_err(|e| Failed::from(e.to_string()))
    }

    async fn admin(&self, path: &str, body: serde_json::Value) -> Result<(), Failed> {
        self.client()?
            .post("emulator_admin", &format!("/_emulator/{path}"), &body)
            .await
            .map(|_| ())
            .map_err(|e| Failed::from(format!("admin {path}: {e}")))
    }
}

fn fail(e: impl std::fmt::Display) -> Failed {
    Failed::from(e.to_string())
}

/// A node is lost while tasks run on it: they are requeued by Batch (not retried by Redwood),
/// and every result arrives once and right.
async fn node_loss_loses_and_duplicates_nothing(env: Env) -> TrialResult {
    let rw = env.session("lossy", KEY, 2)?;
    let n = 24u64;
    // The tasks wait for a gate the test opens after the loss, so the lost node surely has
    // tasks running (on a loaded machine, tasks of 400 ms could all be over by then).
    let gates = tempfile::tempdir().map_err(fail)?;
    let gate = gates.path().join("open");
    let gate_arg = gate.display().to_string();
    let job = rw
        .map(wait_for_gate, (0..n).map(|i| (gate_arg.clone(), i)))
        .await
        .map_err(fail)?;
    let client = env.client()?;
    let started = Instant::now();
    let node = loop {
        let running = client
            .list(
                "list_tasks",
                &format!("/jobs/{}/tasks", job.id()),
                &[
                    ("$filter", "state eq 'running'"),
                    ("$select", "id,nodeInfo"),
                ],
            )
            .await
            .map_err(fail)?;
        if let Some(node) = running
            .iter()
            .find_map(|t| t["nodeInfo"]["nodeId"].as_str())
        {
            break node.to_string();
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err("no task started within a minute".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    env.admin(&format!("pools/lossy/nodes/{node}/remove"), json!({}))
        .await?;
    std::fs::write(&gate, b"").map_err(fail)?;
    let got = job.clone().collect().await.map_err(fail)?;
    if got != (0..n).collect::<Vec<_>>() {
        return Err(format!("results after the node loss: {got:?}").into());
    }
    if job.stats().retries != 0 {
        return Err(format!("{} retries: requeues must not count", job.stats().retries).into());
    }
    let tasks = client
        .list(
            "list_tasks",
            &format!("/jobs/{}/tasks", job.id()),
            &[("$select", "id,executionInfo")],
        )
        .await
        .map_err(fail)?;
    // A Batch task may be a pack of several tasks (`p<first>-<last>`): each of its tasks that
    // had not ended when the node went counts a requeue.
    let requeued: Vec<u64> = tasks
        .iter()
        .filter(|t| t["executionInfo"]["requeueCount"].as_u64().unwrap_or(0) > 0)
        .map(|t| {
            let id = t["id"].as_str().unwrap_or_default();
            let range = id.strip_prefix('p').and_then(|r| {
                let mut parts = r.split('-');
                let first: u64 = parts.next()?.parse().ok()?;
                let last: u64 = parts.next()?.parse().ok()?;
                Some(last - first + 1)
            });
            range.unwrap_or(1)
        })
        .collect();
    if requeued.is_empty() {
        return Err("no task was running on the lost node: the test proved nothing".into());
    }
    let (least, most) = (requeued.len() as u64, requeued.iter().sum::<u64>());
    let counted = job.stats().requeues;
    if counted < least || counted > most {
        return Err(format!(
            "stats say {counted} requeues; Batch requeued {least} Batch tasks holding {most} tasks"
        )
        .into());
    }
    Ok(())
}

/// An MPI task (`TaskOptions::mpi`) is one multi-instance Batch task: every rank runs (through
/// the emulator's `mpirun`), sees its rank, the world size and the host list, and rank 0's
/// value is the result. A failing rank fails the task; a pool that cannot run it is refused.
async fn mpi_task_runs_every_rank(env: Env) -> TrialResult {
    let pool = PoolConfig {
        id: "mpi".into(),
        dedicated: 2,
        inter_node_communication: true,
        ..Default::default()
    };
    let rw = env.session_on(pool, KEY)?;
    let options = TaskOptions::new().mpi(2, 2);
    let got = rw
        .map_with(
            mpi_world,
            [("a".to_string(), None), ("b".to_string(), None)],
            options.clone(),
        )
        .await
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    for world in &got {
        if *world != (0, 4, 2, vec![0, 1, 2, 3]) {
            return Err(format!("rank 0 saw (rank, size, hosts, ranks) = {world:?}").into());
        }
    }
    let err = rw
        .call_with(mpi_world, ("c".to_string(), Some(3)), options.clone())
        .await
        .err()
        .ok_or("a failing rank did not fail the task")?
        .to_string();
    if !err.contains("MPI launcher exited") || !err.contains("rank 3 fails on purpose") {
        return Err(format!("unclear error for a failing rank: {err}").into());
    }
    let err = rw
        .call_with(
            mpi_world,
            ("d".to_string(), None),
            TaskOptions::new().mpi(3, 1),
        )
        .await
        .err()
        .ok_or("3 nodes on a pool of 2 was accepted")?
        .to_string();
    if !err.contains("has 2 nodes") {
        return Err(format!("unclear error for too many nodes: {err}").into());
    }
    let flat = env.session("flat", KEY, 1)?;
    let err = flat
        .call_with(
            mpi_world,
            ("e".to_string(), None),
            TaskOptions::new().mpi(1, 1),
        )
        .await
        .err()
        .ok_or("a pool without inter-node communication was accepted")?
        .to_string();
    if !err.contains("inter_node_communication") {
        return Err(format!("unclear error for a pool without it: {err}").into());
    }
    rw.cleanup().await.map_err(fail)?;
    flat.cleanup().await.map_err(fail)?;
    Ok(())
}

/// Microsoft Entra ID: with `batch_auth = "azure-cli"` (and no key) the backend signs with
/// bearer tokens that azure_identity's Azure CLI credential gets from `az` (here a stand-in
/// script on PATH printing the emulated account's token), asked for once and then reused; a
/// cached token that gets revoked is replaced; a token the account does not accept is a clear
/// error naming the account.
async fn entra_id_tokens_sign_requests(env: Env) -> TrialResult {
    let calls = az_calls()?;
    let config = redwood::config::Config {
        backend: "azure-batch".into(),
        regions: vec![
            redwood::azure::RegionConfig {
                batch_url: Some(env.url.clone()),
                batch_account: Some(ACCOUNT.into()),
                batch_auth: Some("azure-cli".into()),
                pool: PoolConfig {
                    id: "entra".into(),
                    ..Default::default()
                },
                poll_interval: Some("100ms".into()),
                ..Default::default()
            }
            .try_into()
            .map_err(fail)?,
        ],
        ..Default::default()
    };
    let loaded = redwood::config::LoadedConfig::from_config(config);
    let backend = redwood::raw::factory::build_backend(&loaded).map_err(fail)?;
    let rw = env.session_with_backend(backend, "entra")?;
    let got = rw
        .map(square, 0..20u64)
        .await
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    if got != (0..20u64).map(|x| x * x).collect::<Vec<_>>() {
        return Err(format!("wrong results with Entra ID: {got:?}").into());
    }
    let asked = az_calls()? - calls;
    if asked != 1 {
        return Err(format!("`az` was run {asked} times; the token must be reused").into());
    }
    rw.cleanup().await.map_err(fail)?;

    // The token is revoked while cached: the refused request gets a new one and goes through.
    let rotating = Arc::new(Rotating(std::sync::Mutex::new(vec![
        "rotated-token",
        TOKEN,
    ])));
    let backend = AzureBatchBackendBuilder::with_credential(&env.url, ACCOUNT, rotating.clone())
        .pool(PoolConfig {
            id: "entra".into(),
            ..Default::default()
        })
        .poll_interval(Duration::from_millis(100))
        .progress(false)
        .build()
        .map_err(fail)?;
    let rw = env.session_with_backend(Arc::new(backend), "entra-rotated")?;
    rw.call(square, 2).await.map_err(fail)?;
    env.admin("bearer-token", json!({"token": "rotated-token"}))
        .await?;
    if rw.call(square, 3).await.map_err(fail)? != 9 {
        return Err("wrong result after the token rotation".into());
    }
    if !rotating.0.lock().map_err(fail)?.is_empty() {
        return Err("the revoked token was not replaced".into());
    }
    rw.cleanup().await.map_err(fail)?;

    let wrong = Arc::new(FixedToken("not-the-token"));
    let backend = AzureBatchBackendBuilder::with_credential(&env.url, ACCOUNT, wrong)
        .progress(false)
        .build()
        .map_err(fail)?;
    let rw = env.session_with_backend(Arc::new(backend), "entra-wrong")?;
    let err = rw
        .call(square, 2)
        .await
        .err()
        .ok_or("a wrong token was accepted")?
        .to_string();
    if !(err.contains(ACCOUNT) && err.contains("access token is not valid")) {
        return Err(format!("unclear error for a wrong token: {err}").into());
    }
    Ok(())
}

/// A credential that always gives the same token.
#[derive(Debug)]
struct FixedToken(&'static str);

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FixedToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let expires = azure_core::time::OffsetDateTime::now_utc() + Duration::from_secs(3600);
        Ok(azure_core::credentials::AccessToken::new(self.0, expires))
    }
}

/// A credential that hands out the tokens of its list, last first.
#[derive(Debug)]
struct Rotating(std::sync::Mutex<Vec<&'static str>>);

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for Rotating {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let token = self
            .0
            .lock()
            .ok()
            .and_then(|mut l| l.pop())
            .unwrap_or("no-more-tokens");
        let expires = azure_core::time::OffsetDateTime::now_utc() + Duration::from_secs(3600);
        Ok(azure_core::credentials::AccessToken::new(token, expires))
    }
}

/// The folder holding the stand-in `az`, and the file it counts its runs in.
fn az_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("redwood-faults-az-{}", std::process::id()))
}

fn az_calls() -> Result<usize, Failed> {
    let log = az_dir().join("calls");
    Ok(std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count())
}

/// Writes a stand-in for the Azure CLI's `az account get-access-token -o json --scope S`: it
/// checks the scope is Batch's and prints the token in the CLI's JSON shape.
fn install_fake_az() -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = az_dir();
    std::fs::create_dir_all(&dir)?;
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  *"--scope {scope}"*) ;;
  *) echo "ERROR: unexpected arguments: $*" >&2; exit 1 ;;
esac
expires=$(( $(date +%s) + 3600 ))
printf '{{"accessToken":"{TOKEN}","expiresOn":"%s","expires_on":%s,"tokenType":"Bearer"}}
'   "$(date -d @$expires '+%Y-%m-%d %H:%M:%S.000000')" "$expires"
"#,
        log = dir.join("calls").display(),
        scope = redwood::azure::BATCH_SCOPE,
    );
    let path = dir.join("az");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// 503s and 429s on a third of the Batch requests: the job still completes, all correct.
async fn api_storm_is_ridden_out(env: Env) -> TrialResult {
    let rw = env.session("stormy", KEY, 2)?;
    rw.call(square, 1).await.map_err(fail)?; // the pool and the program, before the storm
    let result = async {
        for status in [503, 429] {
            env.admin("faults", json!({"rate": 0.3, "status": status}))
                .await?;
            let got = rw
                .map(square, 0..300u64)
                .await
                .map_err(fail)?
                .collect()
                .await
                .map_err(fail)?;
            if got != (0..300u64).map(|x| x * x).collect::<Vec<_>>() {
                return Err(Failed::from(format!("wrong results under {status}s")));
            }
        }
        Ok(())
    }
    .await;
    env.admin("faults", json!({"rate": 0})).await?;
    result
}

/// A wrong account key is a clear error naming the account, not a hang.
async fn wrong_key_names_the_account(env: Env) -> TrialResult {
    let rw = env.session("redwood", "d3Jvbmcta2V5", 1)?;
    // The executor says it is not healthy, and why, before any job.
    match rw.backend().health().await {
        redwood::raw::executor::Health::Unhealthy(why) if why.contains(ACCOUNT) => {}
        other => return Err(format!("health with a wrong key: {other:?}").into()),
    }
    if env.session("redwood", KEY, 1)?.backend().health().await
        != redwood::raw::executor::Health::Healthy
    {
        return Err("the right key is not healthy".into());
    }
    let started = Instant::now();
    let err = rw
        .call(square, 2)
        .await
        .err()
        .ok_or("a wrong key was accepted")?;
    let text = err.to_string();
    if !(text.contains(ACCOUNT) && text.contains("AuthenticationFailed") && text.contains("key")) {
        return Err(format!("unclear error: {text}").into());
    }
    if started.elapsed() > Duration::from_secs(10) {
        return Err(format!("took {:?}", started.elapsed()).into());
    }
    Ok(())
}

/// A pool whose nodes cannot be allocated is a clear error naming the pool and the reason.
async fn allocation_failure_is_a_clear_error(env: Env) -> TrialResult {
    env.admin(
        "pools/doomed/allocation-failure",
        json!({"code": "AccountCoreQuotaReached", "message": "core quota reached"}),
    )
    .await?;
    let rw = env.session("doomed", KEY, 2)?;
    let started = Instant::now();
    let err = rw
        .map(square, 0..4u64)
        .await
        .err()
        .ok_or("a map on a pool without nodes was accepted")?;
    let text = err.to_string();
    if !(text.contains("doomed") && text.contains("AccountCoreQuotaReached")) {
        return Err(format!("unclear error: {text}").into());
    }
    if started.elapsed() > Duration::from_secs(20) {
        return Err(format!("took {:?}", started.elapsed()).into());
    }
    Ok(())
}

/// Maps over a pool none of whose nodes can run the tasks: the error the user gets, which
/// must come within 45 s (not a hang).
async fn failure_when_no_node_can_run(rw: &Session) -> Result<String, Failed> {
    let started = Instant::now();
    let job = rw.map(square, 0..4u64).await.map_err(fail)?;
    let err = tokio::time::timeout(Duration::from_secs(90), job.collect())
        .await
        .map_err(|_| "the map hung although no node can run its tasks")?
        .err()
        .ok_or("a map succeeded although no node can run its tasks")?;
    let took = started.elapsed();
    if took > Duration::from_secs(45) {
        return Err(format!("noticed only after {took:?}").into());
    }
    let text = err.to_string();
    eprintln!("the error a user sees: {text}");
    Ok(text)
}

/// Storage refuses the pool's nodes (a firewall): the job preparation task cannot download the
/// program on any node, so Batch would run none of the tasks and leave them waiting. Redwood
/// notices and fails them with the reason; once the nodes are let in, the next map works.
async fn preparation_failure_on_every_node_is_a_clear_error(env: Env) -> TrialResult {
    env.admin("pools/firewalled/storage-firewall", json!({"status": 403}))
        .await?;
    let rw = env.session("firewalled", KEY, 2)?;
    let text = failure_when_no_node_can_run(&rw).await?;
    for needed in ["job preparation task", "firewalled", "2 node", "HTTP 403"] {
        if !text.contains(needed) {
            return Err(format!("the error does not say `{needed}`: {text}").into());
        }
    }
    if text.contains("sig=") && !text.contains("sig=REDACTED") {
        return Err(format!("the error shows a SAS signature: {text}").into());
    }
    env.admin("pools/firewalled/storage-firewall", json!({"status": 0}))
        .await?;
    let squares = rw
        .map(square, 0..4u64)
        .await
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    if squares != [0, 1, 4, 9] {
        return Err(format!("wrong results after the firewall opened: {squares:?}").into());
    }
    rw.cleanup().await.map_err(fail)?;
    Ok(())
}

/// The pool's start task fails on every node: Batch would keep the tasks waiting; Redwood
/// fails them with the pool, the exit code and the start task's stderr. A start task that
/// works runs on each node before any task there.
async fn start_task_failure_is_a_clear_error(env: Env) -> TrialResult {
    let broken = PoolConfig {
        id: "broken-start".into(),
        dedicated: 2,
        task_slots_per_node: 4,
        start_task: Some("echo 'libfoo.so.1: cannot open shared object file' >&2; exit 7".into()),
        ..Default::default()
    };
    let rw = env.session_on(broken, KEY)?;
    let text = failure_when_no_node_can_run(&rw).await?;
    for needed in [
        "broken-start",
        "start task",
        "exited with code 7",
        "libfoo.so.1: cannot open",
    ] {
        if !text.contains(needed) {
            return Err(format!("the error does not say `{needed}`: {text}").into());
        }
    }

    let working = PoolConfig {
        id: "working-start".into(),
        dedicated: 2,
        task_slots_per_node: 4,
        start_task: Some("sleep 1; touch \"$AZ_BATCH_NODE_SHARED_DIR/started\"".into()),
        ..Default::default()
    };
    let rw = env.session_on(working, KEY)?;
    let job = rw.map(square, 0..8u64).await.map_err(fail)?;
    let id = job.id().to_string();
    let got = job.collect().await.map_err(fail)?;
    if got != (0..8u64).map(|x| x * x).collect::<Vec<_>>() {
        return Err(format!("wrong results: {got:?}").into());
    }
    let client = env.client()?;
    let nodes = client
        .list("list_nodes", "/pools/working-start/nodes", &[])
        .await
        .map_err(fail)?;
    let mut ended = std::collections::HashMap::new();
    for node in &nodes {
        let info = &node["startTaskInfo"];
        if info["result"] != "success" || info["exitCode"] != 0 {
            return Err(format!("the start task did not succeed: {node}").into());
        }
        ended.insert(
            node["id"].as_str().unwrap_or("").to_string(),
            info["endTime"].clone(),
        );
    }
    let tasks = client
        .list(
            "list_tasks",
            &format!("/jobs/{id}/tasks"),
            &[("$select", "id,executionInfo,nodeInfo")],
        )
        .await
        .map_err(fail)?;
    for task in &tasks {
        let node = task["nodeInfo"]["nodeId"].as_str().unwrap_or("");
        let start = task["executionInfo"]["startTime"].as_str().unwrap_or("");
        let ready = ended.get(node).and_then(|v| v.as_str()).unwrap_or("~");
        if start < ready {
            return Err(format!(
                "task ran at {start} before its node's start task ended at {ready}"
            )
            .into());
        }
    }
    rw.cleanup().await.map_err(fail)?;
    Ok(())
}

/// Sleeps on its first attempt only, then sums a broadcast vector, which it reads with the
/// job's storage URLs (or a retry's own).
#[redwood::remote]
fn slow_first_sum(table: Broadcast<Vec<u64>>, ms: u64) -> Result<u64, redwood::Error> {
    if redwood::context::attempt() == 1 {
        std::thread::sleep(Duration::from_millis(ms));
    }
    Ok(table.get()?.iter().sum())
}

/// An attempt that runs past its storage URLs' expiry (`sas_valid_for`) is an error that
/// says so and what to change; a retry gets fresh URLs (its own read URL too, since the job's
/// expired) and succeeds.
async fn expired_storage_urls_are_named_and_renewed(env: Env) -> TrialResult {
    let pool = PoolConfig {
        id: "short-sas".into(),
        dedicated: 1,
        task_slots_per_node: 4,
        ..Default::default()
    };
    let backend = AzureBatchBackendBuilder::new(&env.url, ACCOUNT, KEY)
        .pool(pool)
        .poll_interval(Duration::from_millis(100))
        .sas_valid_for(Duration::from_secs(5))
        .progress(false)
        .build()
        .map_err(fail)?;
    let rw = env.session_with_backend(Arc::new(backend), "short-sas")?;
    let table = rw.broadcast(&vec![1u64, 2, 3]).await.map_err(fail)?;
    let run = |retries: u32| {
        let (rw, table) = (&rw, table.clone());
        async move {
            let job = rw
                .map_with(
                    slow_first_sum,
                    [(table, 6000u64)],
                    TaskOptions::new().retries(retries),
                )
                .await
                .map_err(fail)?;
            tokio::time::timeout(Duration::from_secs(60), job.clone().collect())
                .await
                .map_err(|_| Failed::from("the map hung"))
                .map(|r| (r, job))
        }
    };
    let (got, _) = run(0).await?;
    let err = got
        .err()
        .ok_or("an attempt that ran past its URLs' expiry succeeded")?;
    let text = err.to_string();
    eprintln!("the error a user sees: {text}");
    for needed in ["expired", "sas_valid_for"] {
        if !text.contains(needed) {
            return Err(format!("the error does not say `{needed}`: {text}").into());
        }
    }
    let (got, job) = run(1).await?;
    if got.map_err(fail)? != [6] {
        return Err("wrong sum after the retry".into());
    }
    if job.stats().retries != 1 {
        return Err(format!("{} retries, expected 1", job.stats().retries).into());
    }
    Ok(())
}

/// A pool that exists with fewer nodes than configured is reused and grown, not replaced.
async fn reused_pool_grows_to_the_configuration(env: Env) -> TrialResult {
    let small = env.session("growing", KEY, 1)?;
    small.call(square, 3).await.map_err(fail)?;
    let big = env.session("growing", KEY, 3)?;
    if big.call(square, 4).await.map_err(fail)? != 16 {
        return Err("wrong result".into());
    }
    let pool = env
        .client()?
        .get("get_pool", "/pools/growing")
        .await
        .map_err(fail)?;
    if pool["targetDedicatedNodes"] != 3 {
        return Err(format!("the pool was not grown: {pool}").into());
    }
    big.cleanup().await.map_err(fail)?;
    Ok(())
}

fn main() -> ExitCode {
    redwood::worker_entry();
    match install_fake_az() {
        Ok(dir) => {
            let path = std::env::var("PATH").unwrap_or_default();
            // SAFETY: no other thread runs yet.
            unsafe { std::env::set_var("PATH", format!("{}:{path}", dir.display())) };
        }
        Err(e) => {
            eprintln!("cannot write the stand-in `az`: {e}");
            return ExitCode::FAILURE;
        }
    }
    let args = Arguments::from_args();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = runtime.block_on(async {
        let azurite = Azurite::start().await.map_err(|e| e.to_string())?;
        let emulator = BatchEmulator::start(vec![BatchAccount {
            name: ACCOUNT.into(),
            key: KEY.into(),
            bearer_token: Some(TOKEN.into()),
        }])
        .await
        .map_err(|e| e.to_string())?;
        Ok::<_, String>((azurite, emulator))
    });
    let (azurite, emulator) = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start Azurite and the Batch emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = Env {
        url: emulator.url(ACCOUNT).unwrap_or_default(),
        storage: azurite.connection_string(&azurite.accounts()[0]),
    };
    type Run = fn(Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = TrialResult> + Send>>;
    let cases: [(&str, Run); 10] = [
        ("expired_storage_urls_are_named_and_renewed", |e| {
            Box::pin(expired_storage_urls_are_named_and_renewed(e))
        }),
        ("start_task_failure_is_a_clear_error", |e| {
            Box::pin(start_task_failure_is_a_clear_error(e))
        }),
        ("preparation_failure_on_every_node_is_a_clear_error", |e| {
            Box::pin(preparation_failure_on_every_node_is_a_clear_error(e))
        }),
        ("entra_id_tokens_sign_requests", |e| {
            Box::pin(entra_id_tokens_sign_requests(e))
        }),
        ("mpi_task_runs_every_rank", |e| {
            Box::pin(mpi_task_runs_every_rank(e))
        }),
        ("reused_pool_grows_to_the_configuration", |e| {
            Box::pin(reused_pool_grows_to_the_configuration(e))
        }),
        ("node_loss_loses_and_duplicates_nothing", |e| {
            Box::pin(node_loss_loses_and_duplicates_nothing(e))
        }),
        ("api_storm_is_ridden_out", |e| {
            Box::pin(api_storm_is_ridden_out(e))
        }),
        ("wrong_key_names_the_account", |e| {
            Box::pin(wrong_key_names_the_account(e))
        }),
        ("allocation_failure_is_a_clear_error", |e| {
            Box::pin(allocation_failure_is_a_clear_error(e))
        }),
    ];
    let watchdog = Watchdog::start(Duration::from_secs(20 * 60));
    let trials = cases
        .into_iter()
        .map(|(name, run)| {
            let (rt, env, dog) = (runtime.clone(), env.clone(), watchdog.clone());
            let name = format!("azure-batch::faults::{name}");
            Trial::test(name.clone(), move || {
                rt.block_on(dog.case(&name, message_of(run(env))))
                    .map_err(Failed::from)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let _ = std::fs::remove_dir_all(az_dir());
    drop(emulator);
    runtime.block_on(azurite.stop());
    conclusion.exit_code()
}
