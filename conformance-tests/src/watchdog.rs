//! Limits for the suite's own runners, so a hung case fails by name instead of stalling CI.
//!
//! Each case runs under [`Watchdog::case`] (a time limit per case, with the case's name in the
//! failure), and a thread ends the whole binary when it runs past its limit, printing the
//! cases still running. Both limits can be raised for slow machines: `REDWOOD_CASE_TIMEOUT`
//! and `REDWOOD_SUITE_TIMEOUT`, in seconds.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one case may run unless `REDWOOD_CASE_TIMEOUT` says otherwise.
pub const CASE_LIMIT: Duration = Duration::from_secs(600);

/// Watches the cases of one runner.
#[derive(Clone)]
pub struct Watchdog {
    running: Arc<Mutex<BTreeSet<String>>>,
    case_limit: Duration,
}

impl Watchdog {
    /// Starts the watch of a binary that may run for `suite_limit` (or `REDWOOD_SUITE_TIMEOUT`)
    /// before it is ended with exit code 101.
    pub fn start(suite_limit: Duration) -> Watchdog {
        let dog = Watchdog {
            running: Arc::default(),
            case_limit: seconds_from_env("REDWOOD_CASE_TIMEOUT").unwrap_or(CASE_LIMIT),
        };
        let limit = seconds_from_env("REDWOOD_SUITE_TIMEOUT").unwrap_or(suite_limit);
        let running = dog.running.clone();
        let started = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                std::thread::sleep(limit);
                let names = running
                    .lock()
                    .map(|r| r.iter().cloned().collect::<Vec<_>>())
                    .unwrap_or_default();
                eprintln!(
                    "the suite ran past its limit of {limit:?} (started {:?} ago); still running: {}",
                    started.elapsed(),
                    if names.is_empty() {
                        "no case (the end of the run hung)".to_string()
                    } else {
                        names.join(", ")
                    }
                );
                std::process::exit(101);
            });
        if let Err(e) = spawned {
            eprintln!("cannot start the watchdog thread: {e}");
        }
        dog
    }

    /// Runs one case under the case limit; a case past it fails with its name and the limit.
    pub async fn case<F, E>(&self, name: &str, case: F) -> Result<(), String>
    where
        F: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        self.mark(name, true);
        let outcome = tokio::time::timeout(self.case_limit, case).await;
        self.mark(name, false);
        match outcome {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "{name} did not finish within {:?} (REDWOOD_CASE_TIMEOUT raises the limit)",
                self.case_limit
            )),
        }
    }

    /// Runs a step of the runner's own (set-up, cleanup) under the case limit.
    pub async fn step<T>(&self, what: &str, step: impl Future<Output = T>) -> Result<T, String> {
        tokio::time::timeout(self.case_limit, step)
            .await
            .map_err(|_| format!("{what} did not finish within {:?}", self.case_limit))
    }

    fn mark(&self, name: &str, running: bool) {
        if let Ok(mut set) = self.running.lock() {
            if running {
                set.insert(name.to_string());
            } else {
                set.remove(name);
            }
        }
    }
}

/// A libtest-mimic trial's failure as its message, for [`Watchdog::case`].
pub async fn message_of<F>(trial: F) -> Result<(), String>
where
    F: Future<Output = Result<(), libtest_mimic::Failed>>,
{
    trial
        .await
        .map_err(|f| f.message().unwrap_or("failed").to_string())
}

fn seconds_from_env(var: &str) -> Option<Duration> {
    let value = std::env::var(var).ok()?;
    match value.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Some(Duration::from_secs(secs)),
        _ => {
            eprintln!("{var}={value} is not a whole number of seconds above 0; ignoring it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_case_past_its_limit_fails_by_name() {
        let dog = Watchdog {
            running: Arc::default(),
            case_limit: Duration::from_millis(50),
        };
        let slow = dog
            .case("slow", async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<(), String>(())
            })
            .await;
        assert!(matches!(&slow, Err(e) if e.starts_with("slow did not finish")));
        let fast = dog.case("fast", async { Err::<(), _>("boom") }).await;
        assert_eq!(fast, Err("boom".to_string()));
        assert!(dog.running.lock().map(|r| r.is_empty()).unwrap_or(false));
    }
}
