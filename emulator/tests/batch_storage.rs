//! Resource files and output files through a real Azurite with SAS URLs: a task downloads its
//! inputs, writes outputs that the emulator uploads, and the test reads them back.

mod common;

use std::time::Duration;

use axum::http::Method;
use common::{completed, emulator};
use object_store::path::Path;
use redwood_core::Storage;
use redwood_core::storage::Access;
use redwood_emulator::azurite::Azurite;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_files_in_and_output_files_out_through_azurite() {
    let azurite = Azurite::start().await.expect("Azurite");
    let conn = azurite.connection_string(&azurite.accounts()[0]);
    let mut options = std::collections::BTreeMap::new();
    options.insert("connection_string".to_string(), conn);
    let storage: Storage = redwood_azure::blob::open("az://batchio", &options).unwrap();
    storage
        .put(&Path::from("inputs/data.txt"), "hello batch")
        .await
        .unwrap();
    storage
        .put(&Path::from("inputs/more.txt"), "more")
        .await
        .unwrap();
    let hour = Duration::from_secs(3600);
    let read_all = storage.signed_url(None, Access::READ_LIST, hour).unwrap();
    let read_one = storage
        .signed_url(Some(&Path::from("inputs/data.txt")), Access::READ, hour)
        .unwrap();
    let write = storage.signed_url(None, Access::WRITE, hour).unwrap();

    let (_emu, c) = emulator().await;
    let pool = json!({"id": "io", "vmSize": "x", "targetDedicatedNodes": 1});
    assert_eq!(
        c.call(Method::POST, "/pools", &[], Some(pool)).await.status,
        201
    );
    let job = json!({"id": "io", "poolInfo": {"poolId": "io"}});
    assert_eq!(
        c.call(Method::POST, "/jobs", &[], Some(job)).await.status,
        201
    );
    let task = json!({
        "id": "roundtrip",
        "commandLine": "tr a-z A-Z < inputs/data.txt > upper.txt && cp single/copy.txt copy.txt && ls inputs > listing.txt",
        "resourceFiles": [
            {"storageContainerUrl": read_all, "blobPrefix": "inputs/"},
            {"httpUrl": read_one, "filePath": "single/copy.txt"},
        ],
        "outputFiles": [
            {"filePattern": "*.txt", "destination": {"container": {"containerUrl": write, "path": "outputs"}},
             "uploadOptions": {"uploadCondition": "tasksuccess"}},
            {"filePattern": "upper.txt", "destination": {"container": {"containerUrl": write, "path": "never.txt"}},
             "uploadOptions": {"uploadCondition": "taskfailure"}},
        ],
    });
    assert_eq!(
        c.call(Method::POST, "/jobs/io/tasks", &[], Some(task))
            .await
            .status,
        201
    );
    let done = completed(&c, "io", "roundtrip").await;
    assert_eq!(done["executionInfo"]["exitCode"], 0, "{done}");
    assert_eq!(done["executionInfo"]["result"], "success", "{done}");

    let get = |key: &str| {
        let storage = storage.clone();
        let key = Path::from(key);
        async move {
            storage
                .get(&key)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        }
    };
    assert_eq!(get("outputs/upper.txt").await.unwrap(), "HELLO BATCH");
    assert_eq!(get("outputs/copy.txt").await.unwrap(), "hello batch");
    let listing = get("outputs/listing.txt").await.unwrap();
    assert!(
        listing.contains("data.txt") && listing.contains("more.txt"),
        "{listing}"
    );
    assert!(
        get("never.txt").await.is_err(),
        "a taskfailure output was uploaded on success"
    );

    // A resource file that cannot be read fails the task before its command runs.
    let bad = json!({
        "id": "badinput",
        "commandLine": "touch ran.txt",
        "resourceFiles": [{"httpUrl": format!("{}/batchio/inputs/data.txt", azurite.blob_endpoint("devstoreaccount1")), "filePath": "x.txt"}],
        "outputFiles": [{"filePattern": "ran.txt", "destination": {"container": {"containerUrl": write, "path": "ran.txt"}}}],
    });
    assert_eq!(
        c.call(Method::POST, "/jobs/io/tasks", &[], Some(bad))
            .await
            .status,
        201
    );
    let failed = completed(&c, "io", "badinput").await;
    assert_eq!(
        failed["executionInfo"]["failureInfo"]["code"], "BlobDownloadMiscError",
        "{failed}"
    );
    assert!(
        get("ran.txt").await.is_err(),
        "the command ran without its inputs"
    );
    azurite.stop().await;
}
