//! The retry policy every adapter shares, and the loop that applies it.
//!
//! Retried: 5xx, connection errors, timeouts, and a 429 whose Retry-After
//! is short. Never retried: any other 4xx, which would fail the same way.
//! The adapter sends the same idempotency key on every attempt, so a retry
//! after a lost answer does not make a second message where the provider
//! honours the key (Twilio, our webhook contract).

use std::future::Future;
use std::time::Duration;

use super::SendError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per logical send, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each one after.
    pub base_backoff: Duration,
    /// Cap on a single backoff wait.
    pub max_backoff: Duration,
    /// A 429 is retried only when Retry-After asks for at most this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Wait after failed attempt `attempt` (1-based): base × 2^(attempt-1),
    /// capped, then scaled into [½, 1] by `unit` in [0, 1) so that senders
    /// that failed together do not retry together.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self
            .base_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

/// What one attempt came to.
pub(crate) enum Outcome<T> {
    Done(T),
    /// Permanent: returned at once.
    Fatal(SendError),
    /// Transient: retried while attempts remain, after the given wait or
    /// the policy's backoff.
    Retry(SendError, Option<Duration>),
}

/// Runs `attempt(n)` for n = 1, 2, … under `policy`. Returns the value and
/// the number of attempts it took.
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    provider: &'static str,
    to: &str,
    mut attempt: F,
) -> Result<(T, u32), SendError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Outcome<T>>,
{
    let max = policy.max_attempts.max(1);
    let mut n = 1;
    loop {
        match attempt(n).await {
            Outcome::Done(v) => return Ok((v, n)),
            Outcome::Fatal(e) => return Err(e),
            Outcome::Retry(e, _) if n >= max => return Err(gave_up(e, n)),
            Outcome::Retry(e, after) => {
                let wait = after.unwrap_or_else(|| policy.backoff(n, rand::random::<f64>()));
                tracing::warn!(
                    provider,
                    to = %crate::mask::phone(to),
                    attempt = n,
                    wait_ms = wait.as_millis() as u64,
                    error = %e,
                    "message send failed; retrying"
                );
                tokio::time::sleep(wait).await;
                n += 1;
            }
        }
    }
}

fn gave_up(e: SendError, attempts: u32) -> SendError {
    let note = |m: String| format!("{m} (gave up after {attempts} attempts)");
    match e {
        SendError::Unavailable { message } => SendError::Unavailable {
            message: note(message),
        },
        SendError::RateLimited {
            retry_after,
            message,
        } => SendError::RateLimited {
            retry_after,
            message: note(message),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        }
    }

    fn unavailable() -> SendError {
        SendError::Unavailable {
            message: "HTTP 503".into(),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 0.999_999).as_millis(), 199);
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 0.0), Duration::from_millis(400));
        assert_eq!(p.backoff(40, 0.0), Duration::from_secs(5));
        for _ in 0..100 {
            let d = p.backoff(2, rand::random::<f64>());
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
    }

    #[tokio::test]
    async fn retries_until_done() {
        let calls = AtomicU32::new(0);
        let r = run(&fast(4), "test", "+15551234567", |n| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Outcome::Retry(unavailable(), None)
                } else {
                    Outcome::Done("ok")
                }
            }
        })
        .await;
        assert_eq!(r.ok(), Some(("ok", 3)));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn fatal_is_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<((), u32), _> = run(&fast(4), "test", "+15551234567", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Outcome::Fatal(SendError::Rejected {
                    status: 400,
                    code: None,
                    message: "no".into(),
                })
            }
        })
        .await;
        assert!(matches!(r, Err(SendError::Rejected { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let r: Result<((), u32), _> = run(&fast(3), "test", "+15551234567", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Outcome::Retry(unavailable(), None) }
        })
        .await;
        match r {
            Err(SendError::Unavailable { message }) => {
                assert!(message.contains("after 3 attempts"), "{message}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn requested_wait_is_used() {
        let start = std::time::Instant::now();
        let r = run(&fast(2), "test", "+15551234567", |n| async move {
            if n == 1 {
                Outcome::Retry(unavailable(), Some(Duration::from_millis(50)))
            } else {
                Outcome::Done(())
            }
        })
        .await;
        assert!(r.is_ok());
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
