//! `gs://<bucket>/<prefix>`: Google Cloud Storage through object_store's GCS client. Options are
//! object_store's `GoogleConfigKey` names (`service_account`, `service_account_key`,
//! `application_credentials`, `base_url`, `skip_signature`, …, with or without `google_`);
//! what they leave out comes from the `GOOGLE_*` environment variables (and Google's
//! application default credentials). `endpoint` is another name for `base_url` (an emulator).

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use redwood_core::Result;
use redwood_core::storage::Storage;
use redwood_core::storage::scheme::StorageScheme;

use crate::bucket::{Bucket, Provider, config_error, split_url, unknown_option};

inventory::submit! {
    StorageScheme {
        schemes: &["gs"],
        open,
    }
}

/// Google's endpoint, when no other is given.
const GOOGLE_BASE_URL: &str = "https://storage.googleapis.com";

/// Opens `gs://<bucket>/<prefix>` with `options` (object_store's GCS keys).
pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Storage> {
    let (bucket, prefix) = split_url(Provider::Gcs, url)?;
    let mut builder = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(bucket)
        .with_retry(crate::retry_config());
    for (key, value) in options {
        let name = match key.as_str() {
            "endpoint" | "endpoint_url" => "base_url",
            other => other,
        };
        let parsed: GoogleConfigKey = name.parse().map_err(|_| {
            unknown_option(
                url,
                key,
                "object_store's GCS keys: service_account, service_account_key, \
                 application_credentials, endpoint (base_url), skip_signature, …",
            )
        })?;
        if matches!(parsed, GoogleConfigKey::Bucket) {
            return Err(config_error(
                url,
                "the bucket is named by the URL (gs://<bucket>/<prefix>), not by an option",
            ));
        }
        builder = builder.with_config(parsed, value);
    }
    let base_url = builder.get_config_value(&GoogleConfigKey::BaseUrl);
    if base_url
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"))
    {
        builder =
            builder.with_client_options(object_store::ClientOptions::new().with_allow_http(true));
    }
    crate::install_tls_provider();
    let store = builder.build().map_err(|e| {
        config_error(
            url,
            format!(
                "cannot build the Google Cloud Storage client: {e}; give credentials in \
                 storage_options (service_account, service_account_key) or \
                 GOOGLE_APPLICATION_CREDENTIALS"
            ),
        )
    })?;
    let endpoint = base_url.unwrap_or_else(|| GOOGLE_BASE_URL.into());
    let identity = format!("{}/{bucket}", endpoint.trim_end_matches('/'));
    let store = Arc::new(store);
    let container = Arc::new(Bucket {
        provider: Provider::Gcs,
        name: bucket.to_string(),
        signer: store.clone(),
    });
    Ok(Storage::from_store(store, url, prefix, true)
        .with_container(container)
        .with_identity(identity))
}
