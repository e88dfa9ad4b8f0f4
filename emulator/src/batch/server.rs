//! The HTTP side: one loopback listener per account (as each real account has its own host),
//! checks every request (api-version, SharedKey or bearer auth), and serves pools, jobs and
//! tasks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use std::collections::HashMap;

use super::admin;
use super::auth;
use super::autoscale;
use super::error::BatchError;
use super::exec;
use super::file_api;
use super::query::ListOptions;
use super::resources::{
    AUTOSCALE_PROPERTIES, Collection, JOB_PROPERTIES, POOL_PROPERTIES, RESIZE_PROPERTIES, Resource,
    TASK_PROPERTIES, TERMINATE_PROPERTIES, check_id, check_known, now_string, optional_int,
    require_str,
};

/// The api-versions the emulator accepts.
pub const API_VERSIONS: [&str; 3] = ["2025-06-01", "2025-06-01.21.0", "2024-07-01.20.0"];
/// The largest request body the service takes (1 MiB).
pub const MAX_BODY: usize = 1 << 20;
/// The most tasks in one `addtaskcollection`.
pub const MAX_TASKS_PER_COLLECTION: usize = 100;

/// An emulated Batch account.
#[derive(Clone, PartialEq, Eq)]
pub struct BatchAccount {
    /// The account name.
    pub name: String,
    /// The SharedKey (base64).
    pub key: String,
    /// A bearer token accepted for this account (tests only), if any.
    pub bearer_token: Option<String>,
}

impl std::fmt::Debug for BatchAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchAccount")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A running Batch emulator: one endpoint per account. Stops when dropped.
#[derive(Debug)]
pub struct BatchEmulator {
    endpoints: Vec<(String, SocketAddr)>,
    _stops: Vec<oneshot::Sender<()>>,
}

impl BatchEmulator {
    /// Starts the Batch API for the accounts, each on a free loopback port.
    pub async fn start(accounts: Vec<BatchAccount>) -> std::io::Result<BatchEmulator> {
        // reqwest is built without a TLS provider of its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut endpoints = Vec::new();
        let mut stops = Vec::new();
        for account in accounts {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let root = tempfile::Builder::new()
                .prefix(&format!("redwood-batch-{}-", account.name))
                .tempdir()?;
            let downloads = super::files::DownloadCache::new(root.path().join("downloads"));
            exec::install_mpirun(root.path())?;
            let state = Arc::new(AccountState {
                url: format!("http://{addr}"),
                downloads,
                account: account.clone(),
                data: Mutex::new(Data {
                    bearer_token: account.bearer_token.clone(),
                    ..Data::default()
                }),
                root,
                changed: tokio::sync::Notify::new(),
                running: Mutex::new(Default::default()),
                preps: Mutex::new(Default::default()),
                http: reqwest::Client::new(),
            });
            tokio::spawn(scheduler(Arc::downgrade(&state)));
            let app = router(state);
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = serve.await {
                    tracing::warn!(error = %e, "Batch emulator endpoint stopped");
                }
            });
            tracing::info!(account = %account.name, %addr, "Batch emulator listening");
            endpoints.push((account.name, addr));
            stops.push(stop);
        }
        Ok(BatchEmulator {
            endpoints,
            _stops: stops,
        })
    }

    /// The endpoint URL of an account (`http://127.0.0.1:<port>`).
    pub fn url(&self, account: &str) -> Option<String> {
        self.endpoints
            .iter()
            .find(|(name, _)| name == account)
            .map(|(_, addr)| format!("http://{addr}"))
    }
}

/// One emulated account: its resources, its nodes' folders, and a wake-up for the scheduler.
pub(super) struct AccountState {
    pub(super) url: String,
    pub(super) account: BatchAccount,
    data: Mutex<Data>,
    /// The nodes' folders (removed when the emulator stops).
    pub(super) root: tempfile::TempDir,
    /// Signals the scheduler that something changed.
    pub(super) changed: tokio::sync::Notify,
    /// Stop switches of running tasks.
    running: Mutex<exec::Running>,
    /// Whether a job's preparation task succeeded on a node, by (node, job).
    preps: Mutex<exec::Preps>,
    /// For resource and output files.
    pub(super) http: reqwest::Client,
    /// Resource files already downloaded, revalidated by ETag.
    pub(super) downloads: super::files::DownloadCache,
}

#[derive(Default)]
pub(super) struct Data {
    pub(super) pools: Collection,
    pub(super) jobs: Collection,
    /// Tasks by job id (lower-cased).
    pub(super) tasks: std::collections::HashMap<String, Collection>,
    pub(super) nodes: exec::Nodes,
    /// Pools (lower-cased ids) whose allocation fails, with the error to report.
    pub(super) failing_pools: std::collections::HashMap<String, (String, String)>,
    /// Pools (lower-cased ids) whose nodes storage refuses, with the HTTP status it answers.
    pub(super) storage_refused: std::collections::HashMap<String, u16>,
    /// API faults: the share of requests (per million) answered with `fault_status`.
    pub(super) fault_ppm: u64,
    pub(super) fault_status: u16,
    pub(super) latency_ms: u64,
    pub(super) fault_rng: u64,
    /// The bearer token accepted now (the account's, until an admin call rotates it).
    pub(super) bearer_token: Option<String>,
}

