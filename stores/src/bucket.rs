//! What the S3 and GCS stores share: splitting a `scheme://bucket/prefix` URL, checking the
//! bucket name, naming a refused option, and the bucket behind a [`Storage`] (which signs
//! one-object URLs with object_store's signer and never creates a bucket itself).

use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt;
use object_store::path::Path;
use object_store::signer::Signer;
use redwood_core::storage::{Access, Container};
use redwood_core::{Error, ErrorKind, Result};

/// The kind of store, for URLs and messages.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(all(feature = "s3", feature = "gcs")), allow(dead_code))]
pub(crate) enum Provider {
    /// Amazon S3 or an S3-compatible service.
    S3,
    /// Google Cloud Storage.
    Gcs,
}

impl Provider {
    /// The URL scheme, without `://`.
    pub(crate) fn scheme(self) -> &'static str {
        match self {
            Provider::S3 => "s3",
            Provider::Gcs => "gs",
        }
    }

    /// The provider's name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Provider::S3 => "S3",
            Provider::Gcs => "Google Cloud Storage",
        }
    }

    /// The command that makes a bucket, for the error a missing bucket gets.
    fn make_bucket(self, bucket: &str) -> String {
        match self {
            Provider::S3 => format!("aws s3 mb s3://{bucket}"),
            Provider::Gcs => format!("gcloud storage buckets create gs://{bucket}"),
        }
    }
}

/// A configuration error about the store at `url`.
pub(crate) fn config_error(url: &str, why: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, why.into())
        .with_operation("Storage::open")
        .with_context("storage", url)
}

/// The bucket and the prefix of `scheme://bucket/prefix`, the bucket's name checked.
pub(crate) fn split_url(provider: Provider, url: &str) -> Result<(&str, &str)> {
    let scheme = provider.scheme();
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| config_error(url, format!("not a {scheme}:// URL")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(config_error(
            url,
            format!("{scheme}:// needs a bucket: {scheme}://<bucket>/<prefix>"),
        ));
    }
    if !valid_bucket_name(provider, bucket) {
        return Err(config_error(
            url,
            format!(
                "`{bucket}` is not a valid {} bucket name (3-63 lower-case letters, digits, dots \
                 and hyphens{}, starting and ending with a letter or digit)",
                provider.name(),
                match provider {
                    Provider::S3 => "",
                    Provider::Gcs => " or underscores",
                }
            ),
        ));
    }
    if prefix.contains("//") || prefix.contains('?') || prefix.contains('#') {
        return Err(config_error(
            url,
            format!("the prefix `{prefix}` is not a plain path (no `//`, `?` or `#`)"),
        ));
    }
    Ok((bucket, prefix.trim_end_matches('/')))
}

fn valid_bucket_name(provider: Provider, name: &str) -> bool {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'.' | b'-')
            || (matches!(provider, Provider::Gcs) && *b == b'_')
    };
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(allowed)
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

/// The error an option object_store does not know gets.
pub(crate) fn unknown_option(url: &str, key: &str, known: &str) -> Error {
    config_error(
        url,
        format!(
            "unknown storage option `{key}` (known: {known}; see the README's Storage section)"
        ),
    )
}

/// The bucket a store writes to: signs one-object URLs and says how to make a missing bucket
/// (Redwood does not create buckets: on S3 and GCS a bucket has a region, a billing account and
/// a globally unique name, which are the owner's choices).
pub(crate) struct Bucket {
    pub(crate) provider: Provider,
    pub(crate) name: String,
    pub(crate) signer: Arc<dyn Signer>,
}

impl Bucket {
    /// The error of a bucket that is not there.
    fn missing(&self) -> Error {
        Error::new(
            ErrorKind::Storage,
            format!(
                "{} bucket `{}` does not exist (or these credentials cannot see it); Redwood does \
                 not create buckets: create it first (`{}`)",
                self.provider.name(),
                self.name,
                self.provider.make_bucket(&self.name)
            ),
        )
    }
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("provider", &self.provider.name())
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Container for Bucket {
    fn name(&self) -> &str {
        &self.name
    }

    async fn create(&self) -> Result<()> {
        Err(self.missing())
    }

    fn missing_error(&self, e: &object_store::Error) -> Option<Error> {
        // S3 and GCS's XML API both answer a missing bucket with the code `NoSuchBucket`.
        e.to_string()
            .contains("NoSuchBucket")
            .then(|| self.missing())
    }

    fn signed_url(&self, blob: Option<&str>, access: Access, expiry: SystemTime) -> Result<String> {
        let unsupported = |why: String| {
            Error::new(ErrorKind::Unsupported, why).with_context("bucket", &self.name)
        };
        let Some(blob) = blob else {
            return Err(unsupported(format!(
                "{} signs one object per URL: a URL to the whole bucket needs az:// storage",
                self.provider.name()
            )));
        };
        let method = match access {
            Access::READ => http::Method::GET,
            Access::WRITE => http::Method::PUT,
            other => {
                return Err(unsupported(format!(
                    "a {} signed URL grants one method: read or write, not {other:?}",
                    self.provider.name()
                )));
            }
        };
        let path = Path::parse(blob).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("`{blob}` is not an object key: {e}"),
            )
        })?;
        let valid_for = expiry
            .duration_since(SystemTime::now())
            .map_err(|_| unsupported("a signed URL cannot expire in the past".into()))?;
        // Credentials held here (an access key, a service account key) sign at once; the others
        // would need a network round trip, which this synchronous call cannot make.
        match self
            .signer
            .signed_url(method, &path, valid_for)
            .now_or_never()
        {
            Some(Ok(url)) => Ok(url.to_string()),
            Some(Err(e)) => Err(Error::new(
                ErrorKind::Storage,
                format!("cannot sign a URL for `{blob}`: {e}"),
            )
            .with_context("bucket", &self.name)),
            None => Err(unsupported(format!(
                "signing {} URLs needs credentials held by this process (an access key, or a \
                 service account key), not ones fetched from a metadata service",
                self.provider.name()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        assert_eq!(
            split_url(Provider::S3, "s3://my-bucket/a/b/").unwrap(),
            ("my-bucket", "a/b")
        );
        assert_eq!(split_url(Provider::Gcs, "gs://b_1x").unwrap(), ("b_1x", ""));
        let e = split_url(Provider::S3, "s3://").unwrap_err().to_string();
        assert!(e.contains("needs a bucket"), "{e}");
        let e = split_url(Provider::S3, "s3://My_Bucket/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid S3 bucket name"), "{e}");
        let e = split_url(Provider::S3, "s3://b_1x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid"), "{e}");
        let e = split_url(Provider::Gcs, "gs://ok-bucket/a//b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a plain path"), "{e}");
        let e = split_url(Provider::Gcs, "s3://ok-bucket")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a gs:// URL"), "{e}");
    }
}
