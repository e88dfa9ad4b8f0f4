//! The fixtures' Docker path (testcontainers) where a daemon socket is named but nothing
//! answers: S3 falls back to a child process, GCS says what failed. One test in its own binary,
//! since it sets `DOCKER_HOST` for the whole process.

use redwood_emulator::gcs::GcsEmulator;
use redwood_emulator::s3::S3Emulator;

#[tokio::test]
async fn a_dead_docker_daemon_falls_back_or_says_why() {
    let dead = std::env::temp_dir().join(format!("no-docker-{}.sock", std::process::id()));
    // SAFETY: the only test of this binary; nothing else reads the environment at once.
    unsafe {
        std::env::set_var("DOCKER_HOST", format!("unix://{}", dead.display()));
        std::env::remove_var("REDWOOD_DOCKER");
        std::env::remove_var("REDWOOD_S3_ENDPOINT");
        std::env::remove_var("REDWOOD_GCS_ENDPOINT");
    }
    assert!(redwood_emulator::docker::wanted("REDWOOD_S3_DOCKER"));
    let started = std::time::Instant::now();
    let s3 = S3Emulator::start().await.unwrap();
    assert_eq!(s3.how(), "child process");
    s3.create_bucket("after-fallback").await.unwrap();
    let e = GcsEmulator::start().await.unwrap_err();
    assert!(
        e.contains("cannot start the container fsouza/fake-gcs-server"),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
    // SAFETY: as above.
    unsafe { std::env::set_var("REDWOOD_DOCKER", "0") };
    assert!(!redwood_emulator::docker::wanted("REDWOOD_S3_DOCKER"));
}
