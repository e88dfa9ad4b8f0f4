//! The host's front door on a loopback port: HTTP triggers under `/<routePrefix>/` (keys in
//! `?code=` or `x-functions-key`), the admin API Microsoft's host has for keys and manual runs,
//! and the emulator's own admin calls. Every admin call needs the master key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::instance::Invoked;
use super::listener::{HOST_VERSION, invocation_headers, outputs, uuid_like};
use super::{AuthLevel, HostFaults, HostState, Output, Trigger};

/// Starts the front door; returns its URL and its task.
pub(super) async fn serve(
    state: Arc<HostState>,
) -> Result<(String, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("the Functions host cannot listen on loopback: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("the Functions host's address: {e}"))?;
    let router = Router::new().fallback(route).with_state(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("the Functions host's front door stopped: {e}");
        }
    });
    Ok((format!("http://{addr}"), task))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

fn query_pairs(uri: &Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The key a request carries (`x-functions-key`, else `?code=`).
fn key_of(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get("x-functions-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_pairs(uri).remove("code"))
}

fn is_master(state: &HostState, key: Option<&str>) -> bool {
    key.is_some_and(|k| k == state.master_key)
}

async fn route(
    State(state): State<Arc<HostState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let key = key_of(&headers, &uri);
    if path == "/" {
        return (StatusCode::OK, "The Redwood Functions host is running.").into_response();
    }
    if let Some(rest) = path.strip_prefix("/_emulator/functions/") {
        if !is_master(&state, key.as_deref()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "admin calls need the master key in x-functions-key",
            );
        }
        return emulator_admin(&state, &method, rest, &body);
    }
    if let Some(rest) = path.strip_prefix("/admin/") {
        if !is_master(&state, key.as_deref()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "admin calls need the master key in x-functions-key",
            );
        }
        return host_admin(&state, &method, rest, &body).await;
    }
    let prefix = format!("/{}/", state.app.route_prefix);
    let Some(route) = path.strip_prefix(prefix.as_str()).or_else(|| {
        state
            .app
            .route_prefix
            .is_empty()
            .then(|| path.trim_start_matches('/'))
    }) else {
        return error(StatusCode::NOT_FOUND, format!("no function at {path}"));
    };
    // As on Azure, an invocation runs to its end even when the caller hangs up: it runs on
    // its own task, so a dropped connection neither cuts it short nor leaks its instance slot.
    let route = route.to_string();
    let run = tokio::spawn(async move {
        http_trigger(&state, method, &uri, &route, headers, body, key).await
    });
    run.await.unwrap_or_else(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the invocation failed: {e}"),
        )
    })
}

/// `/_emulator/functions/{status,kill,faults}`.
fn emulator_admin(state: &HostState, method: &Method, call: &str, body: &Bytes) -> Response {
    match (method.as_str(), call) {
        ("GET", "status") => axum::Json(state.status()).into_response(),
        ("POST", "kill") => {
            let id = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["instance"].as_u64())
                .and_then(|i| u32::try_from(i).ok());
            match state.kill_instance(id) {
                Some(id) => axum::Json(json!({"killed": id})).into_response(),
                None => error(StatusCode::NOT_FOUND, "no such instance running"),
            }
        }
        ("POST", "faults") => match serde_json::from_slice::<HostFaults>(body) {
            Ok(f) if (0.0..=1.0).contains(&f.error_rate) => {
                if let Ok(mut faults) = state.faults.lock() {
                    *faults = f.clone();
                }
                axum::Json(f).into_response()
            }
            Ok(_) => error(
                StatusCode::BAD_REQUEST,
                "error_rate must be between 0 and 1",
            ),
            Err(e) => error(
                StatusCode::BAD_REQUEST,
                format!("the faults are not {{latency_ms, error_rate}}: {e}"),
            ),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no admin call {method} {call} (status, kill, faults)"),
        ),
    }
}

