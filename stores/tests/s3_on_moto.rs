//! `s3://` against a real S3 emulator (moto, pinned; see `redwood_emulator::s3`).

use std::collections::BTreeMap;
use std::time::Duration;

use object_store::path::Path;
use redwood_core::storage::{Access, Storage};
use redwood_emulator::s3::S3Emulator;

/// A secret moto accepts (it takes any), distinct enough to search for.
const SECRET: &str = "Zm9vYmFyLXNlY3JldC1mb3ItdGhlLXRlc3Q";

fn options(s3: &S3Emulator) -> BTreeMap<String, String> {
    let mut options: BTreeMap<String, String> = s3.storage_options().into_iter().collect();
    options.insert("secret_access_key".into(), SECRET.into());
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_reads_writes_lists_signs_and_names_a_missing_bucket() {
    redwood_stores::link();
    let s3 = S3Emulator::start().await.unwrap();
    s3.create_bucket("stores-test").await.unwrap();
    let store = Storage::open_with("s3://stores-test/some/prefix", &options(&s3)).unwrap();
    assert_eq!(store.identity(), format!("{}/stores-test", s3.endpoint()));
    let debug = format!("{store:?}");
    assert!(!debug.contains(SECRET), "{debug}");

    // Reads and writes under the prefix.
    let key = store.layout().data("hello.txt");
    assert!(key.as_ref().starts_with("some/prefix/"), "{key}");
    store.put(&key, &b"hello s3"[..]).await.unwrap();
    assert_eq!(&store.get(&key).await.unwrap()[..], b"hello s3");
    assert_eq!(&store.get_range(&key, 6..8).await.unwrap()[..], b"s3");
    assert!(store.exists(&key).await.unwrap());
    // A conditional create does not overwrite someone else's object.
    assert!(!store.put_if_absent(&key, &b"other"[..]).await.unwrap());
    let fresh = store.layout().data("fresh");
    assert!(store.put_if_absent(&fresh, &b"mine"[..]).await.unwrap());
    // A large object goes up in parts.
    let big: Vec<u8> = (0..(40u32 << 20)).map(|i| (i % 251) as u8).collect();
    let big_key = store.layout().data("big");
    store.put(&big_key, big.clone()).await.unwrap();
    assert_eq!(store.get(&big_key).await.unwrap().len(), big.len());
    let listed = store.list(&store.layout().data("")).await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");

    // Signed URLs: one object, one method.
    let signed_key = store.layout().data("signed");
    let write = store
        .signed_url(Some(&signed_key), Access::WRITE, Duration::from_secs(600))
        .unwrap();
    assert!(write.contains("X-Amz-Signature="), "{write}");
    assert!(!write.contains(SECRET), "{write}");
    let http = reqwest_client();
    let put = http.put(&write).body("from a worker").send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    assert_eq!(&store.get(&signed_key).await.unwrap()[..], b"from a worker");
    let read = store
        .signed_url(Some(&signed_key), Access::READ, Duration::from_secs(600))
        .unwrap();
    let got = http.get(&read).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"from a worker");
    let e = store
        .signed_url(None, Access::READ_LIST, Duration::from_secs(600))
        .unwrap_err()
        .to_string();
    assert!(e.contains("one object per URL"), "{e}");

    assert_eq!(
        store.delete_prefix(&store.layout().data("")).await.unwrap(),
        4
    );
    assert!(
        store
            .list(&store.layout().data(""))
            .await
            .unwrap()
            .is_empty()
    );

    // A bucket that does not exist: a clear error naming it and how to make it.
    let missing = Storage::open_with("s3://no-such-bucket/x", &options(&s3)).unwrap();
    let e = missing
        .put(&Path::from("x/k"), &b"v"[..])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bucket `no-such-bucket` does not exist") && e.contains("aws s3 mb"),
        "{e}"
    );
    assert!(!e.contains(SECRET), "{e}");
    // Listing it says the same (Redwood makes no bucket, so it is not "empty").
    let e = missing
        .list(&Path::from("x"))
        .await
        .expect_err("a missing bucket lists as an error")
        .to_string();
    assert!(
        e.contains("bucket `no-such-bucket` does not exist") && e.contains("aws s3 mb"),
        "{e}"
    );
}

#[test]
fn bad_s3_settings_name_what_is_wrong() {
    redwood_stores::link();
    let mut opts = BTreeMap::new();
    opts.insert("acess_key_id".to_string(), "x".to_string());
    let e = Storage::open_with("s3://good-bucket/x", &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown storage option `acess_key_id`"), "{e}");
    let mut opts = BTreeMap::new();
    opts.insert("bucket".to_string(), "other".to_string());
    let e = Storage::open_with("s3://good-bucket/x", &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("named by the URL"), "{e}");
    let e = Storage::open("s3://Bad_Bucket").unwrap_err().to_string();
    assert!(e.contains("not a valid S3 bucket name"), "{e}");
}

#[test]
fn gcs_stores_open_with_an_emulator_endpoint_and_keep_secrets_out() {
    redwood_stores::link();
    let opts = BTreeMap::from([
        ("endpoint".to_string(), "http://127.0.0.1:4443".to_string()),
        ("skip_signature".to_string(), "true".to_string()),
    ]);
    let store = Storage::open_with("gs://a-bucket/jobs", &opts).unwrap();
    assert_eq!(store.identity(), "http://127.0.0.1:4443/a-bucket");
    let opts = BTreeMap::from([("servce_account".to_string(), "x".to_string())]);
    let e = Storage::open_with("gs://a-bucket", &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown storage option `servce_account`"), "{e}");
    let key = r#"{"private_key": "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n", "client_email": "x@y", "private_key_id": "id"}"#;
    let opts = BTreeMap::from([("service_account_key".to_string(), key.to_string())]);
    let shown = match Storage::open_with("gs://a-bucket", &opts) {
        Ok(store) => format!("{store:?}"),
        Err(e) => e.to_string(),
    };
    assert!(!shown.contains("SECRETSECRET"), "{shown}");
}

fn reqwest_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
