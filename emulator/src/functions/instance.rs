//! One instance of a function app: the custom handler process, started with
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, ready once `GET /` answers, invoked with `POST /{function}`,
//! killed (with everything it started) when it times out, is told to, or is scaled in.

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::app::App;

/// How many lines of an instance's output are kept.
const TAIL_LINES: usize = 40;

/// How an invocation went.
#[derive(Debug)]
pub(crate) enum Invoked {
    /// The handler answered.
    Answered {
        /// Its status.
        status: u16,
        /// Its body.
        body: Bytes,
        /// Its headers.
        headers: Vec<(String, String)>,
    },
    /// No answer: the connection failed or the instance died.
    Failed(String),
    /// It ran past `functionTimeout`.
    TimedOut,
}

/// A running handler process.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) id: u32,
    port: u16,
    pid: Option<i32>,
    http: reqwest::Client,
    /// Invocations running on it.
    pub(crate) inflight: AtomicU32,
    /// Killed, or its process ended.
    dead: Arc<AtomicBool>,
    /// When it last had no invocation running.
    idle_since: Mutex<Option<Instant>>,
    /// Its last lines of stdout and stderr.
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Instance {
    /// Starts the handler and waits until it answers `GET /` (or `init_timeout` passes).
    pub(crate) async fn start(
        app: &App,
        settings: &BTreeMap<String, String>,
        id: u32,
        init_timeout: Duration,
    ) -> Result<Arc<Instance>, String> {
        let port = free_port()?;
        let mut command = tokio::process::Command::new(&app.executable);
        command
            .args(&app.arguments)
            .current_dir(&app.working_dir)
            .envs(settings)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
            .env("FUNCTIONS_HTTPWORKER_ID", format!("instance-{id}"))
            .env("FUNCTIONS_WORKER_RUNTIME", "custom")
            .env("AzureWebJobsScriptRoot", &app.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: killing the instance kills what it started too.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the handler {}: {e}", app.executable.display()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(instance = id, "{line}");
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            });
        }
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        let dead = Arc::new(AtomicBool::new(false));
        {
            let dead = dead.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                dead.store(true, Ordering::SeqCst);
                tracing::info!(instance = id, ?status, "handler process ended");
            });
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let instance = Arc::new(Instance {
            id,
            port,
            pid,
            http,
            inflight: AtomicU32::new(0),
            dead,
            idle_since: Mutex::new(Some(Instant::now())),
            tail,
        });
        let started = Instant::now();
        loop {
            if instance.is_dead() {
                return Err(format!(
                    "the handler exited before it answered on port {port}: {}",
                    instance.tail_text()
                ));
            }
            let probe = instance
                .http
                .get(instance.url("/"))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if probe.is_ok() {
                tracing::info!(instance = id, port, waited = ?started.elapsed(), "instance ready");
                return Ok(instance);
            }
            if started.elapsed() > init_timeout {
                instance.kill();
                return Err(format!(
                    "the handler did not answer GET / on port {port} within {init_timeout:?} \
                     (does it listen on FUNCTIONS_CUSTOMHANDLER_PORT?): {}",
                    instance.tail_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Whether it was killed or its process ended.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Kills its process group.
    pub(crate) fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        if let Some(pid) = self.pid {
            // SAFETY: signalling the process group our child leads (spawned with
            // `process_group(0)`); the child is reaped by its own task, so until then the
            // id is still its own.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }

    /// Its last lines of output, on one line.
    pub(crate) fn tail_text(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    }

    /// How long it has had nothing to do (`None`: busy).
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        self.idle_since
            .lock()
            .ok()
            .and_then(|i| i.map(|since| since.elapsed()))
    }

    /// Counts an invocation in.
    pub(crate) fn begin(&self) {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut i) = self.idle_since.lock() {
            *i = None;
        }
    }

    /// Counts an invocation out.
    pub(crate) fn end(&self) {
        if self.inflight.fetch_sub(1, Ordering::SeqCst) == 1
            && let Ok(mut i) = self.idle_since.lock()
        {
            *i = Some(Instant::now());
        }
    }

    /// Sends a request to the handler and waits for its answer, at most `timeout`.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Invoked {
        let mut request = self.http.request(method, self.url(path)).body(body);
        for (k, v) in headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let call = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(Invoked::Answered {
                status,
                body,
                headers,
            })
        };
        let result = match timeout {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(r) => r,
                Err(_) => return Invoked::TimedOut,
            },
            None => call.await,
        };
        match result {
            Ok(invoked) => invoked,
            Err(e) => Invoked::Failed(if self.is_dead() {
                format!(
                    "instance {} died mid-invocation: {}",
                    self.id,
                    self.tail_text()
                )
            } else {
                format!("the handler did not answer: {e}")
            }),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (bound and released; the handler binds it next).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}