impl AccountState {
    pub(super) fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn running(&self) -> MutexGuard<'_, exec::Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn preps(&self) -> MutexGuard<'_, exec::Preps> {
        self.preps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Places tasks whenever something changed (and at least every 200 ms), until the account's
/// endpoint stops.
async fn scheduler(state: std::sync::Weak<AccountState>) {
    loop {
        let Some(strong) = state.upgrade() else {
            return;
        };
        // A bug met here must not stop the account's scheduling for good.
        let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            autoscale_pools(&strong);
            exec::schedule(&strong);
        }));
        if pass.is_err() {
            tracing::error!(account = %strong.account.name, "a scheduling pass panicked; going on");
        }
        let wait = async {
            tokio::select! {
                () = strong.changed.notified() => {}
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        };
        wait.await;
    }
}

pub(super) type Shared = Arc<AccountState>;

fn router(state: Shared) -> Router {
    Router::new()
        .route("/pools", post(add_pool).get(list_pools))
        .route("/pools/{pool}", get(get_pool).delete(delete_pool))
        .route("/pools/{pool}/resize", post(resize_pool))
        .route("/pools/{pool}/nodes", get(list_nodes))
        .route("/pools/{pool}/nodes/{node}", get(get_node))
        .route(
            "/pools/{pool}/nodes/{node}/files/{*path}",
            get(file_api::get_node_file),
        )
        .route(
            "/jobs/{job}/tasks/{task}/files",
            get(file_api::list_task_files),
        )
        .route(
            "/jobs/{job}/tasks/{task}/files/{*path}",
            get(file_api::get_task_file),
        )
        .route("/jobs", post(add_job).get(list_jobs))
        .route("/jobs/{job}", get(get_job).delete(delete_job))
        .route("/jobs/{job}/terminate", post(terminate_job))
        .route(
            "/jobs/{job}/jobpreparationandreleasetaskstatus",
            get(list_preparation_status),
        )
        .route("/jobs/{job}/tasks", post(add_task).get(list_tasks))
        .route("/jobs/{job}/addtaskcollection", post(add_task_collection))
        .route(
            "/jobs/{job}/tasks/{task}",
            get(get_task).delete(delete_task),
        )
        .route("/jobs/{job}/tasks/{task}/terminate", post(terminate_task))
        .route("/jobs/{job}/tasks/{task}/reactivate", post(reactivate_task))
        .route(
            "/_emulator/pools/{pool}/nodes/{node}/remove",
            post(admin::remove_node),
        )
        .route(
            "/_emulator/pools/{pool}/allocation-failure",
            post(admin::fail_allocation),
        )
        .route(
            "/_emulator/pools/{pool}/storage-firewall",
            post(admin::set_storage_firewall),
        )
        .route("/_emulator/faults", post(admin::set_faults))
        .route("/_emulator/bearer-token", post(admin::rotate_bearer_token))
        .route("/pools/{pool}/enableautoscale", post(enable_autoscale))
        .route("/pools/{pool}/disableautoscale", post(disable_autoscale))
        .fallback(unknown_path)
        .layer(middleware::from_fn_with_state(state.clone(), check_request))
        .layer(middleware::from_fn(catch_panics))
        .with_state(state)
}

/// Turns a handler's panic into the service's 500 `InternalError`, so one request can never
/// take the emulator down or leave its connection hanging.
async fn catch_panics(request: Request, next: Next) -> Response {
    use futures::FutureExt;
    let path = request.uri().path().to_string();
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(%path, "a request handler panicked");
            BatchError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "The server encountered an internal error. Please retry the request.",
            )
            .into_response()
        }
    }
}

/// The query pairs of a request, decoded.
pub(super) fn query_pairs(request: &Request) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .map(url_decode_pairs)
        .unwrap_or_default()
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every request: api-version, authentication, request ids; errors get the account's URL.
async fn check_request(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let client_request_id = request.headers().get("client-request-id").cloned();
    let request_id = format!("{:032x}", rand_id());
    // The emulator's own admin calls are outside the Azure API surface, but signed like it
    // (the account's key or bearer token), with JSON bodies only: no other local process and no
    // web page (a form post) can drive them.
    let admin = request.uri().path().starts_with("/_emulator/");
    let checked = if admin {
        authorize(&state, &request).and_then(|()| json_only(&request))
    } else {
        match admin::injected_fault(&state).await {
            Some(fault) => Err(fault),
            None => authorize(&state, &request),
        }
    };
    let mut response = match checked {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("request-id", v);
    }
    if let Some(v) = client_request_id {
        headers.insert("client-request-id", v);
    }
    headers.insert("dataserviceversion", HeaderValue::from_static("3.0"));
    if response.status().is_client_error() || response.status().is_server_error() {
        response = with_account_metadata(response, &state.url).await;
    }
    response
}

/// Rewrites an error body's `odata.metadata` with the account URL.
async fn with_account_metadata(response: Response, url: &str) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    if let Some(meta) = value.get_mut("odata.metadata")
        && let Some(text) = meta.as_str()
    {
        *meta = Value::String(format!("{url}{text}"));
    }
    let mut parts = parts;
    parts.headers.remove("content-length");
    Response::from_parts(parts, Body::from(value.to_string()))
}

