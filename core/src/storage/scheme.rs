//! Storage schemes by URL: a crate that adds a kind of store (`az://` in `redwood-azure`)
//! registers a [`StorageScheme`] at link time, and [`super::Storage::open_with`] picks one by the
//! URL's scheme. `file://` and `memory://` are core's own.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::storage::Storage;

/// Opens a store from its URL and `storage_options`.
pub type OpenFn = fn(&str, &BTreeMap<String, String>) -> Result<Storage>;

/// A kind of store that can be named by URL in the configuration.
#[derive(Debug)]
pub struct StorageScheme {
    /// The URL schemes it serves, without `://` (`az`, `azure`).
    pub schemes: &'static [&'static str],
    /// Opens a store.
    pub open: OpenFn,
}

inventory::collect!(StorageScheme);

/// Every scheme Redwood has, and the feature of the `redwood` crate that links it in.
const SCHEME_FEATURES: &[(&str, &str)] = &[
    ("az", "azure"),
    ("azure", "azure"),
    ("s3", "s3"),
    ("gs", "gcs"),
];

/// The registered scheme serving `scheme`, if this build has one.
pub(crate) fn find(scheme: &str) -> Option<&'static StorageScheme> {
    inventory::iter::<StorageScheme>
        .into_iter()
        .find(|s| s.schemes.contains(&scheme))
}

/// The feature that adds `scheme`, when this build lacks it but Redwood has it.
pub(crate) fn feature_for(scheme: &str) -> Option<&'static str> {
    SCHEME_FEATURES
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, f)| *f)
}

/// The schemes this build can open, sorted, as `scheme://`.
pub(crate) fn known() -> Vec<String> {
    let mut all: Vec<String> = ["file", "memory"]
        .into_iter()
        .map(String::from)
        .chain(
            inventory::iter::<StorageScheme>
                .into_iter()
                .flat_map(|s| s.schemes.iter().map(|x| x.to_string())),
        )
        .map(|s| format!("{s}://"))
        .collect();
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use crate::storage::Storage;

    #[test]
    fn schemes_this_build_lacks_are_named() {
        // redwood-core alone registers no scheme.
        let az = Storage::open("az://box/prefix").unwrap_err().to_string();
        assert!(az.contains("enable the `azure` feature"), "{az}");
        let s3 = Storage::open("s3://bucket").unwrap_err().to_string();
        assert!(s3.contains("enable the `s3` feature"), "{s3}");
        let gs = Storage::open("gs://bucket").unwrap_err().to_string();
        assert!(gs.contains("enable the `gcs` feature"), "{gs}");
        let hdfs = Storage::open("hdfs://x").unwrap_err().to_string();
        assert!(
            hdfs.contains("unsupported storage scheme `hdfs`")
                && hdfs.contains("file://, memory://"),
            "{hdfs}"
        );
        let none = Storage::open("just-a-folder").unwrap_err().to_string();
        assert!(
            none.contains("is not a storage URL: write file://just-a-folder"),
            "{none}"
        );
    }
}
