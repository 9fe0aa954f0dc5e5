//! How the demo's player scripts ride out a terminated backend or a server
//! restart, as a game server should: a failure that [`Error::is_retryable`]
//! (nothing was applied) is run again after a backoff; a failure whose
//! outcome is unknown ([`Error::is_outcome_unknown`]: the connection was
//! lost after a write was sent) is resolved by reading the state back before
//! anything is sent again, so no write is ever applied twice.
//!
//! [`Error::is_retryable`]: persist::Error::is_retryable
//! [`Error::is_outcome_unknown`]: persist::Error::is_outcome_unknown

use std::future::Future;
use std::time::{Duration, Instant};

use persist::Result;

/// How long one step keeps retrying before its error ends the run: longer
/// than a server restart or a failover takes.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Exponential backoff with a cap and a deadline.
struct Backoff {
    next: Duration,
    deadline: Instant,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: FIRST_BACKOFF,
            deadline: Instant::now() + GIVE_UP_AFTER,
        }
    }

    /// Sleeps before the next attempt; false when the deadline has passed.
    async fn wait(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        true
    }
}

/// Runs a read, or a write whose repetition changes nothing (set a value,
/// delete by key), until it succeeds or fails for good. `retries` counts
/// the attempts made again.
pub(super) async fn again<T, F: Future<Output = Result<T>>>(
    retries: &mut u64,
    mut step: impl FnMut() -> F,
) -> Result<T> {
    let mut backoff = Backoff::new();
    loop {
        match step().await {
            Err(e) if (e.is_retryable() || e.is_outcome_unknown()) && backoff.wait().await => {
                *retries += 1;
            }
            out => return out,
        }
    }
}

/// Runs a write that must be applied once (an insert, an increment, a
/// unit of work): retried when it was not applied; when its outcome is
/// unknown, `applied` reads the state back (with [`again`]) and answers
/// what the write returned if it took effect, `None` if it did not (then
/// it is sent again).
pub(super) async fn once<T, F, A>(
    retries: &mut u64,
    mut step: impl FnMut() -> F,
    mut applied: impl FnMut() -> A,
) -> Result<T>
where
    F: Future<Output = Result<T>>,
    A: Future<Output = Result<Option<T>>>,
{
    let mut backoff = Backoff::new();
    loop {
        match step().await {
            Err(e) if e.is_outcome_unknown() => {
                *retries += 1;
                if let Some(v) = again(retries, &mut applied).await? {
                    return Ok(v);
                }
            }
            Err(e) if e.is_retryable() && backoff.wait().await => {
                *retries += 1;
            }
            out => return out,
        }
    }
}

/// A delete by key, run with [`again`]: `NotFound` on an attempt made
/// again means an earlier attempt deleted it.
pub(super) async fn delete<F: Future<Output = Result<()>>>(
    retries: &mut u64,
    mut step: impl FnMut() -> F,
) -> Result<()> {
    match step().await {
        Err(e) if e.is_retryable() || e.is_outcome_unknown() => {
            *retries += 1;
            again(retries, || {
                let attempt = step();
                async move {
                    match attempt.await {
                        Err(e) if e.is_not_found() => Ok(()),
                        other => other,
                    }
                }
            })
            .await
        }
        out => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use persist::Error;

    fn unavailable() -> Error {
        // What a refused connection gives: nothing was sent.
        Error::Unavailable {
            message: "connection refused".into(),
            source: None,
        }
    }

    #[tokio::test]
    async fn again_retries_what_is_retryable_and_stops_on_the_rest() {
        let mut retries = 0;
        let mut left = 3;
        let out = again(&mut retries, || {
            let out = if left > 0 {
                left -= 1;
                Err(unavailable())
            } else {
                Ok(7)
            };
            std::future::ready(out)
        })
        .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(retries, 3);

        let mut calls = 0;
        let out: Result<()> = again(&mut retries, || {
            calls += 1;
            std::future::ready(Err(not_found()))
        })
        .await;
        assert!(out.unwrap_err().is_not_found());
        assert_eq!(calls, 1, "a failure that is not retryable is not run again");
        assert_eq!(retries, 3);
    }

    #[tokio::test]
    async fn a_delete_found_gone_on_a_retry_was_done_by_the_first_attempt() {
        let mut retries = 0;
        let mut attempt = 0;
        let out = delete(&mut retries, || {
            attempt += 1;
            std::future::ready(match attempt {
                1 => Err(unavailable()),
                _ => Err(not_found()),
            })
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(retries, 1);

        let mut retries = 0;
        let first_time = delete(&mut retries, || std::future::ready(Err(not_found()))).await;
        assert!(first_time.unwrap_err().is_not_found());
        assert_eq!(retries, 0);
    }

    fn not_found() -> Error {
        Error::NotFound(persist::Entity::Session)
    }
}
