//! `cleanup` deletes what its session stored and nothing else; `cleanup_all` empties the
//! namespace.

use redwood::{Job, Session};

#[redwood::remote]
fn square(x: u64) -> u64 {
    x * x
}

fn session(store: &str) -> Session {
    Session::builder()
        .storage_url(store)
        .progress(false)
        .build()
        .expect("session")
}

#[tokio::test]
async fn cleanup_deletes_only_this_sessions_jobs_and_cleanup_all_everything() {
    let store = "memory://cleanup-scope";
    let (mine, theirs) = (session(store), session(store));
    // Empty maps store their job records without running a task.
    let my_job = mine.map(square, Vec::<u64>::new()).await.unwrap();
    let my_value = mine.broadcast(&vec![1u64, 2, 3]).await.unwrap();
    let their_job = theirs.map(square, Vec::<u64>::new()).await.unwrap();
    let their_value = theirs.broadcast(&vec![4u64, 5]).await.unwrap();
    let storage = mine.storage().clone();
    let layout = storage.layout();

    let report = mine.cleanup().await.unwrap();
    assert!(report.objects_deleted >= 3, "{report:?}");
    assert!(
        storage
            .list(&layout.job(my_job.id()))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!storage.exists(&my_value.key().into()).await.unwrap());
    assert!(
        !storage
            .list(&layout.job(their_job.id()))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(storage.exists(&their_value.key().into()).await.unwrap());
    // Their job can still be attached to.
    assert_eq!(
        Job::<u64>::attach(&theirs, their_job.id())
            .await
            .unwrap()
            .len(),
        0
    );

    mine.cleanup_all().await.unwrap();
    assert!(storage.list(&layout.jobs()).await.unwrap().is_empty());
    assert!(storage.list(&layout.broadcasts()).await.unwrap().is_empty());
}

#[tokio::test]
async fn cleanup_leaves_no_empty_folders_on_a_file_store() {
    let folder = std::env::temp_dir().join(format!("redwood-cleanup-{}", std::process::id()));
    let rw = session(&format!("file://{}", folder.display()));
    let kept = rw.upload("kept.txt", b"stays".to_vec()).await.unwrap();
    let job = rw.map(square, Vec::<u64>::new()).await.unwrap();
    rw.broadcast(&vec![7u64; 10]).await.unwrap();
    assert!(folder.join("jobs").join(job.id()).is_dir());
    rw.cleanup().await.unwrap();
    let mut left = Vec::new();
    let mut stack = vec![folder.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                left.push(path);
            }
        }
    }
    assert_eq!(
        left,
        vec![folder.join(kept.key())],
        "files left after cleanup"
    );
    assert!(
        !folder.join("jobs").exists(),
        "an empty jobs folder is left"
    );
    assert!(
        !folder.join("bcast").exists(),
        "an empty bcast folder is left"
    );
    std::fs::remove_dir_all(&folder).unwrap();
}
