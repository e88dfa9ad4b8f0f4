//! A fault-injecting HTTP proxy for tests: it sits on a loopback port in front of a service
//! (e.g. Azurite) and, at a set rate, answers 503 or 500 instead of forwarding, adds latency, or
//! forwards and then cuts the response (a reset after the service acted: the client never sees
//! the acknowledgement). It can also answer every request with one status (e.g. a permanent
//! 403).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What the proxy injects and how often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// The share of requests that get a fault (0.0 to 1.0).
    pub rate: f64,
    /// Added before forwarding any request, when set.
    pub latency: Option<Duration>,
    /// Seed of the fault choices (runs with the same seed inject the same pattern).
    pub seed: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            rate: 0.0,
            latency: None,
            seed: 0x5EED,
        }
    }
}

/// Counts of what the proxy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FaultStats {
    /// Requests forwarded and answered normally.
    pub forwarded: u64,
    /// 503 Service Unavailable injected (not forwarded).
    pub unavailable: u64,
    /// 500 Internal Server Error injected (not forwarded).
    pub internal: u64,
    /// Forwarded, then the response was cut.
    pub resets: u64,
    /// Answered with the fixed status.
    pub fixed: u64,
}

impl FaultStats {
    /// Every injected fault.
    pub fn faults(&self) -> u64 {
        self.unavailable + self.internal + self.resets
    }
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    unavailable: AtomicU64,
    internal: AtomicU64,
    resets: AtomicU64,
    fixed: AtomicU64,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    rate_ppm: AtomicU64,
    latency_us: AtomicU64,
    rng: AtomicU64,
    fixed_status: AtomicU16,
    counters: Counters,
}

impl Shared {
    /// A pseudo-random number in 0..1_000_000 (xorshift, shared by all requests).
    fn roll(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        loop {
            let mut next = x;
            next ^= next << 13;
            next ^= next >> 7;
            next ^= next << 17;
            match self
                .rng
                .compare_exchange_weak(x, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next % 1_000_000,
                Err(current) => x = current,
            }
        }
    }
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, config: FaultConfig) -> std::io::Result<FaultProxy> {
        // reqwest is built without a TLS provider of its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .map_err(std::io::Error::other)?,
            rate_ppm: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            rng: AtomicU64::new(config.seed | 1),
            fixed_status: AtomicU16::new(0),
            counters: Counters::default(),
        });
        let proxy = Router::new().fallback(forward).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, proxy).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "fault proxy stopped");
            }
        });
        let proxy = FaultProxy {
            addr,
            shared,
            _stop: stop,
        };
        proxy.set_rate(config.rate);
        proxy.set_latency(config.latency);
        tracing::info!(addr = %addr, upstream, rate = config.rate, "fault proxy started");
        Ok(proxy)
    }

    /// The proxy's base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the fault rate (0.0 to 1.0).
    pub fn set_rate(&self, rate: f64) {
        let ppm = (rate.clamp(0.0, 1.0) * 1_000_000.0) as u64;
        self.shared.rate_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Changes the added latency.
    pub fn set_latency(&self, latency: Option<Duration>) {
        let us = latency.map_or(0, |d| d.as_micros() as u64);
        self.shared.latency_us.store(us, Ordering::Relaxed);
    }

    /// Answers every request with `status` (and an Azure-style error body), or stops doing so.
    pub fn set_fixed_status(&self, status: Option<u16>) {
        self.shared
            .fixed_status
            .store(status.unwrap_or(0), Ordering::Relaxed);
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> FaultStats {
        let c = &self.shared.counters;
        FaultStats {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            internal: c.internal.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
            fixed: c.fixed.load(Ordering::Relaxed),
        }
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    if let Ok(v) = HeaderValue::from_str(code) {
        response.headers_mut().insert("x-ms-error-code", v);
    }
    response
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let c = &shared.counters;
    let fixed = shared.fixed_status.load(Ordering::Relaxed);
    if fixed != 0 {
        c.fixed.fetch_add(1, Ordering::Relaxed);
        let status = StatusCode::from_u16(fixed).unwrap_or(StatusCode::FORBIDDEN);
        let code = if status == StatusCode::SERVICE_UNAVAILABLE {
            "ServerBusy"
        } else {
            "AuthorizationFailure"
        };
        return error_response(status, code, "Injected by the fault proxy.");
    }
    let latency = shared.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    let rate = shared.rate_ppm.load(Ordering::Relaxed);
    let fault = (shared.roll() < rate).then(|| shared.roll() % 3);
    match fault {
        Some(0) => {
            c.unavailable.fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServerBusy",
                "Injected by the fault proxy.",
            );
        }
        Some(1) => {
            c.internal.fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Injected by the fault proxy.",
            );
        }
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, "ProxyBodyError", &e.to_string());
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let url = format!("{}{path}", shared.upstream);
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "host" | "connection" | "transfer-encoding") {
            headers.append(name.clone(), value.clone());
        }
    }
    let method = match reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) {
        Ok(m) => m,
        Err(_) => return error_response(StatusCode::BAD_REQUEST, "ProxyMethod", "bad method"),
    };
    let upstream = shared
        .http
        .request(method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_GATEWAY, "ProxyUpstream", &e.to_string()),
    };
    let status = upstream.status();
    let headers = upstream.headers().clone();
    let bytes: Bytes = match upstream.bytes().await {
        Ok(b) => b,
        Err(e) => return error_response(StatusCode::BAD_GATEWAY, "ProxyUpstream", &e.to_string()),
    };
    let reset = fault == Some(2);
    let mut response = if reset {
        // The service acted; the client sees the connection break instead of the answer.
        c.resets.fetch_add(1, Ordering::Relaxed);
        let broken = futures::stream::once(async {
            Err::<Bytes, _>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected reset",
            ))
        });
        Response::new(Body::from_stream(broken))
    } else {
        c.forwarded.fetch_add(1, Ordering::Relaxed);
        Response::new(Body::from(bytes))
    };
    *response.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK);
    for (name, value) in &headers {
        // Keep content-length (a HEAD answer's only size), but not for a cut body.
        let skip = matches!(name.as_str(), "connection" | "transfer-encoding")
            || (reset && name.as_str() == "content-length");
        if !skip {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}
