//! Testing your own code against the emulators: [`TestCloud`] starts a real Azurite, an Azure
//! Batch emulator (two accounts, for two regions) and, if asked, an Azure Functions host, and
//! hands out sessions on any backend; `#[redwood::test]` makes the test binary its own worker.
//! Everything stops and is removed when the `TestCloud` is dropped.
//!
//! ```no_run
//! use redwood::prelude::*;
//!
//! #[redwood::remote]
//! fn double(x: u64) -> u64 {
//!     x * 2
//! }
//!
//! #[redwood::test]
//! async fn doubles_on_batch() -> redwood::Result<()> {
//!     let cloud = redwood::testing::TestCloud::start().await?;
//!     let rw = cloud.session("azure-batch")?;
//!     assert_eq!(rw.call(double, 21).await?, 42);
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! How a test binary is its own worker: the backends start the binary again with
//! `REDWOOD_WORKER` set (or, as a Functions handler, `FUNCTIONS_CUSTOMHANDLER_PORT`). Before
//! libtest's `main`, code that `#[redwood::test]` registers moves stdout aside for a local
//! worker's replies and sets `RUST_TEST_THREADS=1` and `RUST_TEST_NOCAPTURE=1`; libtest then
//! starts the first test, whose first step (the worker gate) serves tasks and ends the process.
//! So every test of such a binary should be a `#[redwood::test]`: a plain `#[test]` sorted
//! first would run once in each worker before it serves.

mod cloud;

pub use cloud::{TestCloud, TestCloudBuilder};

use std::future::Future;
use std::sync::Once;

/// Whether this process was started as a worker (by any backend).
fn started_as_worker() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    set(redwood_core::raw::worker::WORKER_ENV) || set("FUNCTIONS_CUSTOMHANDLER_PORT")
}

/// Run before `main` by `#[redwood::test]`. Not a public API.
#[doc(hidden)]
pub fn __before_main() {
    if !started_as_worker() {
        return;
    }
    // SAFETY: this runs before `main`, while the process has one thread.
    unsafe {
        redwood_local::worker::move_stdout_aside();
        std::env::set_var("RUST_TEST_THREADS", "1");
        std::env::set_var("RUST_TEST_NOCAPTURE", "1");
    }
}

/// The first step of a `#[redwood::test]`: in a worker process, serves tasks and ends the
/// process (a second test to get here waits for that); elsewhere, sets up tracing once and
/// returns. Not a public API.
#[doc(hidden)]
pub fn __worker_gate() {
    static ENTERED: Once = Once::new();
    ENTERED.call_once(crate::__entry::enter);
}

/// Runs an async test body on a multi-threaded Tokio runtime. Not a public API.
#[doc(hidden)]
pub fn __block_on<F: Future>(future: F) -> F::Output {
    crate::__entry::block_on(future)
}
