//! The azure-functions backend under faults, against the emulator's Functions host and a real
//! Azurite: an instance killed mid-group, a host that fails every invocation (the poison
//! queue), a task longer than `functionTimeout`, the task queue behind a proxy that fails 10%
//! of the requests, a cold start from zero instances, and calls through the HTTP trigger
//! (`invoke = "http"`) with a wrong key or a failing host.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use redwood::azure::{AppOptions, AzureFunctionsBackend, FunctionsSettings, Invoke, write_app};
use redwood::{ErrorKind, Session, TaskErrorKind, WaitFor};
use redwood_conformance::functions::{sleep_echo, square};
use redwood_conformance::watchdog::{Watchdog, message_of};
use redwood_emulator::azurite::Azurite;
use redwood_emulator::fault_proxy::{FaultConfig, FaultProxy};
use redwood_emulator::functions::{FunctionsHost, FunctionsHostOptions, HostFaults};

type TrialResult = Result<(), Failed>;

fn fail(e: impl std::fmt::Display) -> Failed {
    Failed::from(e.to_string())
}

/// What every trial gets: Azurite's connection string and where its queue service is.
#[derive(Clone)]
struct Env {
    storage: String,
    queue_base: String,
    account: String,
    key: String,
    scratch: Arc<tempfile::TempDir>,
}

/// A Functions host on its own queue, and a session sending to it.
struct Setup {
    host: FunctionsHost,
    session: Session,
}

impl Env {
    /// The connection string of the task queue's account, its queue requests sent to `queue`.
    fn queue_connection(&self, queue: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};QueueEndpoint={queue}/{}",
            self.account, self.key, self.account
        )
    }

    async fn setup(
        &self,
        name: &str,
        app: AppOptions,
        host: impl FnOnce(FunctionsHostOptions) -> FunctionsHostOptions,
        queue_via: Option<&str>,
    ) -> Result<Setup, Failed> {
        self.setup_invoked(name, app, host, queue_via, |_| Invoke::Queue)
            .await
    }

    /// As [`Env::setup`], the session sending its launches as `invoke` says.
    async fn setup_invoked(
        &self,
        name: &str,
        app: AppOptions,
        host: impl FnOnce(FunctionsHostOptions) -> FunctionsHostOptions,
        queue_via: Option<&str>,
        invoke: impl FnOnce(&FunctionsHost) -> Invoke,
    ) -> Result<Setup, Failed> {
        let dir = self.scratch.path().join(name);
        let exe = std::env::current_exe().map_err(fail)?;
        let app = AppOptions {
            queue: format!("faults-{name}"),
            executable: Some(exe),
            ..app
        };
        write_app(&dir, &app).map_err(fail)?;
        let connection = self.queue_connection(queue_via.unwrap_or(&self.queue_base));
        let options = host(
            FunctionsHostOptions::new(&dir)
                .setting("AzureWebJobsStorage", &connection)
                .setting("REDWOOD_WORKERS", "4"),
        );
        let host = FunctionsHost::start(options).await.map_err(fail)?;
        let mut settings = FunctionsSettings::new(&app.queue, &connection);
        settings.function_timeout = app.function_timeout;
        settings.poll_interval = Duration::from_millis(50);
        settings.invoke = invoke(&host);
        let backend = AzureFunctionsBackend::new(settings).map_err(fail)?;
        let session = Session::builder()
            .backend(Arc::new(backend))
            .storage_url(format!(
                "az://functions-faults-{}/{name}",
                std::process::id()
            ))
            .storage_option("connection_string", &self.storage)
            .progress(false)
            .build()
            .map_err(fail)?;
        Ok(Setup { host, session })
    }
}

/// An instance is killed while it runs groups: their messages come back after their lease
/// and run again elsewhere; every result arrives once and right.
async fn a_killed_instance_loses_and_duplicates_nothing(env: Env) -> TrialResult {
    let s = env
        .setup(
            "killed",
            AppOptions::default(),
            |mut h| {
                h.message_lease = Duration::from_secs(2);
                h
            },
            None,
        )
        .await?;
    let n = 40u64;
    let job = s
        .session
        .map(sleep_echo, (0..n).map(|i| (300u64, i)))
        .await
        .map_err(fail)?;
    job.wait(WaitFor::Any).await.map_err(fail)?;
    let killed = s.host.kill_instance(None).ok_or("no instance ran")?;
    let got = job.clone().collect().await.map_err(fail)?;
    if got != (0..n).collect::<Vec<_>>() {
        return Err(format!("results after instance {killed} was killed: {got:?}").into());
    }
    let stats = job.stats();
    if stats.succeeded != n || stats.failed != 0 || stats.retries != 0 {
        return Err(format!("stats after the kill: {stats:?}").into());
    }
    let status = s.host.status();
    if status.abandoned == 0 {
        return Err(format!("no message was left by the killed instance: {status:?}").into());
    }
    Ok(())
}

