//! Conditional requests, as the service takes them on pools, jobs and tasks: `If-Match`,
//! `If-None-Match`, `If-Modified-Since` and `If-Unmodified-Since`. A write whose condition fails
//! is refused with 412 `ConditionNotMet`; a read gets 304 Not Modified.

use axum::http::{HeaderMap, StatusCode};

use super::error::BatchError;
use super::resources::Resource;

/// Whether the request reads the resource or changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// A get: a failed condition answers 304.
    Read,
    /// An update, replace, delete or action: a failed condition answers 412.
    Write,
}

/// Checks the request's conditional headers against the resource's ETag and last change.
pub(super) fn check(
    headers: &HeaderMap,
    resource: &Resource,
    access: Access,
) -> Result<(), BatchError> {
    let etag = resource.etag();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let matches = |list: &str| {
        list.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag == etag || tag.trim_start_matches("W/") == etag)
    };
    // Times compare at whole seconds, the precision of an HTTP date.
    let modified = resource
        .last_modified
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let since = |name: &str| {
        header(name)
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    let met = header("if-match").is_none_or(matches)
        && header("if-none-match").is_none_or(|list| !matches(list))
        && since("if-modified-since").is_none_or(|t| modified > t)
        && since("if-unmodified-since").is_none_or(|t| modified <= t);
    if met {
        return Ok(());
    }
    Err(match access {
        Access::Read => BatchError::new(
            StatusCode::NOT_MODIFIED,
            "ConditionNotMet",
            "The condition specified in the conditional header(s) was not met for a read operation.",
        ),
        Access::Write => BatchError::new(
            StatusCode::PRECONDITION_FAILED,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::{Map, Value};
    use std::time::{Duration, SystemTime};

    fn resource() -> Resource {
        let mut body = Map::new();
        body.insert("eTag".into(), Value::from("\"0xABC\""));
        Resource::new(
            body,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        )
    }

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn etags_and_dates_decide() {
        let r = resource();
        assert!(check(&HeaderMap::new(), &r, Access::Write).is_ok());
        assert!(check(&with("if-match", "\"0xABC\""), &r, Access::Write).is_ok());
        assert!(check(&with("if-match", "*"), &r, Access::Write).is_ok());
        let stale = check(&with("if-match", "\"0x1\""), &r, Access::Write).unwrap_err();
        assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(stale.code, "ConditionNotMet");
        let same = check(&with("if-none-match", "\"0xABC\""), &r, Access::Read).unwrap_err();
        assert_eq!(same.status, StatusCode::NOT_MODIFIED);
        let later =
            httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000));
        assert!(check(&with("if-modified-since", &later), &r, Access::Read).is_err());
        assert!(check(&with("if-unmodified-since", &later), &r, Access::Write).is_ok());
        let earlier = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH);
        assert!(check(&with("if-unmodified-since", &earlier), &r, Access::Write).is_err());
    }
}
