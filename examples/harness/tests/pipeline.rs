//! The pipeline on every backend, with faults and a region down, through `redwood::testing`.
//! Each test starts its own emulators (Azurite, Batch; Functions where asked), torn down on drop.

use harness_example::{double, word_counts};
use redwood::testing::TestCloud;

fn lines() -> Vec<String> {
    (0..40)
        .map(|i| format!("the quick brown fox {i} jumps over the lazy dog"))
        .collect()
}

async fn check_counts(rw: &redwood::Session) -> redwood::Result<()> {
    let counts = word_counts(rw, lines()).await?;
    assert_eq!(counts["the"], 80);
    assert_eq!(counts["fox"], 40);
    assert_eq!(counts["7"], 1);
    Ok(())
}

#[redwood::test]
async fn runs_on_the_local_pool() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("local")?;
    assert_eq!(rw.call(double, 21).await?, 42);
    check_counts(&rw).await
}

#[redwood::test]
async fn runs_on_the_batch_emulator() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("azure-batch")?;
    assert_eq!(rw.call(double, 21).await?, 42);
    check_counts(&rw).await
}

#[redwood::test]
async fn runs_on_the_functions_host() -> redwood::Result<()> {
    let cloud = TestCloud::builder().functions(true).start().await?;
    let rw = cloud.session("azure-functions")?;
    assert_eq!(rw.call(double, 21).await?, 42);
    check_counts(&rw).await
}

#[redwood::test]
async fn survives_storage_faults() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("local")?;
    cloud.faults(0.1)?;
    check_counts(&rw).await?;
    cloud.faults(0.0)
}

#[redwood::test]
async fn finishes_with_a_region_down() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let rw = cloud.session("local-regions")?;
    cloud.take_region_down("east")?;
    check_counts(&rw).await?;
    cloud.bring_region_up("east")
}

#[redwood::test]
async fn names_what_is_wrong() -> redwood::Result<()> {
    let cloud = TestCloud::start().await?;
    let e = cloud.session("azure-batc").unwrap_err().to_string();
    assert!(e.contains("no session kind `azure-batc`"), "{e}");
    let e = cloud.session("azure-functions").unwrap_err().to_string();
    assert!(e.contains("functions(true)"), "{e}");
    let e = cloud.take_region_down("north").unwrap_err().to_string();
    assert!(e.contains("no region `north`"), "{e}");
    assert!(cloud.faults(1.5).is_err());
    Ok(())
}
