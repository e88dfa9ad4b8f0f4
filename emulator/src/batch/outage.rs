//! A whole account (an Azure region) down and back: its Batch endpoint refuses or hangs, and
//! its storage account (when the emulator fronts it with a proxy) refuses its nodes and its
//! clients. Driven by `POST /_emulator/outage` or [`super::BatchEmulator::set_outage`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::BatchError;
use super::odata::json_body;
use super::server::{AccountState, Shared};
use crate::fault_proxy::FaultProxy;

/// What an account's Batch endpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    /// Answers as usual.
    Up,
    /// Answers every API call with 503 `ServerBusy`.
    Refuse,
    /// Never answers an API call (the client's own timeout ends it).
    Hang,
}

/// What an account's storage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Answers as usual.
    Up,
    /// Answers every request of nodes and clients with 503 `ServerBusy`.
    Refuse,
}

/// A change of an account's state; what is `None` stays as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    /// The Batch endpoint.
    pub compute: Option<Compute>,
    /// The storage account (only when the emulator fronts it, see
    /// [`super::BatchEmulator::put_storage_behind`]).
    pub storage: Option<Storage>,
}

/// An account's switches.
#[derive(Default)]
pub(super) struct Switches {
    compute: AtomicU8,
    storage: std::sync::Mutex<Option<Arc<FaultProxy>>>,
}

impl Switches {
    /// Fronts the account's storage with `proxy`, which an outage turns to refusing.
    pub(super) fn put_storage_behind(&self, proxy: Arc<FaultProxy>) {
        *self.storage.lock().unwrap_or_else(|p| p.into_inner()) = Some(proxy);
    }

    /// Applies `outage`; an error when it asks for storage the emulator does not front.
    pub(super) fn apply(&self, outage: Outage) -> Result<(), String> {
        if let Some(storage) = outage.storage {
            let proxy = self.storage.lock().unwrap_or_else(|p| p.into_inner());
            let Some(proxy) = proxy.as_ref() else {
                return Err("this account's storage is not behind the emulator: run \
                            `redwood-emulator` with its Azurite, or give it a store"
                    .into());
            };
            proxy.set_fixed_status((storage == Storage::Refuse).then_some(503));
        }
        if let Some(compute) = outage.compute {
            let value = match compute {
                Compute::Up => 0,
                Compute::Refuse => 1,
                Compute::Hang => 2,
            };
            self.compute.store(value, Ordering::Relaxed);
        }
        Ok(())
    }

    /// What the Batch endpoint does now.
    pub(super) fn compute(&self) -> Compute {
        match self.compute.load(Ordering::Relaxed) {
            1 => Compute::Refuse,
            2 => Compute::Hang,
            _ => Compute::Up,
        }
    }
}

/// Before an API call: refused, held for ever, or let through.
pub(super) async fn gate(state: &AccountState) -> Result<(), BatchError> {
    match state.outage.compute() {
        Compute::Up => Ok(()),
        Compute::Refuse => Err(BatchError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServerBusy",
            "The account is down (/_emulator/outage).",
        )),
        Compute::Hang => std::future::pending().await,
    }
}

/// Admin: `{"compute": "refuse" | "hang" | "up", "storage": "refuse" | "up"}` (either or both).
pub(super) async fn set_outage(
    State(state): State<Shared>,
    request: Request,
) -> Result<Response, BatchError> {
    let body = json_body(request).await.unwrap_or_default();
    let outage: Outage = serde_json::from_value(serde_json::Value::Object(body)).map_err(|e| {
        BatchError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            format!(
                "an outage is {{\"compute\": \"up\"|\"refuse\"|\"hang\", \"storage\": \
                 \"up\"|\"refuse\"}}: {e}"
            ),
        )
    })?;
    state
        .outage
        .apply(outage)
        .map_err(|why| BatchError::new(StatusCode::CONFLICT, "NoStorageSwitch", why))?;
    tracing::warn!(account = %state.account.name, ?outage, "outage changed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