fn rand_id() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    t ^ ((COUNTER.fetch_add(1, Ordering::Relaxed) as u128) << 64)
}

fn authorize(state: &AccountState, request: &Request) -> Result<(), BatchError> {
    let query = query_pairs(request);
    match query.iter().find(|(k, _)| k == "api-version") {
        None => {
            return Err(BatchError::new(
                StatusCode::BAD_REQUEST,
                "MissingRequiredQueryParameter",
                "A query parameter that's mandatory for this request is not specified.",
            )
            .with("QueryParameterName", "api-version"));
        }
        Some((_, v)) if !API_VERSIONS.contains(&v.as_str()) => {
            return Err(BatchError::new(
                StatusCode::BAD_REQUEST,
                "InvalidQueryParameterValue",
                "Value for one of the query parameters specified in the request URI is invalid.",
            )
            .with("QueryParameterName", "api-version")
            .with("QueryParameterValue", v.clone())
            .with("Reason", "The specified api-version is not supported."));
        }
        Some(_) => {}
    }
    let failed = |why: &str| {
        BatchError::new(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
        )
        .with("AuthenticationErrorDetail", why)
    };
    let header = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            BatchError::new(
                StatusCode::UNAUTHORIZED,
                "MissingRequiredHeader",
                "A required HTTP header was not specified.",
            )
            .with("HeaderName", "Authorization")
        })?;
    if let Some(token) = header.strip_prefix("Bearer ") {
        return match &state.data().bearer_token {
            Some(expected) if auth::constant_time_eq(expected.as_bytes(), token.as_bytes()) => {
                Ok(())
            }
            Some(_) => Err(failed("The access token is not valid for this account.")),
            None => Err(failed(
                "Bearer tokens are not configured for this emulated account.",
            )),
        };
    }
    let Some((account, signature)) = header
        .strip_prefix("SharedKey ")
        .and_then(|rest| rest.split_once(':'))
    else {
        return Err(failed(
            "The Authorization header is neither SharedKey nor Bearer.",
        ));
    };
    if account != state.account.name {
        return Err(failed(&format!(
            "The account {account} in the Authorization header is not this account ({}).",
            state.account.name
        )));
    }
    auth::check_date(request.headers(), std::time::SystemTime::now())
        .map_err(|why| failed(&why))?;
    let ok = auth::verify(
        &state.account.key,
        signature,
        request.method(),
        request.headers(),
        account,
        request.uri().path(),
        &query,
    );
    if ok {
        Ok(())
    } else {
        Err(failed(
            "The MAC signature found in the HTTP request is not the same as any computed signature.",
        ))
    }
}

/// Refuses a request with a body that is not declared JSON.
fn json_only(request: &Request) -> Result<(), BatchError> {
    let declared = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    let has_body = request
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| n != "0")
        || request.headers().contains_key("transfer-encoding");
    match declared {
        Some(t) if t.trim_start().starts_with("application/json") => Ok(()),
        None if !has_body => Ok(()),
        _ => Err(BatchError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "InvalidContentType",
            "The emulator's admin calls take application/json bodies only.",
        )),
    }
}

async fn unknown_path(method: Method) -> BatchError {
    BatchError::new(
        StatusCode::BAD_REQUEST,
        "InvalidUri",
        format!("The requested URI does not represent any resource on the server ({method})."),
    )
}

/// Reads a JSON object body (malformed JSON, a non-object or an oversize body are OData errors).
pub(super) async fn json_body(request: Request) -> Result<Map<String, Value>, BatchError> {
    let bytes: Bytes = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| {
            BatchError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
                format!("The request body is too large and exceeds the maximum permissible limit of {MAX_BODY} bytes."),
            )
        })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(BatchError::invalid_body("The body must be a JSON object.")),
        Err(e) => Err(BatchError::invalid_body(e.to_string())),
    }
}

fn created(state: &AccountState, path: &str, resource: &Resource) -> Response {
    let url = format!("{}{path}", state.url);
    let mut response = StatusCode::CREATED.into_response();
    set_resource_headers(response.headers_mut(), resource);
    if let Ok(v) = HeaderValue::from_str(&url) {
        response.headers_mut().insert("location", v.clone());
        response.headers_mut().insert("dataserviceid", v);
    }
    response
}

fn set_resource_headers(headers: &mut HeaderMap, resource: &Resource) {
    if let Ok(v) = HeaderValue::from_str(&resource.etag()) {
        headers.insert("etag", v);
    }
    let modified = httpdate::fmt_http_date(resource.last_modified);
    if let Ok(v) = HeaderValue::from_str(&modified) {
        headers.insert("last-modified", v);
    }
}

fn one(state: &AccountState, entity: &str, resource: &Resource) -> Response {
    let mut body = resource.body.clone();
    body.insert(
        "odata.metadata".into(),
        Value::String(format!("{}/$metadata#{entity}/@Element", state.url)),
    );
    let mut response = Json(Value::Object(body)).into_response();
    set_resource_headers(response.headers_mut(), resource);
    response
}