/// A host that fails every invocation: each message goes to the poison queue after
/// `maxDequeueCount` deliveries, and its tasks end with an error that says so.
async fn failing_every_delivery_ends_in_the_poison_queue(env: Env) -> TrialResult {
    let app = AppOptions {
        max_dequeue_count: 2,
        ..AppOptions::default()
    };
    let s = env.setup("poison", app, |h| h, None).await?;
    s.host.set_faults(HostFaults {
        latency_ms: 0,
        error_rate: 1.0,
    });
    let started = Instant::now();
    let err = s
        .session
        .call(square, 7)
        .await
        .err()
        .ok_or("the call succeeded")?;
    let te = err
        .task_error()
        .ok_or_else(|| format!("not a task error: {err}"))?;
    if te.kind != TaskErrorKind::Crash
        || !te.message.contains("poison queue `faults-poison-poison`")
    {
        return Err(format!("unclear error: {err}").into());
    }
    let status = s.host.status();
    if status.poisoned != 1 || status.invocations != 2 {
        return Err(format!("host after the poison: {status:?}").into());
    }
    eprintln!("poisoned after {:?}: {err}", started.elapsed());
    // The host heals: the next call runs.
    s.host.set_faults(HostFaults::default());
    let v = s.session.call(square, 8).await.map_err(fail)?;
    if v != 64 {
        return Err(format!("square(8) = {v}").into());
    }
    Ok(())
}

/// A task longer than `functionTimeout` (and no timeout of its own): the host stops its
/// instance on each delivery, and the task ends with an error naming the timeout.
async fn a_task_over_function_timeout_is_a_clear_error(env: Env) -> TrialResult {
    let app = AppOptions {
        max_dequeue_count: 2,
        function_timeout: Duration::from_secs(2),
        ..AppOptions::default()
    };
    let s = env
        .setup(
            "overtime",
            app,
            |mut h| {
                h.message_lease = Duration::from_secs(2);
                h
            },
            None,
        )
        .await?;
    let err = s
        .session
        .call(sleep_echo, (10_000, 1))
        .await
        .err()
        .ok_or("a task past functionTimeout succeeded")?;
    let text = err.to_string();
    if !text.contains("functionTimeout") || !text.contains("poison") {
        return Err(format!("unclear error: {text}").into());
    }
    let status = s.host.status();
    if status.timed_out != 2 {
        return Err(format!("host: {status:?}").into());
    }
    // Quick tasks still run.
    let v = s.session.call(square, 3).await.map_err(fail)?;
    if v != 9 {
        return Err(format!("square(3) = {v}").into());
    }
    // A per-task timeout above functionTimeout is refused before anything is sent.
    let refused = s
        .session
        .map_with(
            square,
            [1u64],
            redwood::TaskOptions::new().timeout(Duration::from_secs(5)),
        )
        .await;
    match refused {
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(()),
        other => Err(format!("a 5 s timeout on a 2 s functionTimeout: {other:?}").into()),
    }
}

/// The task queue behind a proxy that fails 10% of the requests (503s, 500s, resets), for the
/// host and the client alike: every result arrives once and right.
async fn the_queue_behind_ten_percent_faults(env: Env) -> TrialResult {
    let proxy = FaultProxy::start(
        &env.queue_base,
        FaultConfig {
            rate: 0.10,
            ..FaultConfig::default()
        },
    )
    .await
    .map_err(fail)?;
    let url = proxy.url();
    let s = env
        .setup(
            "faulty-queue",
            AppOptions::default(),
            |mut h| {
                h.message_lease = Duration::from_secs(3);
                h
            },
            Some(&url),
        )
        .await?;
    let n = 300u64;
    let got = s
        .session
        .map(square, 0..n)
        .await
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    if got != (0..n).map(|x| x * x).collect::<Vec<_>>() {
        return Err(format!("results through the faulty queue: {got:?}").into());
    }
    let stats = proxy.stats();
    eprintln!("queue proxy: {stats:?}");
    if stats.faults() == 0 {
        return Err("the proxy injected nothing: the test proved nothing".into());
    }
    Ok(())
}

