//! The one way this crate builds an HTTP client: reqwest is built without a TLS provider of
//! its own (a lean dependency tree), so rustls' ring provider is installed first.

use std::time::Duration;

use redwood_core::{Error, ErrorKind, Result};

/// An HTTP client whose requests end after `timeout` (none: no limit of its own).
/// `plain_http`: every URL is `http://` (an emulator), so no root certificates are loaded,
/// which would be most of a short task's start-up.
pub(crate) fn http_client(timeout: Option<Duration>, plain_http: bool) -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder();
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    if plain_http {
        builder = builder.tls_certs_only(Vec::new());
    }
    builder.build().map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!("cannot build an HTTP client: {e}"),
        )
    })
}