pub(super) fn list<'a>(
    state: &AccountState,
    entity: &str,
    path: &str,
    query: &[(String, String)],
    items: impl Iterator<Item = &'a Resource>,
) -> Result<Response, BatchError> {
    let options = ListOptions::parse(query)?;
    let (value, next) = options.page(items.map(|r| &r.body));
    let mut body = json!({
        "odata.metadata": format!("{}/$metadata#{entity}", state.url),
        "value": value,
    });
    if let Some(skip) = next {
        let kept: Vec<String> = query
            .iter()
            .filter(|(k, _)| k != "$skiptoken")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        body["odata.nextLink"] = Value::String(format!(
            "{}{path}?{}&$skiptoken={skip}",
            state.url,
            kept.join("&")
        ));
    }
    Ok(Json(body).into_response())
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn add_pool(State(state): State<Shared>, request: Request) -> Result<Response, BatchError> {
    let mut body = json_body(request).await?;
    check_known(&body, POOL_PROPERTIES)?;
    let id = check_id(&body)?;
    require_str(&body, "vmSize")?;
    let dedicated = optional_int(&body, "targetDedicatedNodes", 0, MAX_POOL_NODES)?.unwrap_or(0);
    let spot = optional_int(&body, "targetLowPriorityNodes", 0, MAX_POOL_NODES)?.unwrap_or(0);
    optional_int(&body, "taskSlotsPerNode", 1, 256)?;
    let url = format!("{}/pools/{id}", state.url);
    body.insert("url".into(), Value::String(url));
    body.insert("state".into(), Value::from("active"));
    body.insert("allocationState".into(), Value::from("steady"));
    body.insert(
        "allocationStateTransitionTime".into(),
        Value::from(now_string()),
    );
    body.insert("currentDedicatedNodes".into(), Value::from(dedicated));
    body.insert("currentLowPriorityNodes".into(), Value::from(spot));
    body.entry("taskSlotsPerNode").or_insert(Value::from(1));
    let mut data = state.data();
    let resource = data
        .pools
        .insert(&id, body, BatchError::exists("PoolExists", "pool"))?
        .clone();
    allocate(&mut data, &state, &id, (dedicated + spot) as usize);
    drop(data);
    autoscale_pools(&state);
    let data = state.data();
    let resource = data.pools.get(&id).cloned().unwrap_or(resource);
    state.changed.notify_one();
    Ok(created(&state, &format!("/pools/{id}"), &resource))
}

async fn list_pools(State(state): State<Shared>, request: Request) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let data = state.data();
    list(&state, "pools", "/pools", &query, data.pools.all())
}

async fn get_pool(
    State(state): State<Shared>,
    Path(pool): Path<String>,
) -> Result<Response, BatchError> {
    let data = state.data();
    let resource = data
        .pools
        .get(&pool)
        .ok_or_else(|| BatchError::not_found("PoolNotFound", "pool"))?;
    Ok(one(&state, "pools", resource))
}

async fn delete_pool(
    State(state): State<Shared>,
    Path(pool): Path<String>,
) -> Result<Response, BatchError> {
    let mut data = state.data();
    data.pools
        .remove(&pool)
        .ok_or_else(|| BatchError::not_found("PoolNotFound", "pool"))?;
    data.nodes.remove(&pool.to_lowercase());
    // Its nodes are gone, and with them the processes of the tasks they ran.
    let running: Vec<(String, String)> = data
        .tasks
        .iter()
        .flat_map(|(job, tasks)| tasks.all().map(move |t| (job, t)))
        .filter(|(_, t)| t.str("state") == Some("running"))
        .filter(|(_, t)| {
            t.body
                .get("nodeInfo")
                .and_then(|n| n.get("poolId"))
                .and_then(Value::as_str)
                .is_some_and(|p| p.eq_ignore_ascii_case(&pool))
        })
        .filter_map(|(job, t)| Some((job.clone(), t.str("id")?.to_string())))
        .collect();
    drop(data);
    for (job, task) in running {
        exec::stop_task(&state, &job, &task, exec::Stop::Requeue);
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn resize_pool(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, RESIZE_PROPERTIES)?;
    let dedicated = optional_int(&body, "targetDedicatedNodes", 0, MAX_POOL_NODES)?;
    let spot = optional_int(&body, "targetLowPriorityNodes", 0, MAX_POOL_NODES)?;
    let mut data = state.data();
    let resource = data
        .pools
        .get_mut(&pool)
        .ok_or_else(|| BatchError::not_found("PoolNotFound", "pool"))?;
    if resource.body.get("enableAutoScale") == Some(&Value::Bool(true)) {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "AutoScalingEnabled",
            "The specified pool has autoscale enabled; it cannot be resized manually.",
        ));
    }
    // Nodes are emulated: allocation completes at once.
    let mut fields = vec![("allocationStateTransitionTime", Value::from(now_string()))];
    if let Some(n) = dedicated {
        fields.push(("targetDedicatedNodes", Value::from(n)));
        fields.push(("currentDedicatedNodes", Value::from(n)));
    }
    if let Some(n) = spot {
        fields.push(("targetLowPriorityNodes", Value::from(n)));
        fields.push(("currentLowPriorityNodes", Value::from(n)));
    }
    resource.update(fields);
    let resource = resource.clone();
    let count = ["currentDedicatedNodes", "currentLowPriorityNodes"]
        .iter()
        .filter_map(|f| resource.body.get(*f).and_then(Value::as_i64))
        .sum::<i64>();
    allocate(&mut data, &state, &pool, count as usize);
    state.changed.notify_one();
    let mut response = StatusCode::ACCEPTED.into_response();
    set_resource_headers(response.headers_mut(), &resource);
    Ok(response)
}