/// With no instance running, one call starts one (a cold start) and gets its answer; idle
/// instances stop again.
async fn a_call_starts_from_zero_instances(env: Env) -> TrialResult {
    let s = env
        .setup(
            "cold",
            AppOptions::default(),
            |mut h| {
                h.idle_timeout = Duration::from_secs(1);
                h
            },
            None,
        )
        .await?;
    if s.host.status().instances != 0 {
        return Err("an instance runs before any work".into());
    }
    let started = Instant::now();
    let v = s.session.call(square, 12).await.map_err(fail)?;
    let cold = started.elapsed();
    if v != 144 {
        return Err(format!("square(12) = {v}").into());
    }
    let status = s.host.status();
    if status.cold_starts != 1 {
        return Err(format!("host: {status:?}").into());
    }
    eprintln!("cold start: one call answered in {cold:?}");
    let idle = Instant::now();
    while s.host.status().instances > 0 {
        if idle.elapsed() > Duration::from_secs(15) {
            return Err(format!("instances still run: {:?}", s.host.status()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A call through the HTTP trigger with a wrong key is refused at once, with an error that
/// names the setting to fix; nothing runs.
async fn an_http_call_with_a_wrong_key_is_refused_clearly(env: Env) -> TrialResult {
    let s = env
        .setup_invoked(
            "wrongkey",
            AppOptions::default(),
            |h| h,
            None,
            |h| Invoke::Http {
                url: h.url().to_string(),
                key: Some("not-the-key".into()),
            },
        )
        .await?;
    let started = Instant::now();
    let err = s
        .session
        .call(square, 5)
        .await
        .err()
        .ok_or("a call with a wrong key succeeded")?;
    let te = err
        .task_error()
        .ok_or_else(|| format!("not a task error: {err}"))?;
    if te.kind != TaskErrorKind::Refused || !te.message.contains("function_key") {
        return Err(format!("unclear error: {err}").into());
    }
    if started.elapsed() > Duration::from_secs(10) {
        return Err(format!("the refusal took {:?}", started.elapsed()).into());
    }
    let status = s.host.status();
    if status.succeeded != 0 {
        return Err(format!("something ran: {status:?}").into());
    }
    if err.to_string().contains("not-the-key") {
        return Err(format!("the key is in the error: {err}").into());
    }
    Ok(())
}

/// Calls through the HTTP trigger while the host fails 30% of invocations: a failed call
/// falls back to its queue message, and every call answers once and right.
async fn http_calls_fall_back_to_the_queue_under_faults(env: Env) -> TrialResult {
    let app = AppOptions {
        max_dequeue_count: 12,
        ..AppOptions::default()
    };
    let s = env
        .setup_invoked(
            "httpfaults",
            app,
            |h| h,
            None,
            |h| Invoke::Http {
                url: h.url().to_string(),
                key: Some(h.master_key().to_string()),
            },
        )
        .await?;
    s.host.set_faults(HostFaults {
        latency_ms: 0,
        error_rate: 0.3,
    });
    for i in 0..16u64 {
        let v = s.session.call(square, i).await.map_err(fail)?;
        if v != i * i {
            return Err(format!("square({i}) = {v}").into());
        }
    }
    let status = s.host.status();
    if status.failed == 0 {
        return Err(format!("no fault was injected: {status:?}").into());
    }
    if status.succeeded < 16 || status.poisoned != 0 {
        return Err(format!("host after the calls: {status:?}").into());
    }
    Ok(())
}

fn main() -> ExitCode {
    redwood::worker_entry();
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
    let azurite = match runtime.block_on(Azurite::start()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cannot start Azurite: {e}");
            return ExitCode::FAILURE;
        }
    };
    let account = azurite.accounts()[0].clone();
    let Some(queue_endpoint) = azurite.queue_endpoint(&account.name) else {
        eprintln!("this Azurite has no queue service");
        return ExitCode::FAILURE;
    };
    let scratch = match tempfile::tempdir() {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("cannot make a scratch folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = Env {
        storage: azurite.connection_string(&account),
        queue_base: queue_endpoint
            .trim_end_matches(&format!("/{}", account.name))
            .to_string(),
        account: account.name.clone(),
        key: account.key.clone(),
        scratch,
    };
    type Run = fn(Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = TrialResult> + Send>>;
    let cases: [(&str, Run); 7] = [
        ("a_killed_instance_loses_and_duplicates_nothing", |e| {
            Box::pin(a_killed_instance_loses_and_duplicates_nothing(e))
        }),
        ("failing_every_delivery_ends_in_the_poison_queue", |e| {
            Box::pin(failing_every_delivery_ends_in_the_poison_queue(e))
        }),
        ("a_task_over_function_timeout_is_a_clear_error", |e| {
            Box::pin(a_task_over_function_timeout_is_a_clear_error(e))
        }),
        ("the_queue_behind_ten_percent_faults", |e| {
            Box::pin(the_queue_behind_ten_percent_faults(e))
        }),
        ("a_call_starts_from_zero_instances", |e| {
            Box::pin(a_call_starts_from_zero_instances(e))
        }),
        ("an_http_call_with_a_wrong_key_is_refused_clearly", |e| {
            Box::pin(an_http_call_with_a_wrong_key_is_refused_clearly(e))
        }),
        ("http_calls_fall_back_to_the_queue_under_faults", |e| {
            Box::pin(http_calls_fall_back_to_the_queue_under_faults(e))
        }),
    ];
    let watchdog = Watchdog::start(Duration::from_secs(20 * 60));
    let trials = cases
        .into_iter()
        .map(|(name, run)| {
            let (rt, env, dog) = (runtime.clone(), env.clone(), watchdog.clone());
            Trial::test(name, move || {
                rt.block_on(dog.case(name, message_of(run(env))))
                    .map_err(Failed::from)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    runtime.block_on(azurite.stop());
    conclusion.exit_code()
}
