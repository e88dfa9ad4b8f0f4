//! `s3://<bucket>/<prefix>`: Amazon S3 and S3-compatible services through object_store's S3
//! client. Options are object_store's `AmazonS3ConfigKey` names (`access_key_id`,
//! `secret_access_key`, `region`, `endpoint`, `session_token`, …, with or without `aws_`);
//! what they leave out comes from the `AWS_*` environment variables. An `http://` endpoint
//! (an emulator) is allowed without saying `allow_http`.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use redwood_core::Result;
use redwood_core::storage::Storage;
use redwood_core::storage::scheme::StorageScheme;

use crate::bucket::{Bucket, Provider, config_error, split_url, unknown_option};

inventory::submit! {
    StorageScheme {
        schemes: &["s3"],
        open,
    }
}

/// Opens `s3://<bucket>/<prefix>` with `options` (object_store's S3 keys).
pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Storage> {
    let (bucket, prefix) = split_url(Provider::S3, url)?;
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(crate::retry_config());
    for (key, value) in options {
        let parsed: AmazonS3ConfigKey = key.parse().map_err(|_| {
            unknown_option(
                url,
                key,
                "object_store's S3 keys: access_key_id, secret_access_key, session_token, \
                 region, endpoint, virtual_hosted_style_request, skip_signature, …",
            )
        })?;
        if matches!(parsed, AmazonS3ConfigKey::Bucket) {
            return Err(config_error(
                url,
                "the bucket is named by the URL (s3://<bucket>/<prefix>), not by an option",
            ));
        }
        builder = builder.with_config(parsed, value);
    }
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    if endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"))
    {
        builder = builder.with_allow_http(true);
    }
    let region = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".into());
    crate::install_tls_provider();
    let store = builder.build().map_err(|e| {
        config_error(
            url,
            format!(
                "cannot build the S3 client: {e}; give credentials in storage_options \
                 (access_key_id, secret_access_key, region, endpoint) or the AWS_* variables"
            ),
        )
    })?;
    // Two services may each have a bucket of this name; the endpoint tells them apart.
    let identity = match &endpoint {
        Some(e) => format!("{}/{bucket}", e.trim_end_matches('/')),
        None => format!("s3://{bucket}@{region}"),
    };
    let store = Arc::new(store);
    let container = Arc::new(Bucket {
        provider: Provider::S3,
        name: bucket.to_string(),
        signer: store.clone(),
    });
    Ok(Storage::from_store(store, url, prefix, true)
        .with_container(container)
        .with_identity(identity))
}