async fn terminate_job(
    State(state): State<Shared>,
    Path(job): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let has_body = request
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "0");
    let reason = if has_body {
        let body = json_body(request).await?;
        check_known(&body, TERMINATE_PROPERTIES)?;
        match body.get("terminateReason") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => Some(r.clone()),
            Some(other) => {
                return Err(BatchError::invalid_property(
                    "terminateReason",
                    &other.to_string(),
                    "The value must be a string.",
                ));
            }
        }
    } else {
        None
    };
    let mut data = state.data();
    let resource = data
        .jobs
        .get_mut(&job)
        .ok_or_else(|| BatchError::not_found("JobNotFound", "job"))?;
    if resource.state() == "completed" {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "JobCompleted",
            "The specified job is already in a completed state.",
        ));
    }
    let now = now_string();
    resource.update([
        ("state", Value::from("completed")),
        ("stateTransitionTime", Value::from(now.clone())),
        (
            "executionInfo",
            json!({"endTime": now, "terminateReason": reason.unwrap_or_else(|| "UserTerminate".into())}),
        ),
    ]);
    let mut response = StatusCode::ACCEPTED.into_response();
    set_resource_headers(response.headers_mut(), resource);
    // As on the service, the job's unfinished tasks end with it, and running ones are stopped.
    let mut stopped = Vec::new();
    if let Some(tasks) = data.tasks.get_mut(&job.to_lowercase()) {
        for task in tasks.all_mut() {
            if task.str("state") != Some("completed") {
                exec::end_task(
                    task,
                    "The task was terminated because its job was terminated",
                );
                stopped.extend(task.str("id").map(str::to_string));
            }
        }
    }
    drop(data);
    for task in stopped {
        exec::stop_task(&state, &job, &task, exec::Stop::Terminate);
    }
    Ok(response)
}

async fn add_job(State(state): State<Shared>, request: Request) -> Result<Response, BatchError> {
    let mut body = json_body(request).await?;
    check_known(&body, JOB_PROPERTIES)?;
    let id = check_id(&body)?;
    match body.get("poolInfo") {
        Some(Value::Object(info))
            if info.contains_key("poolId") || info.contains_key("autoPoolSpecification") => {}
        Some(Value::Object(_)) => return Err(BatchError::missing_property("poolInfo.poolId")),
        Some(other) => {
            return Err(BatchError::invalid_property(
                "poolInfo",
                &other.to_string(),
                "The value must be an object.",
            ));
        }
        None => return Err(BatchError::missing_property("poolInfo")),
    }
    optional_int(&body, "priority", -1000, 1000)?;
    body.insert(
        "url".into(),
        Value::String(format!("{}/jobs/{id}", state.url)),
    );
    body.insert("state".into(), Value::from("active"));
    body.entry("onAllTasksComplete")
        .or_insert(Value::from("noaction"));
    body.entry("onTaskFailure")
        .or_insert(Value::from("noaction"));
    let mut data = state.data();
    let resource = data
        .jobs
        .insert(&id, body, BatchError::exists("JobExists", "job"))?
        .clone();
    data.tasks.entry(id.to_lowercase()).or_default();
    state.changed.notify_one();
    Ok(created(&state, &format!("/jobs/{id}"), &resource))
}

async fn list_jobs(State(state): State<Shared>, request: Request) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let data = state.data();
    list(&state, "jobs", "/jobs", &query, data.jobs.all())
}

async fn get_job(
    State(state): State<Shared>,
    Path(job): Path<String>,
) -> Result<Response, BatchError> {
    let data = state.data();
    let resource = data
        .jobs
        .get(&job)
        .ok_or_else(|| BatchError::not_found("JobNotFound", "job"))?;
    Ok(one(&state, "jobs", resource))
}

