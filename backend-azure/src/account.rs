//! A storage account's credentials and endpoints, from a connection string or options. One
//! parser for every Azure service Redwood talks to (Blob, Queue).

use std::fmt;

use redwood_core::{Error, ErrorKind, Result};

/// Where the well-known development storage is (`UseDevelopmentStorage=true`).
const DEV_STORAGE_BLOB: &str = "http://127.0.0.1:10000/devstoreaccount1";
const DEV_STORAGE_QUEUE: &str = "http://127.0.0.1:10001/devstoreaccount1";
const DEV_STORAGE_ACCOUNT: &str = "devstoreaccount1";
const DEV_STORAGE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The credentials and endpoints of one storage account. `Debug` shows no secret.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct AccountSettings {
    /// The account name.
    pub account: Option<String>,
    /// The account key (base64), which can sign requests and mint SAS tokens.
    pub key: Option<String>,
    /// A SAS token (query string, no `?`).
    pub sas: Option<String>,
    /// The Blob service endpoint (no trailing `/`).
    pub endpoint: Option<String>,
    /// The Queue service endpoint (no trailing `/`).
    pub queue_endpoint: Option<String>,
}

impl fmt::Debug for AccountSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountSettings")
            .field("account", &self.account)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("sas", &self.sas.as_ref().map(|_| "<redacted>"))
            .field("endpoint", &self.endpoint)
            .field("queue_endpoint", &self.queue_endpoint)
            .finish()
    }
}

/// Parses an Azure storage connection string (`AccountName=…;AccountKey=…;BlobEndpoint=…`,
/// or `UseDevelopmentStorage=true`). An error names the part that is wrong, never a secret.
pub fn parse_connection_string(s: &str) -> Result<AccountSettings> {
    let mut out = AccountSettings::default();
    let mut protocol = "https".to_string();
    let mut suffix = "core.windows.net".to_string();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "connection string part `{}` is not key=value",
                    redact_part(part)
                ),
            ));
        };
        match k.to_ascii_lowercase().as_str() {
            "accountname" => out.account = Some(v.to_string()),
            "accountkey" => out.key = Some(v.to_string()),
            "sharedaccesssignature" => out.sas = Some(v.trim_start_matches('?').to_string()),
            "blobendpoint" => out.endpoint = Some(v.trim_end_matches('/').to_string()),
            "queueendpoint" => out.queue_endpoint = Some(v.trim_end_matches('/').to_string()),
            "defaultendpointsprotocol" => protocol = v.to_string(),
            "endpointsuffix" => suffix = v.to_string(),
            "usedevelopmentstorage" if v.eq_ignore_ascii_case("true") => {
                out.account = Some(DEV_STORAGE_ACCOUNT.into());
                out.key = Some(DEV_STORAGE_KEY.into());
                out.endpoint = Some(DEV_STORAGE_BLOB.into());
                out.queue_endpoint = Some(DEV_STORAGE_QUEUE.into());
            }
            _ => {} // TableEndpoint, FileEndpoint, ...: not used
        }
    }
    if let Some(account) = &out.account {
        // Azure's endpoints of the account where the string names none; beside a blob
        // endpoint of its own (an emulator's, a proxy's), the queue service is not known
        // unless that one is Azure's.
        if out.queue_endpoint.is_none() {
            out.queue_endpoint = match &out.endpoint {
                None => Some(format!("{protocol}://{account}.queue.{suffix}")),
                Some(blob) => blob
                    .contains(&format!("//{account}.blob."))
                    .then(|| blob.replacen(".blob.", ".queue.", 1)),
            };
        }
        if out.endpoint.is_none() {
            out.endpoint = Some(format!("{protocol}://{account}.blob.{suffix}"));
        }
    }
    Ok(out)
}

fn redact_part(part: &str) -> String {
    part.chars().take(12).collect::<String>() + "…"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_endpoint_is_derived_only_from_azure_endpoints() {
        let queue = |s: &str| parse_connection_string(s).unwrap().queue_endpoint;
        assert_eq!(
            queue("AccountName=a1;AccountKey=k==").as_deref(),
            Some("https://a1.queue.core.windows.net")
        );
        assert_eq!(
            queue("AccountName=a1;AccountKey=k==;BlobEndpoint=https://a1.blob.core.windows.net")
                .as_deref(),
            Some("https://a1.queue.core.windows.net")
        );
        assert_eq!(
            queue("AccountName=a1;AccountKey=k==;BlobEndpoint=http://127.0.0.1:9/a1"),
            None
        );
    }

    #[test]
    fn connection_strings() {
        let s = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=a1;AccountKey=k==;BlobEndpoint=http://127.0.0.1:1/a1/;QueueEndpoint=http://127.0.0.1:2/a1",
        )
        .unwrap();
        assert_eq!(s.account.as_deref(), Some("a1"));
        assert_eq!(s.key.as_deref(), Some("k=="));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:1/a1"));
        assert_eq!(s.queue_endpoint.as_deref(), Some("http://127.0.0.1:2/a1"));
        assert!(!format!("{s:?}").contains("k=="));

        let d = parse_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(d.endpoint.as_deref(), Some(DEV_STORAGE_BLOB));
        assert_eq!(d.queue_endpoint.as_deref(), Some(DEV_STORAGE_QUEUE));

        let c = parse_connection_string("AccountName=acct;AccountKey=x").unwrap();
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://acct.blob.core.windows.net")
        );
        assert_eq!(
            c.queue_endpoint.as_deref(),
            Some("https://acct.queue.core.windows.net")
        );
        let e = parse_connection_string("AccountKey")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not key=value"), "{e}");
    }
}
