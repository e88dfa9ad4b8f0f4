//! The Batch SharedKey scheme: the string a client signs, and its verification.

use axum::http::{HeaderMap, Method};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The standard headers signed, in order.
const SIGNED_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// The canonical string of a request, as the Batch SharedKey scheme defines it. Query names are
/// used as given (`lowercase_names` lower-cases them, as the service's documentation does).
pub fn string_to_sign(
    method: &Method,
    headers: &HeaderMap,
    account: &str,
    path: &str,
    query: &[(String, String)],
    lowercase_names: bool,
) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut s = format!("{method}\n");
    for name in SIGNED_HEADERS {
        let mut value = header(name);
        if name == "content-length"
            && value.is_empty()
            && method != Method::GET
            && method != Method::HEAD
        {
            value = "0".into();
        }
        s.push_str(&value);
        s.push('\n');
    }
    let mut ocp: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("ocp-"))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    ocp.sort();
    for (n, v) in ocp {
        s.push_str(&format!("{n}:{v}\n"));
    }
    s.push_str(&format!("/{account}{path}"));
    let mut params: Vec<(String, String)> = query
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            let k = if lowercase_names {
                k.to_lowercase()
            } else {
                k.clone()
            };
            (k, v.clone())
        })
        .collect();
    params.sort();
    for (k, v) in params {
        s.push_str(&format!("\n{k}:{v}"));
    }
    s
}

/// The base64 HMAC-SHA256 of `text` under a base64 `key`, or `None` for a key that is not base64.
pub fn sign(key: &str, text: &str) -> Option<String> {
    let key = STANDARD.decode(key).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(text.as_bytes());
    Some(STANDARD.encode(mac.finalize().into_bytes()))
}

/// Whether `signature` signs the request, with query names as sent or lower-cased.
pub fn verify(
    key: &str,
    signature: &str,
    method: &Method,
    headers: &HeaderMap,
    account: &str,
    path: &str,
    query: &[(String, String)],
) -> bool {
    [false, true].into_iter().any(|lower| {
        let text = string_to_sign(method, headers, account, path, query, lower);
        sign(key, &text)
            .is_some_and(|expected| constant_time_eq(expected.as_bytes(), signature.as_bytes()))
    })
}

/// How far a signed request's date may be from now (the service allows 15 minutes).
pub const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Checks the date a SharedKey request signed (`ocp-date`, else `x-ms-date`, else `date`):
/// missing, unreadable or further than [`MAX_CLOCK_SKEW`] from now is an error saying which.
pub fn check_date(headers: &HeaderMap, now: std::time::SystemTime) -> Result<(), String> {
    let Some(text) = ["ocp-date", "x-ms-date", "date"]
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
    else {
        return Err("The request has no ocp-date, x-ms-date or date header.".into());
    };
    let date = httpdate::parse_http_date(text)
        .map_err(|_| format!("The request date `{text}` is not an HTTP date."))?;
    let skew = match now.duration_since(date) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > MAX_CLOCK_SKEW {
        return Err(format!(
            "The request date `{text}` is more than 15 minutes from the server's time."
        ));
    }
    Ok(())
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_python_sdk_layout() {
        // The layout the azure-batch SDK signs: 11 headers (content-length "0" for a body-less
        // POST), sorted ocp- headers, /account/path, sorted query pairs with names as sent.
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("ocp-date", "Tue, 24 Nov 2026 18:00:00 GMT".parse().unwrap());
        let q = vec![
            ("api-version".to_string(), "2025-06-01".to_string()),
            ("$filter".to_string(), "state eq 'active'".to_string()),
        ];
        let s = string_to_sign(&Method::POST, &h, "acct", "/pools", &q, false);
        assert_eq!(
            s,
            "POST\n\n\n0\n\napplication/json\n\n\n\n\n\n\nocp-date:Tue, 24 Nov 2026 18:00:00 GMT\n/acct/pools\n$filter:state eq 'active'\napi-version:2025-06-01"
        );
        let key = STANDARD.encode(b"secret");
        let sig = sign(&key, &s).unwrap();
        assert!(verify(&key, &sig, &Method::POST, &h, "acct", "/pools", &q));
        assert!(!verify(&key, &sig, &Method::POST, &h, "acct", "/jobs", &q));
        let other = STANDARD.encode(b"other");
        assert!(!verify(
            &other,
            &sig,
            &Method::POST,
            &h,
            "acct",
            "/pools",
            &q
        ));
    }

    #[test]
    fn request_dates_far_from_now_are_refused() {
        let now = std::time::SystemTime::now();
        let at = |t: std::time::SystemTime| {
            let mut h = HeaderMap::new();
            h.insert("ocp-date", httpdate::fmt_http_date(t).parse().unwrap());
            h
        };
        let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
        assert!(check_date(&at(now), now).is_ok());
        assert!(check_date(&at(now - minutes(14)), now).is_ok());
        assert!(check_date(&at(now + minutes(14)), now).is_ok());
        assert!(check_date(&at(now - minutes(16)), now).is_err());
        assert!(check_date(&at(now + minutes(16)), now).is_err());
        assert!(check_date(&HeaderMap::new(), now).is_err());
        let mut garbage = HeaderMap::new();
        garbage.insert("ocp-date", "yesterday".parse().unwrap());
        assert!(check_date(&garbage, now).is_err());
    }

    #[test]
    fn query_names_may_be_signed_as_sent_or_lower_cased() {
        let h = HeaderMap::new();
        let sent = vec![("MaxResults".to_string(), "10".to_string())];
        let key = STANDARD.encode(b"secret");
        for lower in [false, true] {
            let text = string_to_sign(&Method::GET, &h, "acct", "/pools", &sent, lower);
            let sig = sign(&key, &text).unwrap();
            assert!(
                verify(&key, &sig, &Method::GET, &h, "acct", "/pools", &sent),
                "{lower}"
            );
        }
    }
}
