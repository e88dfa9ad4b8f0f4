//! Operations of the Batch API the emulator does not implement. Each answers 501 in the
//! service's error shape, naming the operation, so SDK code that reaches one fails clearly
//! instead of with an unknown-path or wrong-verb error. The README lists them and why.

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{MethodRouter, any};

use super::error::BatchError;
use super::server::Shared;

/// (path, operation) of every operation not implemented here.
pub(super) const OPERATIONS: &[(&str, &str)] = &[
    ("/applications", "applications (list)"),
    ("/applications/{application}", "applications (get)"),
    ("/poolusagemetrics", "pool usage metrics"),
    ("/jobschedules", "job schedules"),
    ("/jobschedules/{schedule}", "job schedules"),
    ("/jobschedules/{schedule}/{action}", "job schedules"),
    ("/pools/{pool}/nodes/{node}/users", "node users"),
    ("/pools/{pool}/nodes/{node}/users/{user}", "node users"),
    ("/pools/{pool}/nodes/{node}/reboot", "node reboot"),
    ("/pools/{pool}/nodes/{node}/reimage", "node reimage"),
    ("/pools/{pool}/nodes/{node}/start", "node start"),
    ("/pools/{pool}/nodes/{node}/deallocate", "node deallocate"),
    (
        "/pools/{pool}/nodes/{node}/disablescheduling",
        "node scheduling",
    ),
    (
        "/pools/{pool}/nodes/{node}/enablescheduling",
        "node scheduling",
    ),
    (
        "/pools/{pool}/nodes/{node}/remoteloginsettings",
        "node remote login settings",
    ),
    (
        "/pools/{pool}/nodes/{node}/uploadbatchservicelogs",
        "node service log upload",
    ),
    ("/pools/{pool}/nodes/{node}/extensions", "node extensions"),
    (
        "/pools/{pool}/nodes/{node}/extensions/{extension}",
        "node extensions",
    ),
];

/// Routes answering every operation of [`OPERATIONS`].
pub(super) fn routes() -> Router<Shared> {
    OPERATIONS
        .iter()
        .fold(Router::new(), |router, (path, what)| {
            router.route(path, not_implemented(what))
        })
}

fn not_implemented(what: &'static str) -> MethodRouter<Shared> {
    any(move |method: Method, uri: Uri| async move {
        BatchError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            format!(
                "The Redwood Batch emulator does not implement {what} ({method} {}); see its README for the operations it serves.",
                uri.path()
            ),
        )
    })
}