/// Microsoft's host admin API, as far as this host serves it.
async fn host_admin(state: &Arc<HostState>, method: &Method, call: &str, body: &Bytes) -> Response {
    let parts: Vec<&str> = call.split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["host", "status"]) => axum::Json(json!({
            "state": "Running",
            "version": HOST_VERSION,
            "instances": state.live().len(),
        }))
        .into_response(),
        ("GET", ["functions", name, "keys"]) => match state.function_keys.get(*name) {
            Some(k) => {
                axum::Json(json!({"keys": [{"name": "default", "value": k}]})).into_response()
            }
            None => error(StatusCode::NOT_FOUND, format!("no function `{name}`")),
        },
        ("POST", ["functions", name]) => {
            // A manual run of a non-HTTP function: `{"input": "..."}` → 202.
            let Some(f) = state.app.functions.get(*name) else {
                return error(StatusCode::NOT_FOUND, format!("no function `{name}`"));
            };
            let Trigger::Queue { binding, .. } = &f.trigger else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "HTTP functions are called at their route",
                );
            };
            let input = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["input"].as_str().map(str::to_string))
                .unwrap_or_default();
            let payload = json!({"Data": {binding.as_str(): input}, "Metadata": {"sys": {"MethodName": name, "RandGuid": uuid_like()}}});
            let (state, name) = (state.clone(), name.to_string());
            tokio::spawn(async move {
                if let Some(i) = state.instance_for_request().await {
                    i.begin();
                    let _ = i
                        .send(
                            Method::POST,
                            &format!("/{name}"),
                            &invocation_headers(&uuid_like()),
                            Bytes::from(payload.to_string()),
                            state.app.function_timeout,
                        )
                        .await;
                    i.end();
                }
            });
            StatusCode::ACCEPTED.into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no admin call {method} /admin/{call}"),
        ),
    }
}

/// Matches `route` against a function's route template (`items/{id}`): its parameters.
fn match_route(template: &str, route: &str) -> Option<BTreeMap<String, String>> {
    let t: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let r: Vec<&str> = route.split('/').filter(|s| !s.is_empty()).collect();
    if t.len() != r.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (t, r) in t.iter().zip(&r) {
        if let Some(name) = t.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            params.insert(name.trim_end_matches('?').to_string(), r.to_string());
        } else if !t.eq_ignore_ascii_case(r) {
            return None;
        }
    }
    Some(params)
}

