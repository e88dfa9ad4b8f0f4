//! Answers in the service's shape: JSON bodies with `odata.metadata`, `ETag` and
//! `Last-Modified` headers, and paged lists.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::BatchError;
use super::query::ListOptions;
use super::resources::Resource;
use super::server::{AccountState, MAX_BODY};

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

pub(super) fn created(state: &AccountState, path: &str, resource: &Resource) -> Response {
    let url = format!("{}{path}", state.url);
    let mut response = StatusCode::CREATED.into_response();
    set_resource_headers(response.headers_mut(), resource);
    if let Ok(v) = HeaderValue::from_str(&url) {
        response.headers_mut().insert("location", v.clone());
        response.headers_mut().insert("dataserviceid", v);
    }
    response
}

pub(super) fn set_resource_headers(headers: &mut HeaderMap, resource: &Resource) {
    if let Ok(v) = HeaderValue::from_str(&resource.etag()) {
        headers.insert("etag", v);
    }
    let modified = httpdate::fmt_http_date(resource.last_modified);
    if let Ok(v) = HeaderValue::from_str(&modified) {
        headers.insert("last-modified", v);
    }
}

pub(super) fn one(state: &AccountState, entity: &str, resource: &Resource) -> Response {
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

pub(super) fn encode(s: &str) -> String {
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
