//! Signing with a storage account's key: service SAS tokens (a container or one blob), account
//! SAS tokens (a whole service, as the Queue client uses), and the HMAC under them. The one
//! signer of the Azure crate.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use redwood_core::{Error, ErrorKind, Result};

/// The SAS version minted (the 2020-12-06 string-to-sign layout).
const SAS_VERSION: &str = "2022-11-02";

/// A service SAS query string for a container or one blob, signed with the account key.
pub(crate) fn service_sas(
    account: &str,
    key: &str,
    container: &str,
    blob: Option<&str>,
    permissions: &str,
    expiry: SystemTime,
) -> Result<String> {
    let expiry = iso8601_seconds(expiry);
    let resource = if blob.is_some() { "b" } else { "c" };
    let canonical = match blob {
        Some(b) => format!("/blob/{account}/{container}/{b}"),
        None => format!("/blob/{account}/{container}"),
    };
    // permissions, start, expiry, resource, identifier, IP, protocol, version, signed resource,
    // snapshot, encryption scope, then the five response-header overrides.
    let to_sign = [
        permissions,
        "",
        &expiry,
        &canonical,
        "",
        "",
        "https,http",
        SAS_VERSION,
        resource,
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let signature = sign_with_key(key, &to_sign)?;
    Ok(format!(
        "sv={SAS_VERSION}&sr={resource}&sp={}&se={}&spr=https,http&sig={}",
        encode_query(permissions),
        encode_query(&expiry),
        encode_query(&signature)
    ))
}

/// An account SAS query string for one service (`q`: Queue, `b`: Blob), for service-level,
/// container and object operations, signed with the account key.
pub(crate) fn account_sas(
    account: &str,
    key: &str,
    service: &str,
    permissions: &str,
    expiry: SystemTime,
) -> Result<String> {
    let expiry = iso8601_seconds(expiry);
    // account, permissions, service, resource types, start, expiry, IP, protocol, version,
    // encryption scope, and a final newline.
    let to_sign = format!(
        "{account}\n{permissions}\n{service}\nsco\n\n{expiry}\n\nhttps,http\n{SAS_VERSION}\n\n"
    );
    let signature = sign_with_key(key, &to_sign)?;
    Ok(format!(
        "sv={SAS_VERSION}&ss={service}&srt=sco&sp={}&se={}&spr=https,http&sig={}",
        encode_query(permissions),
        encode_query(&expiry),
        encode_query(&signature)
    ))
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn iso8601_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The base64 HMAC-SHA256 of `text` under a base64 account key.
pub(crate) fn sign_with_key(key: &str, text: &str) -> Result<String> {
    let key = STANDARD.decode(key).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            "the storage account key is not valid base64",
        )
        .with_source(e)
    })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| Error::new(ErrorKind::Config, "the storage account key is empty"))?;
    mac.update(text.as_bytes());
    Ok(STANDARD.encode(mac.finalize().into_bytes()))
}

/// `s` percent-encoded for a query value (unreserved characters kept).
pub(crate) fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A blob key as a URL path: each segment percent-encoded (unreserved characters kept).
pub fn encode_path(s: &str) -> String {
    s.split('/').map(encode_query).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_dates_and_encoding() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_547_000);
        assert_eq!(iso8601_seconds(t), "2026-11-24T19:03:20Z");
        assert_eq!(encode_query("a+b/c="), "a%2Bb%2Fc%3D");
        assert_eq!(encode_path("dir/a b.txt"), "dir/a%20b.txt");
        let q = service_sas("acct", "c2VjcmV0", "box", Some("x"), "r", t).unwrap();
        assert!(
            q.starts_with(
                "sv=2022-11-02&sr=b&sp=r&se=2026-11-24T19%3A03%3A20Z&spr=https,http&sig="
            ),
            "{q}"
        );
    }

    #[test]
    fn account_sas_names_its_service() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_547_000);
        let q = account_sas("acct", "c2VjcmV0", "q", "raup", t).unwrap();
        assert!(
            q.starts_with("sv=2022-11-02&ss=q&srt=sco&sp=raup&se=2026-11-24T19%3A03%3A20Z"),
            "{q}"
        );
        let e = account_sas("acct", "not base64!", "q", "r", t).unwrap_err();
        assert!(e.to_string().contains("not valid base64"), "{e}");
    }
}
