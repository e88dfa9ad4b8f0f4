#![deny(missing_docs)]
//! S3 (`s3://bucket/prefix`, feature `s3`) and Google Cloud Storage (`gs://bucket/prefix`,
//! feature `gcs`) for Redwood, through object_store's own clients. Each registers a
//! [`StorageScheme`](redwood_core::storage::scheme::StorageScheme) at link time, so
//! `Storage::open_with` and the `storage` setting of a profile reach it by URL.
//!
//! Credentials come from `storage_options` (object_store's configuration keys) and else from
//! the provider's usual environment variables (`AWS_*`, `GOOGLE_*`); an `endpoint` option
//! points either at an emulator or an S3-compatible service.

use redwood_core::retry::RetryPolicy;

#[cfg(any(feature = "s3", feature = "gcs"))]
mod bucket;
#[cfg(feature = "gcs")]
pub mod gcs;
#[cfg(feature = "s3")]
pub mod s3;

/// Names the stores' entry points so the crate is linked in (its storage schemes register
/// themselves at link time); the `redwood` crate calls it.
pub fn link() {
    #[cfg(feature = "s3")]
    std::hint::black_box(s3::open as redwood_core::storage::scheme::OpenFn);
    #[cfg(feature = "gcs")]
    std::hint::black_box(gcs::open as redwood_core::storage::scheme::OpenFn);
}

/// Storage's retry policy ([`RetryPolicy::STORAGE`]) in object_store's terms, for every
/// object_store client Redwood builds (here and in the Azure crate): the client retries each
/// request (a list page, a multipart part) with these numbers, and `Storage` retries only what
/// it did not (see `redwood_core::Error::storage`), so requests are never retried twice over.
pub fn retry_config() -> object_store::RetryConfig {
    let policy = RetryPolicy::STORAGE;
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: policy.first_backoff,
            max_backoff: policy.max_backoff,
            base: 2.0,
        },
        max_retries: policy.attempts.saturating_sub(1) as usize,
        retry_timeout: policy.deadline,
    }
}

/// Installs rustls' ring provider for the HTTP client (built without one, as the Azure store
/// is, so no aws-lc build); a provider already installed stays.
#[cfg(any(feature = "s3", feature = "gcs"))]
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
