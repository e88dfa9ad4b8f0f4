//! The Batch SharedKey scheme, client side: the canonical string of a request and its
//! signature. (The emulator has its own, independent implementation of the server side, and
//! Microsoft's SDK checks that one; sharing code would hide a bug on both sides.)

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use sha2::Sha256;

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

/// The `Authorization` header value for a request.
pub(crate) fn authorization(
    account: &str,
    key: &str,
    method: &reqwest::Method,
    url: &reqwest::Url,
    headers: &HeaderMap,
) -> Result<String, String> {
    let mut text = format!("{method}\n");
    for name in SIGNED_HEADERS {
        let mut value = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if name == "content-length"
            && value.is_empty()
            && method != reqwest::Method::GET
            && method != reqwest::Method::HEAD
        {
            value = "0".into();
        }
        text.push_str(&value);
        text.push('\n');
    }
    let mut ocp: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("ocp-"))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    ocp.sort();
    for (n, v) in ocp {
        text.push_str(&format!("{n}:{v}\n"));
    }
    text.push_str(&format!("/{account}{}", url.path()));
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_lowercase(), v.into_owned()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    query.sort();
    for (k, v) in query {
        text.push_str(&format!("\n{k}:{v}"));
    }
    let key = STANDARD
        .decode(key)
        .map_err(|_| format!("the key of Batch account `{account}` is not valid base64"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| format!("the key of Batch account `{account}` is empty"))?;
    mac.update(text.as_bytes());
    Ok(format!(
        "SharedKey {account}:{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}
