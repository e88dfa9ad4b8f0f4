//! What every request goes through before its handler: panics caught, the api-version and the
//! signature (SharedKey or bearer) checked, admin calls JSON-only, unknown paths answered with
//! the service's OData error; and the query string decoded.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::admin;
use super::auth;
use super::error::BatchError;
use super::server::{API_VERSIONS, AccountState, MAX_BODY, Shared};

/// Turns a handler's panic into the service's 500 `InternalError`, so one request can never
/// take the emulator down or leave its connection hanging.
pub(super) async fn catch_panics(request: Request, next: Next) -> Response {
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

/// `application/x-www-form-urlencoded` pairs (`+` is a space); a malformed escape stays as
/// written.
fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

/// Every request: api-version, authentication, request ids; errors get the account's URL.
pub(super) async fn check_request(
    State(state): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    let client_request_id = request.headers().get("client-request-id").cloned();
    let request_id = format!("{:032x}", rand_id());
    // The emulator's own admin calls are outside the Azure API surface, but signed like it
    // (the account's key or bearer token), with JSON bodies only: no other local process and no
    // web page (a form post) can drive them.
    let admin = request.uri().path().starts_with("/_emulator/");
    let checked = if admin {
        authorize(&state, &request).and_then(|()| json_only(&request))
    } else if let Err(down) = super::outage::gate(&state).await {
        Err(down)
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

pub(super) async fn unknown_path(method: Method) -> BatchError {
    BatchError::new(
        StatusCode::BAD_REQUEST,
        "InvalidUri",
        format!("The requested URI does not represent any resource on the server ({method})."),
    )
}

/// A known path asked with a verb it does not take (`PUT /pools`, say).
pub(super) async fn unsupported_verb(method: Method) -> BatchError {
    BatchError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UnsupportedHttpVerb",
        format!("The resource does not support the HTTP verb {method}."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        let one = |q: &str| url_decode_pairs(q).remove(0).1;
        assert_eq!(one("f=state%20eq%20%27active%27"), "state eq 'active'");
        assert_eq!(one("f=a+b"), "a b");
        assert_eq!(one("f=100%"), "100%");
        assert_eq!(one("f=%é1"), "%é1");
        assert_eq!(
            url_decode_pairs("api-version=2025-06-01&%24filter=id%20eq%20%27x%27"),
            vec![
                ("api-version".to_string(), "2025-06-01".to_string()),
                ("$filter".to_string(), "id eq 'x'".to_string())
            ]
        );
    }
}