/// The job preparation task's state on each node where it ran.
async fn list_preparation_status(
    State(state): State<Shared>,
    Path(job): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let has_prep = {
        let data = state.data();
        let resource = data
            .jobs
            .get(&job)
            .ok_or_else(|| BatchError::not_found("JobNotFound", "job"))?;
        resource.body.contains_key("jobPreparationTask")
            || resource.body.contains_key("jobReleaseTask")
    };
    if !has_prep {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "JobPreparationTaskNotSpecified",
            "The specified job does not have a Job Preparation task.",
        ));
    }
    let key = job.to_lowercase();
    let mut entries: Vec<(String, Arc<exec::Prep>)> = state
        .preps()
        .iter()
        .filter(|((_, j), _)| *j == key)
        .map(|((node, _), prep)| (node.clone(), prep.clone()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let items: Vec<Resource> = entries
        .into_iter()
        .filter_map(|(node, prep)| {
            let info = prep.info()?;
            let pool = prep.pool();
            let body = json!({
                "poolId": pool,
                "nodeId": node,
                "nodeUrl": format!("{}/pools/{pool}/nodes/{node}", state.url),
                "jobPreparationTaskExecutionInfo": info,
            });
            match body {
                Value::Object(map) => Some(Resource::new(map, std::time::SystemTime::now())),
                _ => None,
            }
        })
        .collect();
    list(
        &state,
        "jobpreparationandreleasetaskstatuslist",
        &format!("/jobs/{job}/jobpreparationandreleasetaskstatus"),
        &query,
        items.iter(),
    )
}

async fn delete_job(
    State(state): State<Shared>,
    Path(job): Path<String>,
) -> Result<Response, BatchError> {
    let mut data = state.data();
    data.jobs
        .remove(&job)
        .ok_or_else(|| BatchError::not_found("JobNotFound", "job"))?;
    data.tasks.remove(&job.to_lowercase());
    drop(data);
    let key = job.to_lowercase();
    state.preps().retain(|(_, j), _| *j != key);
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Checks a task's body and adds the service's fields.
fn prepare_task(
    state: &AccountState,
    job: &str,
    mut body: Map<String, Value>,
) -> Result<(String, Map<String, Value>), BatchError> {
    check_known(&body, TASK_PROPERTIES)?;
    let id = check_id(&body)?;
    require_str(&body, "commandLine")?;
    check_task_limits(&body)?;
    body.insert(
        "url".into(),
        Value::String(format!("{}/jobs/{job}/tasks/{id}", state.url)),
    );
    body.insert("state".into(), Value::from("active"));
    body.insert(
        "executionInfo".into(),
        json!({"retryCount": 0, "requeueCount": 0}),
    );
    Ok((id, body))
}

/// Numbers a task body gives the scheduler, checked on the way in as the service does:
/// `requiredSlots`, the instances of a multi-instance task, and the constraints' durations.
fn check_task_limits(body: &Map<String, Value>) -> Result<(), BatchError> {
    optional_int(body, "requiredSlots", 1, 256)?;
    if let Some(multi) = body.get("multiInstanceSettings").and_then(Value::as_object) {
        optional_int(multi, "numberOfInstances", 1, MAX_POOL_NODES)?;
    }
    let Some(constraints) = body.get("constraints") else {
        return Ok(());
    };
    let Some(constraints) = constraints.as_object() else {
        return Err(BatchError::invalid_property(
            "constraints",
            &constraints.to_string(),
            "The value must be an object.",
        ));
    };
    optional_int(constraints, "maxTaskRetryCount", -1, i64::from(i32::MAX))?;
    for name in ["maxWallClockTime", "retentionTime"] {
        match constraints.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) if exec::parse_duration(text).is_some() => {}
            Some(other) => {
                return Err(BatchError::invalid_property(
                    name,
                    &other.to_string(),
                    "The value must be an ISO 8601 duration (e.g. PT1H30M).",
                ));
            }
        }
    }
    Ok(())
}

