//! Worker mode under a Functions host: a `#[redwood::main]` program started with
//! `FUNCTIONS_CUSTOMHANDLER_PORT` is a custom handler. It answers `GET /` (ready), and each
//! `POST /{function}` carrying a queue message (`redwood-task`) or an HTTP request whose body
//! is one (`redwood-call`) runs that group of tasks and stores their outcomes as one segment
//! through the message's write SAS; it never sees an account key. An HTTP invocation's answer
//! carries the stored outcomes too, so its caller need not read them back.
//! How a group runs (a pool of warm worker processes, one segment of outcomes stored) is
//! [`crate::group_run`]'s.

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use redwood_core::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use super::message::TaskMessage;
use crate::group_run;

/// The worker mode's name (`REDWOOD_WORKER=functions` selects it too).
pub const MODE: &str = "functions";
/// The variable a Functions host starts its handler with.
pub const PORT_ENV: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";

inventory::submit! {
    redwood_core::raw::worker::WorkerMode { name: MODE, also_when: &[PORT_ENV], serve }
}

/// Serves invocations until the host stops this process.
pub fn serve() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("redwood functions handler: {e}");
            2
        }
    };
    std::process::exit(code)
}

fn run() -> Result<()> {
    let port: u16 = std::env::var(PORT_ENV)
        .or_else(|_| std::env::var("FUNCTIONS_HTTPWORKER_PORT"))
        .map_err(|_| Error::new(ErrorKind::Config, format!("{PORT_ENV} is not set")))?
        .parse()
        .map_err(|_| Error::new(ErrorKind::Config, format!("{PORT_ENV} is not a port")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .map_err(|e| Error::new(ErrorKind::Backend, format!("cannot start a runtime: {e}")))?;
    runtime.block_on(async move {
        group_run::node()?;
        tokio::spawn(group_run::close_idle_jobs());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Backend,
                    format!("cannot listen on 127.0.0.1:{port}: {e}"),
                )
            })?;
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "redwood" }))
            .route("/{function}", axum::routing::post(invoke));
        axum::serve(listener, router).await.map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                format!("the handler's server stopped: {e}"),
            )
        })
    })
}

/// Stored outcomes up to this size travel back in an HTTP invocation's answer too.
const ANSWER_AT_MOST: usize = 4 << 20;

/// How an invocation reached the handler.
enum Trigger {
    /// A queue message (`redwood-task`).
    Queue,
    /// An HTTP request (`redwood-call`): the caller waits for the answer.
    Http,
}

/// One invocation: the group of a queue message or of an HTTP request, run and stored.
async fn invoke(body: Bytes) -> axum::response::Response {
    let (trigger, done) = match parse(&body) {
        Ok((trigger, message, delivery)) => {
            let unless_stored = matches!(trigger, Trigger::Queue) && message.called;
            let done = group_run::deliver(&message, delivery, unless_stored).await;
            (trigger, done)
        }
        Err(why) => (Trigger::Queue, Err(why)),
    };
    match (trigger, done) {
        (Trigger::Queue, Ok(d)) => {
            axum::Json(json!({"Outputs": {}, "Logs": d.logs, "ReturnValue": null})).into_response()
        }
        (Trigger::Queue, Err(why)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"Outputs": {}, "Logs": [why], "ReturnValue": null})),
        )
            .into_response(),
        // The caller reads the outcomes from the answer (base64, as an HTTP output's body is
        // text), or from storage when they are large or were stored before.
        (Trigger::Http, Ok(d)) => {
            let body = d
                .stored
                .filter(|b| b.len() <= ANSWER_AT_MOST)
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                .unwrap_or_default();
            let res =
                json!({"statusCode": 200, "body": body, "headers": {"content-type": "text/plain"}});
            axum::Json(json!({"Outputs": {"res": res}, "Logs": d.logs, "ReturnValue": null}))
                .into_response()
        }
        (Trigger::Http, Err(why)) => {
            let res =
                json!({"statusCode": 500, "body": why, "headers": {"content-type": "text/plain"}});
            axum::Json(json!({"Outputs": {"res": res}, "Logs": [why], "ReturnValue": null}))
                .into_response()
        }
    }
}

/// The trigger, the task group and the delivery count of an invocation's body.
fn parse(body: &Bytes) -> std::result::Result<(Trigger, TaskMessage, u64), String> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| format!("the invocation is not JSON: {e}"))?;
    let data = request["Data"]
        .as_object()
        .ok_or("the invocation has no Data object")?;
    let value = data
        .get("task")
        .or_else(|| data.get("req"))
        .or_else(|| data.values().next())
        .ok_or("the invocation's Data is empty")?;
    // An HTTP trigger's request: the group is its body.
    if let Some(body) = value.get("Body").filter(|_| value.get("Method").is_some()) {
        return Ok((Trigger::Http, TaskMessage::from_trigger(body)?, 1));
    }
    let delivery = request["Metadata"]["DequeueCount"].as_u64().unwrap_or(1);
    Ok((Trigger::Queue, TaskMessage::from_trigger(value)?, delivery))
}
