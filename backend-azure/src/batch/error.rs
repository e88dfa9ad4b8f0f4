//! `parse_error`: the Batch service's OData error body turned into a Redwood error, with 429,
//! 5xx and `ServerBusy` marked retryable.

use redwood_core::{Error, ErrorKind};
use reqwest::StatusCode;
use serde_json::Value;

/// Whether a status is worth retrying.
pub(crate) fn is_retryable(status: StatusCode, code: &str) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() || code == "ServerBusy"
}

/// The Redwood error for a failed Batch request.
pub(crate) fn parse_error(
    account: &str,
    operation: &'static str,
    status: StatusCode,
    request_id: Option<&str>,
    body: &[u8],
) -> Error {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = json["code"].as_str().unwrap_or("").to_string();
    let message = json["message"]["value"]
        .as_str()
        .or_else(|| json["message"].as_str())
        .unwrap_or("")
        .to_string();
    let details: Vec<String> = json["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some(format!("{}={}", v["key"].as_str()?, v["value"].as_str()?)))
        .collect();
    let kind = match (status.as_u16(), code.as_str()) {
        (404, _) => ErrorKind::NotFound,
        (401 | 403, _) => ErrorKind::Config,
        (400 | 409 | 413, _) => ErrorKind::InvalidInput,
        _ => ErrorKind::Backend,
    };
    let mut text = if code.is_empty() {
        format!("Batch account `{account}` answered HTTP {status}")
    } else {
        format!("Batch account `{account}` answered {code} (HTTP {status}): {message}")
    };
    if code == "AuthenticationFailed" {
        text.push_str(" - check the account name and key (or token) configured for it");
    }
    if !details.is_empty() {
        text.push_str(&format!(" [{}]", details.join(", ")));
    }
    let mut error = Error::new(kind, text)
        .with_operation(operation)
        .set_retryable(is_retryable(status, &code));
    if let Some(id) = request_id {
        error = error.with_context("request-id", id);
    }
    if !code.is_empty() {
        error = error.with_service_code(code);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_errors_become_redwood_errors() {
        let body = br#"{"odata.metadata":"x","code":"PoolNotFound","message":{"lang":"en-US","value":"The specified pool does not exist."},"values":[]}"#;
        let e = parse_error("acct", "get_pool", StatusCode::NOT_FOUND, Some("r1"), body);
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.service_code(), Some("PoolNotFound"));
        assert!(!e.is_retryable());
        let s = e.to_string();
        assert!(
            s.contains("PoolNotFound") && s.contains("acct") && s.contains("r1"),
            "{s}"
        );

        let busy = br#"{"code":"ServerBusy","message":{"lang":"en-US","value":"busy"}}"#;
        assert!(parse_error("a", "op", StatusCode::SERVICE_UNAVAILABLE, None, busy).is_retryable());
        let bare = parse_error("a", "op", StatusCode::TOO_MANY_REQUESTS, None, b"");
        assert!(bare.is_retryable() && bare.service_code().is_none());
        let auth = br#"{"code":"AuthenticationFailed","message":{"lang":"en-US","value":"no"}}"#;
        let e = parse_error("a", "op", StatusCode::FORBIDDEN, None, auth);
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.is_retryable() && e.to_string().contains("key"));
    }
}