async fn add_task(
    State(state): State<Shared>,
    Path(job): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    let (id, body) = prepare_task(&state, &job, body)?;
    let mut data = state.data();
    if data.jobs.get(&job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    let tasks = data.tasks.entry(job.to_lowercase()).or_default();
    let resource = tasks
        .insert(&id, body, BatchError::exists("TaskExists", "task"))?
        .clone();
    state.changed.notify_one();
    Ok(created(
        &state,
        &format!("/jobs/{job}/tasks/{id}"),
        &resource,
    ))
}

async fn add_task_collection(
    State(state): State<Shared>,
    Path(job): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    let Some(Value::Array(items)) = body.get("value") else {
        return Err(BatchError::missing_property("value"));
    };
    if items.len() > MAX_TASKS_PER_COLLECTION {
        return Err(BatchError::invalid_property(
            "value",
            &items.len().to_string(),
            &format!("A task collection can contain at most {MAX_TASKS_PER_COLLECTION} tasks."),
        ));
    }
    let mut data = state.data();
    if data.jobs.get(&job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    let tasks = data.tasks.entry(job.to_lowercase()).or_default();
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let task_id = item
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let outcome = match item {
            Value::Object(map) => prepare_task(&state, &job, map.clone()).and_then(|(id, body)| {
                tasks
                    .insert(&id, body, BatchError::exists("TaskExists", "task"))
                    .cloned()
            }),
            _ => Err(BatchError::invalid_body("Each task must be a JSON object.")),
        };
        results.push(match outcome {
            Ok(resource) => json!({
                "status": "success",
                "taskId": task_id,
                "eTag": resource.etag(),
                "lastModified": resource.body.get("lastModified"),
                "location": resource.str("url"),
            }),
            Err(e) => json!({
                "status": if e.status.is_server_error() { "serverError" } else { "clientError" },
                "taskId": task_id,
                "error": {
                    "code": e.code,
                    "message": {"lang": "en-US", "value": e.message},
                    "values": e.values.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                },
            }),
        });
    }
    state.changed.notify_one();
    Ok(Json(json!({
        "odata.metadata": format!("{}/$metadata#taskaddresult", state.url),
        "value": results,
    }))
    .into_response())
}

async fn list_tasks(
    State(state): State<Shared>,
    Path(job): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let data = state.data();
    if data.jobs.get(&job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    let path = format!("/jobs/{job}/tasks");
    let empty = Collection::default();
    let tasks = data.tasks.get(&job.to_lowercase()).unwrap_or(&empty);
    list(&state, "tasks", &path, &query, tasks.all())
}

async fn get_task(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
) -> Result<Response, BatchError> {
    let data = state.data();
    if data.jobs.get(&job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    let resource = data
        .tasks
        .get(&job.to_lowercase())
        .and_then(|t| t.get(&task))
        .ok_or_else(|| BatchError::not_found("TaskNotFound", "task"))?;
    Ok(one(&state, "tasks", resource))
}

/// A task of a job, to change it.
fn task_mut<'a>(data: &'a mut Data, job: &str, task: &str) -> Result<&'a mut Resource, BatchError> {
    if data.jobs.get(job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    data.tasks
        .get_mut(&job.to_lowercase())
        .and_then(|t| t.get_mut(task))
        .ok_or_else(|| BatchError::not_found("TaskNotFound", "task"))
}

async fn terminate_task(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
) -> Result<Response, BatchError> {
    {
        let mut data = state.data();
        let resource = task_mut(&mut data, &job, &task)?;
        if resource.str("state") == Some("completed") {
            return Err(BatchError::new(
                StatusCode::CONFLICT,
                "TaskCompleted",
                "The specified task is already completed.",
            ));
        }
        // Completed now, whether it runs or not: its end can no longer change that.
        exec::end_task(resource, "The task was terminated by a request");
    }
    exec::stop_task(&state, &job, &task, exec::Stop::Terminate);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_task(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
) -> Result<Response, BatchError> {
    {
        let mut data = state.data();
        task_mut(&mut data, &job, &task)?;
        if let Some(tasks) = data.tasks.get_mut(&job.to_lowercase()) {
            tasks.remove(&task);
        }
    }
    exec::stop_task(&state, &job, &task, exec::Stop::Delete);
    Ok(StatusCode::OK.into_response())
}

async fn reactivate_task(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
) -> Result<Response, BatchError> {
    let mut data = state.data();
    let resource = task_mut(&mut data, &job, &task)?;
    let failed = resource.state() == "completed"
        && resource
            .body
            .get("executionInfo")
            .and_then(|e| e.get("result"))
            .and_then(Value::as_str)
            == Some("failure");
    if !failed {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "TaskNotFailed",
            "Only a completed task that failed can be reactivated.",
        ));
    }
    resource.update([
        ("state", Value::from("active")),
        ("stateTransitionTime", Value::from(now_string())),
        ("executionInfo", json!({"retryCount": 0, "requeueCount": 0})),
    ]);
    state.changed.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Gives a pool its nodes, unless its allocation was made to fail: then it has none and
/// reports the error in `resizeErrors`, as the service does.
pub(super) fn allocate(data: &mut Data, state: &AccountState, pool: &str, count: usize) {
    let start_task = data
        .pools
        .get(pool)
        .and_then(|p| p.body.get("startTask").cloned());
    match data.failing_pools.get(&pool.to_lowercase()).cloned() {
        None => exec::resize_nodes(
            &mut data.nodes,
            state.root.path(),
            pool,
            count,
            start_task.as_ref(),
        ),
        Some((code, message)) => {
            exec::resize_nodes(&mut data.nodes, state.root.path(), pool, 0, None);
            if let Some(resource) = data.pools.get_mut(pool) {
                resource.update([
                    ("currentDedicatedNodes", Value::from(0)),
                    ("currentLowPriorityNodes", Value::from(0)),
                    ("resizeErrors", json!([{"code": code, "message": message}])),
                ]);
            }
        }
    }
}

/// The pending (active or running), active and running tasks of jobs on a pool.
fn task_counts(data: &Data, pool: &str) -> HashMap<&'static str, i64> {
    let (mut active, mut running) = (0, 0);
    for job in data.jobs.all() {
        let on_pool = job
            .body
            .get("poolInfo")
            .and_then(|i| i.get("poolId"))
            .and_then(Value::as_str)
            .is_some_and(|p| p.eq_ignore_ascii_case(pool));
        if !on_pool || job.state() != "active" {
            continue;
        }
        let id = job.str("id").unwrap_or("").to_lowercase();
        for task in data.tasks.get(&id).into_iter().flat_map(|t| t.all()) {
            match task.str("state") {
                Some("active") => active += 1,
                Some("running") => running += 1,
                _ => {}
            }
        }
    }
    HashMap::from([
        ("$PendingTasks", active + running),
        ("$ActiveTasks", active),
        ("$RunningTasks", running),
    ])
}

/// The most nodes of each kind a pool may have here (the service's default quota is lower).
const MAX_POOL_NODES: i64 = 10_000;

/// Evaluates the formula of every autoscale pool and resizes it to the targets.
fn autoscale_pools(state: &AccountState) {
    let mut data = state.data();
    let pools: Vec<(String, String)> = data
        .pools
        .all()
        .filter(|p| p.body.get("enableAutoScale") == Some(&Value::Bool(true)))
        .filter_map(|p| {
            Some((
                p.str("id")?.to_string(),
                p.str("autoScaleFormula")?.to_string(),
            ))
        })
        .collect();
    for (pool, formula) in pools {
        let vars = task_counts(&data, &pool);
        let result = autoscale::evaluate(&formula, &vars);
        let Some(resource) = data.pools.get_mut(&pool) else {
            continue;
        };
        let run = match &result {
            Ok(t) => json!({"timestamp": now_string(), "results": format!(
                "$TargetDedicatedNodes={};$TargetLowPriorityNodes={}",
                t.dedicated.unwrap_or(0), t.low_priority.unwrap_or(0))}),
            Err(why) => {
                json!({"timestamp": now_string(), "error": {"code": "AutoScalingFormulaEvaluationError", "message": why}})
            }
        };
        let Ok(targets) = result else {
            resource.body.insert("autoScaleRun".into(), run);
            continue;
        };
        // As on the service, targets are clamped to what a pool may have.
        let (d, l) = (
            targets.dedicated.unwrap_or(0).clamp(0, MAX_POOL_NODES),
            targets.low_priority.unwrap_or(0).clamp(0, MAX_POOL_NODES),
        );
        let changed = resource
            .body
            .get("targetDedicatedNodes")
            .and_then(Value::as_i64)
            != Some(d)
            || resource
                .body
                .get("targetLowPriorityNodes")
                .and_then(Value::as_i64)
                != Some(l);
        resource.body.insert("autoScaleRun".into(), run);
        if changed {
            resource.update([
                ("targetDedicatedNodes", Value::from(d)),
                ("targetLowPriorityNodes", Value::from(l)),
                ("currentDedicatedNodes", Value::from(d)),
                ("currentLowPriorityNodes", Value::from(l)),
            ]);
            allocate(&mut data, state, &pool, usize::try_from(d + l).unwrap_or(0));
            state.changed.notify_one();
        }
    }
}

async fn enable_autoscale(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await?;
    check_known(&body, AUTOSCALE_PROPERTIES)?;
    let formula = require_str(&body, "autoScaleFormula")?.to_string();
    {
        let mut data = state.data();
        let vars = task_counts(&data, &pool);
        autoscale::evaluate(&formula, &vars)
            .map_err(|why| BatchError::invalid_property("autoScaleFormula", &formula, &why))?;
        let resource = data
            .pools
            .get_mut(&pool)
            .ok_or_else(|| BatchError::not_found("PoolNotFound", "pool"))?;
        let mut fields = vec![
            ("enableAutoScale", Value::Bool(true)),
            ("autoScaleFormula", Value::from(formula)),
        ];
        if let Some(interval) = body.get("autoScaleEvaluationInterval") {
            fields.push(("autoScaleEvaluationInterval", interval.clone()));
        }
        resource.update(fields);
    }
    autoscale_pools(&state);
    Ok(StatusCode::OK.into_response())
}

async fn disable_autoscale(
    State(state): State<Shared>,
    Path(pool): Path<String>,
) -> Result<Response, BatchError> {
    let mut data = state.data();
    let resource = data
        .pools
        .get_mut(&pool)
        .ok_or_else(|| BatchError::not_found("PoolNotFound", "pool"))?;
    resource.update([("enableAutoScale", Value::Bool(false))]);
    Ok(StatusCode::OK.into_response())
}

async fn list_nodes(
    State(state): State<Shared>,
    Path(pool): Path<String>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let data = state.data();
    if data.pools.get(&pool).is_none() {
        return Err(BatchError::not_found("PoolNotFound", "pool"));
    }
    let nodes: Vec<Resource> = data
        .nodes
        .get(&pool.to_lowercase())
        .map(|list| {
            list.iter()
                .filter_map(|n| match exec::node_json(&state.url, &pool, n) {
                    Value::Object(body) => Some(Resource::new(body, std::time::SystemTime::now())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    list(
        &state,
        "nodes",
        &format!("/pools/{pool}/nodes"),
        &query,
        nodes.iter(),
    )
}

async fn get_node(
    State(state): State<Shared>,
    Path((pool, node)): Path<(String, String)>,
) -> Result<Response, BatchError> {
    let data = state.data();
    if data.pools.get(&pool).is_none() {
        return Err(BatchError::not_found("PoolNotFound", "pool"));
    }
    let found = data
        .nodes
        .get(&pool.to_lowercase())
        .and_then(|list| list.iter().find(|n| n.id == node))
        .ok_or_else(|| BatchError::not_found("NodeNotFound", "node"))?;
    let mut body = exec::node_json(&state.url, &pool, found);
    body["odata.metadata"] = Value::String(format!("{}/$metadata#nodes/@Element", state.url));
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("state%20eq%20%27active%27"),
            "state eq 'active'"
        );
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%é1"), "%é1");
        assert_eq!(
            url_decode_pairs("api-version=2025-06-01&%24filter=id%20eq%20%27x%27"),
            vec![
                ("api-version".to_string(), "2025-06-01".to_string()),
                ("$filter".to_string(), "id eq 'x'".to_string())
            ]
        );
    }
}
