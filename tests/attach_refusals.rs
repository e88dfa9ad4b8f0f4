//! Attaching is refused with a clear error, and runs nothing, when the job's stored objects are
//! corrupt or hostile (never an abort or a huge allocation), or when another binary submitted it.

use redwood::raw::backend::JobSpec;
use redwood::raw::manifest::JobManifest;
use redwood::raw::pack::PackWriter;
use redwood::{ErrorKind, Job, Session, TaskOptions};

fn memory_session(name: &str) -> Session {
    Session::builder()
        .storage_url(format!("memory://{name}"))
        .progress(false)
        .build()
        .expect("session")
}

async fn session_with_job(name: &str, claimed_tasks: u64, stored_tasks: u64) -> Session {
    let rw = memory_session(name);
    let storage = rw.storage().clone();
    let spec = JobSpec {
        id: "job-1".into(),
        function: "nowhere::f".into(),
        signature: 0,
        binary: "0".repeat(64),
        task_count: claimed_tasks,
        options: TaskOptions::default(),
    };
    let manifest = JobManifest::new(&spec, "local", "memory://").with_result_type("u64");
    let layout = storage.layout();
    storage
        .put(&layout.manifest("job-1"), manifest.to_json().unwrap())
        .await
        .unwrap();
    let mut input = PackWriter::new();
    for i in 0..stored_tasks {
        input.push(i, &[0]);
    }
    storage
        .put(&layout.input("job-1"), input.finish())
        .await
        .unwrap();
    rw
}

#[tokio::test]
async fn a_task_count_the_input_does_not_hold_is_refused() {
    let rw = session_with_job("corrupt-count", 99_999_999_999_999, 3).await;
    let err = Job::<u64>::attach(&rw, "job-1")
        .await
        .expect_err("corrupt job");
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("99999999999999") && text.contains("holds 3"),
        "{text}"
    );
}

#[tokio::test]
async fn a_hostile_result_segment_is_an_error() {
    let rw = session_with_job("corrupt-segment", 3, 3).await;
    let storage = rw.storage().clone();
    // An outcome that claims 2^40 bytes (it aborted the client), in a result segment.
    let mut segment = PackWriter::new();
    segment.push(0, &[0x01, 0x00, 0xfd, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0]);
    storage
        .put(
            &storage.layout().result_segment("job-1", "w-000000"),
            segment.finish(),
        )
        .await
        .unwrap();
    let err = Job::<u64>::attach(&rw, "job-1")
        .await
        .expect_err("corrupt outcome");
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
}

#[tokio::test]
async fn a_job_of_another_binary_is_not_rerun_without_opting_in() {
    // Valid, unfinished, and submitted by a binary whose sha256 is all zeros.
    let rw = session_with_job("other-binary", 3, 3).await;
    let err = Job::<u64>::attach(&rw, "job-1")
        .await
        .expect_err("other binary");
    assert_eq!(err.kind(), ErrorKind::Mismatch, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("another binary") && text.contains("attach_rerunning_here"),
        "{text}"
    );
    let leases = rw.storage().layout().leases("job-1");
    assert!(
        rw.storage().list(&leases).await.unwrap().is_empty(),
        "a lease was taken"
    );
}

#[tokio::test]
async fn attaching_as_another_result_type_is_refused_before_anything_runs() {
    let rw = session_with_job("wrong-type", 3, 3).await;
    let err = Job::<String>::attach(&rw, "job-1")
        .await
        .expect_err("the job returns u64");
    assert_eq!(err.kind(), ErrorKind::Mismatch, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("returns `u64`, not `alloc::string::String`"),
        "{text}"
    );
    // Nothing ran: no lease was taken, no result stored.
    let storage = rw.storage().clone();
    let keys = storage.list(&storage.layout().job("job-1")).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[tokio::test]
async fn a_call_record_claiming_many_tasks_is_refused() {
    let rw = memory_session("corrupt-call");
    let storage = rw.storage().clone();
    let spec = JobSpec {
        id: "call-1".into(),
        function: "nowhere::f".into(),
        signature: 0,
        binary: "0".repeat(64),
        task_count: 99_999_999_999_999,
        options: TaskOptions::default(),
    };
    let manifest = JobManifest::new(&spec, "local", "memory://").with_result_type("u64");
    let record = redwood::raw::call_record::pack_call_record(
        &manifest,
        &[0],
        &redwood::raw::envelope::Outcome::Ok(vec![1]),
    )
    .unwrap();
    storage
        .put(&storage.layout().call_record("call-1"), record)
        .await
        .unwrap();
    let err = Job::<u64>::attach(&rw, "call-1")
        .await
        .expect_err("corrupt call record");
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    assert!(err.to_string().contains("99999999999999"), "{err}");
}
