#![deny(missing_docs)]
//! The conformance suite every Redwood backend passes: plain `async fn` cases that take a
//! [`Ctx`] (a session on some backend and store), registered with the capabilities they need.
//! The runner (`tests/conformance.rs`) builds the sessions and runs the cases that apply.

pub mod cases;
pub mod functions;
pub mod watchdog;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use redwood::Session;

/// What a case gets: a session, and facts about where it runs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// A session on the backend under test, in a fresh namespace.
    pub session: Session,
    /// The storage URL the session uses (for child processes).
    pub storage_url: String,
    /// The namespace inside the storage.
    pub namespace: String,
    /// The test binary, for cases that start a second client process.
    pub exe: std::path::PathBuf,
    /// Environment a second client process needs to reach the same storage (credentials).
    pub child_env: Vec<(String, String)>,
    /// A set-up with several regions: how to take its regions down and back.
    pub outages: Option<RegionSwitch>,
}

/// What an outage takes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// The region's compute API.
    Compute,
    /// The region's store.
    Storage,
    /// Both.
    Both,
    /// Nothing: the region is back.
    Up,
}

/// Takes a region of a set-up down (or back).
pub type SwitchFn = Arc<dyn Fn(&str, Outage) -> Result<(), String> + Send + Sync>;

/// The outages a multi-region set-up can make, and the switch.
#[derive(Clone)]
pub struct RegionSwitch {
    /// The region outage cases take down (not the one holding the home store).
    pub region: String,
    /// Its compute can go down.
    pub compute: bool,
    /// Its store can go down.
    pub storage: bool,
    /// Every region's compute can go down (for the all-regions-down case).
    pub all_compute: bool,
    /// The switch.
    pub switch: SwitchFn,
}

impl std::fmt::Debug for RegionSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionSwitch")
            .field("region", &self.region)
            .field("compute", &self.compute)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

/// The error type of a case.
pub type CaseError = Box<dyn std::error::Error + Send + Sync>;
/// What a case returns.
pub type CaseResult = Result<(), CaseError>;
/// A case's future.
pub type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// What a case needs from the backend and the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// `cancel`.
    pub cancel: bool,
    /// Task timeouts.
    pub timeout: bool,
    /// Retries.
    pub retries: bool,
    /// A concurrency limit.
    pub concurrency: bool,
    /// A store other processes can read (not `memory://`).
    pub shared_store: bool,
    /// A session with several regions.
    pub regions: bool,
    /// A region that can be taken down (such a case runs alone in its set-up).
    pub outages: bool,
    /// A region whose compute API can be taken down.
    pub outage_compute: bool,
    /// A region whose store can be taken down.
    pub outage_storage: bool,
}

/// One conformance case.
pub struct Case {
    /// The case's name.
    pub name: &'static str,
    /// What it needs.
    pub needs: Needs,
    /// Runs it.
    pub run: fn(Ctx) -> CaseFuture,
}

impl Needs {
    /// Nothing beyond running tasks.
    pub const NOTHING: Needs = Needs {
        cancel: false,
        timeout: false,
        retries: false,
        concurrency: false,
        shared_store: false,
        regions: false,
        outages: false,
        outage_compute: false,
        outage_storage: false,
    };
}

impl Case {
    /// Why this case cannot run on `session` (with `outages`, for a multi-region set-up), or
    /// `None` when it can.
    pub fn skip_reason(&self, session: &Session, outages: Option<&RegionSwitch>) -> Option<String> {
        if self.needs.regions && session.regions().len() < 2 {
            return Some("the session has one region".into());
        }
        if self.needs.outages {
            let Some(switch) = outages else {
                return Some("the set-up cannot take a region down".into());
            };
            if self.needs.outage_compute && !switch.compute {
                return Some("the set-up cannot take a region's compute down".into());
            }
            if self.needs.outage_storage && !switch.storage {
                return Some("the set-up cannot take a region's store down".into());
            }
        }
        let caps = session.backend().capabilities();
        let backend = session.backend().name().to_string();
        let missing = [
            (self.needs.cancel && !caps.cancel, "cancel"),
            (self.needs.timeout && !caps.timeout, "timeouts"),
            (self.needs.retries && !caps.retries, "retries"),
        ];
        if let Some((_, what)) = missing.iter().find(|(m, _)| *m) {
            return Some(format!("backend `{backend}` does not declare {what}"));
        }
        if self.needs.shared_store && !session.storage().is_shared_between_processes() {
            return Some(format!(
                "storage {} is not shared between processes",
                session.storage().url()
            ));
        }
        None
    }
}

/// Fails a case with a message unless the condition holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("check failed: {}: {}", stringify!($cond), format!($($msg)+)).into());
        }
    };
}

/// Every case of the suite.
pub fn all_cases() -> Vec<Case> {
    cases::all()
}
