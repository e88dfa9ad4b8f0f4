//! The one retry policy of Redwood: exponential backoff with full jitter, a server's
//! `Retry-After` honoured, a cap on attempts and a total deadline. Every remote call that retries
//! (storage, the Batch REST client, a Batch worker's downloads and uploads) goes through
//! [`RetryPolicy::run`]; what counts as transient is each error type's [`Transient`] answer.

use std::future::Future;
use std::time::{Duration, Instant};

/// Whether a failed attempt may succeed when tried again, and after how long at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Trying again cannot help (a 4xx, a bad key, a missing object).
    Permanent,
    /// A transient failure (5xx, 408, 429, a cut or malformed response, a refused connection).
    Transient,
    /// A transient failure whose service asked to wait this long (`Retry-After`).
    RetryAfter(Duration),
}

/// An error that can say whether it is transient.
pub trait Transient {
    /// This error's [`Verdict`].
    fn verdict(&self) -> Verdict;
}

impl Transient for crate::Error {
    fn verdict(&self) -> Verdict {
        if self.is_retryable() && !self.was_retried_by_transport() {
            Verdict::Transient
        } else {
            Verdict::Permanent
        }
    }
}

/// How often and how long to retry: attempt `n` (1 is the first retry) waits a random time up to
/// `first_backoff × 2ⁿ⁻¹` (capped at `max_backoff`), or the server's `Retry-After`, and no
/// retry starts once `deadline` has passed since the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means no retry).
    pub attempts: u32,
    /// The cap of the first retry's random wait.
    pub first_backoff: Duration,
    /// The largest wait between two attempts (also caps a `Retry-After`).
    pub max_backoff: Duration,
    /// No retry starts later than this after the first attempt began.
    pub deadline: Duration,
}

impl RetryPolicy {
    /// Object storage: 10 attempts, 100 ms doubling to 5 s, within 2 minutes.
    pub const STORAGE: RetryPolicy = RetryPolicy {
        attempts: 10,
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
        deadline: Duration::from_secs(120),
    };

    /// The Batch REST API: 8 attempts, 200 ms doubling to 60 s, within 5 minutes.
    pub const BATCH: RetryPolicy = RetryPolicy {
        attempts: 8,
        first_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(60),
        deadline: Duration::from_secs(300),
    };

    /// No retry at all.
    pub const NONE: RetryPolicy = RetryPolicy {
        attempts: 1,
        first_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        deadline: Duration::ZERO,
    };

    /// The longest wait before retry `retry` (1 is the first retry): `first_backoff × 2ⁿ⁻¹`,
    /// capped at `max_backoff`; the actual wait is a random time up to it (full jitter).
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The wait before retry `retry` after an error with `verdict`, or `None` to give up.
    /// `elapsed` is the time since the first attempt began.
    pub fn wait_before(&self, retry: u32, verdict: Verdict, elapsed: Duration) -> Option<Duration> {
        if retry >= self.attempts || elapsed >= self.deadline {
            return None;
        }
        let wait = match verdict {
            Verdict::Permanent => return None,
            Verdict::Transient => jitter(self.backoff_cap(retry)),
            Verdict::RetryAfter(asked) => asked.min(self.max_backoff),
        };
        // Never sleep past the deadline only to give up then.
        (elapsed.saturating_add(wait) < self.deadline).then_some(wait)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the policy is spent; returns its
    /// last result. Each retry is logged at DEBUG with `operation`.
    pub async fn run<T, E, F, Fut>(&self, operation: &str, mut attempt: F) -> Result<T, E>
    where
        E: Transient + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let start = Instant::now();
        let mut retry = 0u32;
        loop {
            let error = match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            retry = retry.saturating_add(1);
            let Some(wait) = self.wait_before(retry, error.verdict(), start.elapsed()) else {
                return Err(error);
            };
            tracing::debug!(operation, retry, ?wait, error = %error, "transient failure; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// A random duration in `[0, cap]`.
fn jitter(cap: Duration) -> Duration {
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct Flaky(Verdict);
    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl Transient for Flaky {
        fn verdict(&self) -> Verdict {
            self.0
        }
    }

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 5,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        deadline: Duration::from_secs(10),
    };

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitters_below_it() {
        assert_eq!(FAST.backoff_cap(1), Duration::from_millis(1));
        assert_eq!(FAST.backoff_cap(2), Duration::from_millis(2));
        assert_eq!(FAST.backoff_cap(3), Duration::from_millis(4));
        assert_eq!(FAST.backoff_cap(40), Duration::from_millis(4));
        let waits: Vec<Duration> = (0..200)
            .filter_map(|_| FAST.wait_before(3, Verdict::Transient, Duration::ZERO))
            .collect();
        assert_eq!(waits.len(), 200);
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(4)));
        assert!(waits.iter().any(|w| *w != waits[0]), "no jitter");
    }

    #[test]
    fn permanent_errors_spent_attempts_and_the_deadline_stop() {
        assert_eq!(
            FAST.wait_before(1, Verdict::Permanent, Duration::ZERO),
            None
        );
        assert_eq!(
            FAST.wait_before(5, Verdict::Transient, Duration::ZERO),
            None
        );
        assert_eq!(
            FAST.wait_before(1, Verdict::Transient, Duration::from_secs(10)),
            None
        );
        // A Retry-After is honoured up to max_backoff, and never past the deadline.
        let asked = Verdict::RetryAfter(Duration::from_millis(3));
        assert_eq!(
            FAST.wait_before(1, asked, Duration::ZERO),
            Some(Duration::from_millis(3))
        );
        let long = Verdict::RetryAfter(Duration::from_secs(60));
        assert_eq!(
            FAST.wait_before(1, long, Duration::ZERO),
            Some(Duration::from_millis(4))
        );
        assert_eq!(
            RetryPolicy::NONE.wait_before(1, Verdict::Transient, Duration::ZERO),
            None
        );
    }

    #[tokio::test]
    async fn run_retries_transient_failures_until_success() {
        let calls = AtomicU32::new(0);
        let got: Result<u32, Flaky> = FAST
            .run("test", || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Err(Flaky(Verdict::Transient)),
                    n => Ok(n),
                }
            })
            .await;
        assert_eq!(got.unwrap(), 3);

        let calls = AtomicU32::new(0);
        let got: Result<(), Flaky> = FAST
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Flaky(Verdict::Permanent))
            })
            .await;
        assert!(got.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let got: Result<(), Flaky> = FAST
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Flaky(Verdict::Transient))
            })
            .await;
        assert!(got.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), FAST.attempts);
    }
}
