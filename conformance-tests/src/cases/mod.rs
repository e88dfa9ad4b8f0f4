//! The cases, by area. Each is a plain `async fn(Ctx) -> CaseResult`; each area's file lists
//! its own cases, with what they need from the backend and the store.

use crate::{Case, Needs};

/// A [`Case`] from an `async fn(Ctx) -> CaseResult` and, optionally, what it needs.
macro_rules! case {
    ($name:ident) => {
        case!($name, Needs::NOTHING)
    };
    ($name:ident, $needs:expr) => {
        Case {
            name: stringify!($name),
            needs: $needs,
            run: |ctx| -> CaseFuture { Box::pin($name(ctx)) },
        }
    };
}

mod attach;
mod basics;
mod data;
mod failures;
mod layout;
mod refusals;
mod regions;
mod restarts;

pub use attach::child_main;

const CANCEL: Needs = Needs {
    cancel: true,
    ..Needs::NOTHING
};
const TIMEOUT: Needs = Needs {
    timeout: true,
    ..Needs::NOTHING
};
const RETRIES: Needs = Needs {
    retries: true,
    ..Needs::NOTHING
};
const CANCEL_RETRIES_TIMEOUT: Needs = Needs {
    cancel: true,
    retries: true,
    timeout: true,
    ..Needs::NOTHING
};
const CONCURRENCY: Needs = Needs {
    concurrency: true,
    ..Needs::NOTHING
};
const SHARED: Needs = Needs {
    shared_store: true,
    ..Needs::NOTHING
};

/// Every case, in a stable order.
pub fn all() -> Vec<Case> {
    let mut all = basics::cases();
    all.extend(data::cases());
    all.extend(failures::cases());
    all.extend(attach::cases());
    all.extend(restarts::cases());
    all.extend(layout::cases());
    all.extend(refusals::cases());
    all.extend(regions::cases());
    all
}

/// The encoded argument tuple of a task, as a backend receives it.
pub(crate) fn redwood_core_encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, crate::CaseError> {
    Ok(redwood::codec::encode(v)?)
}