async fn http_trigger(
    state: &Arc<HostState>,
    method: Method,
    uri: &Uri,
    route: &str,
    headers: HeaderMap,
    body: Bytes,
    key: Option<String>,
) -> Response {
    let found = state
        .app
        .functions
        .values()
        .filter(|f| !f.disabled)
        .find_map(|f| match &f.trigger {
            Trigger::Http {
                route: template, ..
            } => match_route(template, route).map(|p| (f, p)),
            _ => None,
        });
    let Some((function, params)) = found else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no HTTP function at /{}/{route}", state.app.route_prefix),
        );
    };
    let Trigger::Http {
        binding,
        auth_level,
        methods,
        ..
    } = &function.trigger
    else {
        return error(StatusCode::NOT_FOUND, "not an HTTP function");
    };
    let allowed = match auth_level {
        AuthLevel::Anonymous => true,
        AuthLevel::Function => key.as_deref().is_some_and(|k| {
            k == state.master_key
                || state
                    .function_keys
                    .get(&function.name)
                    .is_some_and(|f| f == k)
        }),
        AuthLevel::Admin => is_master(state, key.as_deref()),
    };
    if !allowed {
        return error(
            StatusCode::UNAUTHORIZED,
            format!(
                "function `{}` needs a key (?code= or x-functions-key)",
                function.name
            ),
        );
    }
    if !methods.is_empty() && !methods.iter().any(|m| m == method.as_str()) {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("function `{}` takes {}", function.name, methods.join(", ")),
        );
    }
    let Some(instance) = state.instance_for_request().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no instance of the handler could start",
        );
    };
    state.counters.invocations.fetch_add(1, Ordering::Relaxed);
    instance.begin();
    let (latency, fail) = state.fault();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let forwarded = state.app.forward_http
        && function
            .outputs
            .iter()
            .all(|o| matches!(o, Output::Http { .. }));
    let invoked = if fail {
        Invoked::Failed("an injected fault failed the invocation".into())
    } else if forwarded {
        let plain: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "host" | "content-length" | "connection"))
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        instance
            .send(
                method.clone(),
                path_and_query,
                &plain,
                body,
                state.app.function_timeout,
            )
            .await
    } else {
        let mut header_map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in &headers {
            if let Ok(v) = v.to_str() {
                header_map
                    .entry(k.to_string())
                    .or_default()
                    .push(v.to_string());
            }
        }
        let request = json!({
            "Url": format!("{}{}", state_url_hint(&headers), uri),
            "Method": method.as_str(),
            "Query": query_pairs(uri),
            "Headers": header_map,
            "Params": params,
            "Identities": [],
            "Body": String::from_utf8_lossy(&body),
        });
        let payload = json!({
            "Data": {binding.as_str(): request},
            "Metadata": {"Query": query_pairs(uri), "Headers": header_map, "sys": {"MethodName": function.name, "UtcNow": super::rfc3339(std::time::SystemTime::now()), "RandGuid": uuid_like()}}
        });
        instance
            .send(
                Method::POST,
                &format!("/{}", function.name),
                &invocation_headers(&uuid_like()),
                Bytes::from(payload.to_string()),
                state.app.function_timeout,
            )
            .await
    };
    instance.end();
    state.capacity.notify_waiters();
    let response = match invoked {
        Invoked::Answered {
            status,
            body,
            headers,
        } if forwarded => {
            let mut r = Response::builder().status(status);
            for (k, v) in headers.iter().filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "content-length" | "transfer-encoding" | "connection"
                )
            }) {
                r = r.header(k, v);
            }
            r.body(Body::from(body))
                .unwrap_or_else(|_| error(StatusCode::BAD_GATEWAY, "a bad answer"))
        }
        Invoked::Answered { status, body, .. } if (200..300).contains(&status) => {
            let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            outputs(state, &function.name, &answer).await;
            http_output(function, &answer)
        }
        Invoked::Answered { status, .. } => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the handler answered HTTP {status}"),
        ),
        Invoked::Failed(why) => error(StatusCode::INTERNAL_SERVER_ERROR, why),
        Invoked::TimedOut => {
            state.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            instance.kill();
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the invocation ran longer than functionTimeout",
            )
        }
    };
    if response.status().is_success() {
        state.counters.succeeded.fetch_add(1, Ordering::Relaxed);
    } else {
        state.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    response
}

fn state_url_hint(headers: &HeaderMap) -> String {
    headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default()
}

/// The HTTP response a handler's answer makes: its `http` output (`$return`: the return value).
fn http_output(function: &super::Function, answer: &Value) -> Response {
    let res = function.outputs.iter().find_map(|o| match o {
        Output::Http { name } if name == "$return" => Some(&answer["ReturnValue"]),
        Output::Http { name } => Some(&answer["Outputs"][name.as_str()]),
        _ => None,
    });
    let Some(res) = res.filter(|r| !r.is_null()) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let status = match &res["statusCode"] {
        Value::String(s) => s.parse().unwrap_or(200),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(200),
        _ => 200,
    };
    let body = match &res["body"] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut r = Response::builder().status(status);
    if let Some(h) = res["headers"].as_object() {
        for (k, v) in h {
            if let Some(v) = v.as_str() {
                r = r.header(k, v);
            }
        }
    }
    r.body(Body::from(body)).unwrap_or_else(|_| {
        error(
            StatusCode::BAD_GATEWAY,
            "the handler's response is not valid HTTP",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_templates() {
        assert_eq!(match_route("call", "call"), Some(BTreeMap::new()));
        assert_eq!(match_route("call", "other"), None);
        let p = match_route("items/{id}", "items/42").unwrap();
        assert_eq!(p["id"], "42");
        assert_eq!(match_route("items/{id}", "items"), None);
    }
}
