//! A libtest binary cannot be its own worker (its `main` is libtest's). Running remote work from
//! one must end with a clear error, not a hang and not workers that start workers.

use std::time::Duration;

use futures::StreamExt;
use redwood_core::raw::backend::JobSpec;
use redwood_core::raw::envelope::Outcome;
use redwood_core::raw::executor::{Attempt, Executor, OpenRequest};
use redwood_core::{Storage, TaskErrorKind, TaskOptions};

#[tokio::test]
async fn tasks_fail_with_a_hint_when_the_binary_has_no_worker_entry() {
    if std::env::var_os("REDWOOD_WORKER").is_some() {
        // This is a worker started from this very binary: it must not start more.
        return;
    }
    let backend = redwood_local::LocalBackend::builder()
        .workers(1)
        .build()
        .unwrap();
    let spec = JobSpec {
        id: "missing-entry".into(),
        function: "nowhere::f".into(),
        signature: 0,
        binary: "0".repeat(64),
        task_count: 1,
        options: TaskOptions::default(),
    };
    let request = OpenRequest::new(
        std::sync::Arc::new(spec),
        Storage::open("memory://missing-entry").unwrap(),
    );
    let opened = backend.open(request).await.unwrap();
    let attempt = Attempt {
        task: 0,
        attempt: 1,
        args: Default::default(),
        range: (0, 0),
    };
    opened.job.launch(vec![attempt]).await.unwrap();
    let mut ends = opened.ends;
    let end = tokio::time::timeout(Duration::from_secs(60), ends.next())
        .await
        .expect("the task must fail, not hang")
        .expect("an attempt end");
    assert!(
        end.final_attempt,
        "workers that cannot start are not retried"
    );
    let outcome = end.outcome().clone();
    match outcome {
        Outcome::Err(e) => {
            assert_eq!(e.kind, TaskErrorKind::Lost, "{e}");
            assert!(e.message.contains("#[redwood::main]"), "{}", e.message);
        }
        Outcome::Ok(_) => panic!("a libtest binary cannot run remote tasks"),
    }
}
