#![deny(missing_docs)]
#![doc = include_str!("../README.md")]
//!
//! ## A runnable example
//!
//! This one runs in `cargo test` (on in-memory storage): the doc test's own binary is the worker.
//!
//! ```
//! use redwood::prelude::*;
//!
//! #[redwood::remote]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! /// Associated functions (no `self`) can be remote too: `Geometry::cube` is the handle.
//! struct Geometry;
//!
//! impl Geometry {
//!     #[redwood::remote]
//!     fn cube(side: u64) -> u64 {
//!         side * side * side
//!     }
//! }
//!
//! #[redwood::main]
//! async fn main() -> redwood::Result<()> {
//!     let rw = Session::builder().storage_url("memory://doc").workers(2).build()?;
//!     assert_eq!(rw.call(square, 7).await?, 49);
//!     assert_eq!(rw.call(Geometry::cube, 3).await?, 27);
//!     let squares = rw.map(square, 0..10u64).await?.collect().await?;
//!     assert_eq!(squares[9], 81);
//!     Ok(())
//! }
//! ```

pub use redwood_core::{
    Blob, Broadcast, ByteVector, CleanupReport, Config, Error, ErrorKind, IntoArgs, Job, JobStats,
    MpiShape, MpiWorld, Placement, Region, RegionTasks, RemoteFn, Result, ResultRef, ResultStream,
    Session, SessionBuilder, Storage, Task, TaskError, TaskErrorKind, TaskOptions, WaitFor,
    WaitSummary, context,
};
pub use redwood_macros::{main, remote, test};

#[cfg(feature = "testing")]
pub mod testing;

pub use redwood_core::codec;

/// Configuration: the profile file, regions and pools.
pub use redwood_core::config;

/// The retry policy every remote call uses (storage, Batch), and which errors are transient.
pub use redwood_core::retry;

/// Jobs read back from storage alone: what the `redwood` tool shows.
pub use redwood_core::inspect;

/// A picture of a job's attempts over time (feature `timeline`): `job.timeline("job.svg")`
/// with [`timeline::JobTimeline`] in scope, as `redwood timeline` draws it.
#[cfg(feature = "timeline")]
pub mod timeline {
    use std::future::Future;
    use std::path::Path;

    pub use redwood_timeline::{lane, render};

    /// How long to wait for a job's attempt records still being written.
    const RECORDS_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

    /// `job.timeline(path)`: the job's timeline as SVG or PNG (by the file's extension).
    pub trait JobTimeline {
        /// Draws the job's attempts so far into `path`.
        fn timeline(&self, path: &Path) -> impl Future<Output = crate::Result<()>> + Send;
    }

    impl<T: Send + Sync> JobTimeline for crate::Job<T> {
        async fn timeline(&self, path: &Path) -> crate::Result<()> {
            redwood_core::__private::flush_all_records(RECORDS_LIMIT).await;
            let stored =
                redwood_core::inspect::read_job(self.session().storage(), self.id()).await?;
            render(&stored, path)
        }
    }
}

/// The backend contract and the pieces backend authors use.
pub mod raw {
    pub use redwood_core::raw::*;
}

/// The local process-pool backend.
#[cfg(feature = "local")]
pub mod local {
    pub use redwood_local::{LocalBackend, LocalBackendBuilder};
}

/// The Azure backends: Azure Batch, and Azure Functions (with the function app writer).
#[cfg(feature = "azure")]
pub mod azure {
    pub use redwood_azure::batch::config::{ImageConfig, PoolConfig, RegionConfig, region};
    /// The credential trait Entra ID sign-in takes (any `azure_identity` credential).
    pub use redwood_azure::batch::credential::TokenCredential;
    pub use redwood_azure::batch::{
        AzureBatchBackend, AzureBatchBackendBuilder, BATCH_SCOPE, BatchClient, BatchClientBuilder,
        CredentialKind,
    };
    pub use redwood_azure::functions::app::{AppOptions, write_app};
    pub use redwood_azure::functions::{
        AzureFunctionsBackend, FunctionsConfig, FunctionsSettings, Invoke,
    };
}

/// Everything a program usually needs: `use redwood::prelude::*;` (also `StreamExt`, for
/// `job.results().next().await`).
pub mod prelude {
    pub use crate::{
        Blob, Broadcast, ErrorKind, Job, ResultRef, Session, Task, TaskErrorKind, TaskOptions,
        WaitFor, WaitSummary, context,
    };
    pub use futures::StreamExt;
}

#[doc(hidden)]
pub use redwood_core::__private;

/// Runs this process as a worker and exits, if a backend started it as one; otherwise returns.
///
/// `#[redwood::main]` calls it first thing. A program with its own `main` (a custom test
/// harness, say) calls it before anything else.
pub fn worker_entry() {
    // Each backend crate registers its worker mode; naming them links them in.
    #[cfg(feature = "local")]
    let _ = redwood_local::worker::serve as fn() -> !;
    #[cfg(feature = "azure")]
    let _ = redwood_azure::batch::worker::serve as fn() -> !;
    #[cfg(feature = "azure")]
    let _ = redwood_azure::functions::handler::serve as fn() -> !;
    #[cfg(feature = "azure")]
    let _ = redwood_azure::functions::app::serve as fn() -> !;
    #[cfg(any(feature = "s3", feature = "gcs"))]
    redwood_stores::link();
    redwood_core::raw::worker::enter_worker_mode();
}

/// Used by `#[redwood::main]`. Not a public API.
#[doc(hidden)]
pub mod __entry {
    use std::future::Future;

    /// Worker mode check, then tracing from `RUST_LOG` (default: warnings, and what remote
    /// functions print, which workers forward under the `redwood::worker` target).
    pub fn enter() {
        crate::worker_entry();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,redwood::worker=info"));
        // Colour codes only where a person reads them: a terminal, and no `NO_COLOR`.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .try_init();
    }

    /// Runs the async main on a multi-threaded Tokio runtime, then waits (at most 30 s) for
    /// the records of finished jobs still being written, so none is lost when main returns.
    pub fn block_on<F: Future>(future: F) -> F::Output {
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let out = rt.block_on(future);
                let limit = std::time::Duration::from_secs(30);
                let left = rt.block_on(redwood_core::__private::flush_all_records(limit));
                if left > 0 {
                    tracing::warn!(
                        left,
                        "job records still being written after {limit:?} when main returned: they may be missing"
                    );
                }
                out
            }
            Err(e) => {
                eprintln!("redwood: cannot start the Tokio runtime: {e}");
                std::process::exit(70);
            }
        }
    }
}
