//! Which failures a caller may retry, and which leave the outcome unknown.

use std::fmt;

use super::{BoxError, Error};

/// SQLSTATEs of failures PostgreSQL rolled back and that can succeed when
/// run again: serialization failure and deadlock.
const RETRYABLE_SQLSTATES: [&str; 2] = ["40001", "40P01"];

/// The source of an [`Error::Unavailable`] raised when the connection was
/// lost after a statement was sent: the server may or may not have run it.
#[derive(Debug)]
pub(crate) struct OutcomeUnknown(pub(crate) BoxError);

impl fmt::Display for OutcomeUnknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Fixed text: the driver's own (below it) may quote row values.
        f.write_str("the connection was lost after the statement was sent; its outcome is unknown")
    }
}

impl std::error::Error for OutcomeUnknown {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl Error {
    /// True when the operation did not take effect and running it again
    /// (a whole unit of work: begin, the calls, commit) may succeed:
    /// a serialization failure or deadlock (SQLSTATE 40001, 40P01), an
    /// aborted unit of work ([`Error::Aborted`]), a server or connection
    /// that was unavailable before the statement reached it (connect
    /// refused, server restarting, backend terminated: PostgreSQL rolls back
    /// what the backend was doing). Retry with a backoff and a cap: an
    /// `Unavailable` server may stay down (or refuse the credentials).
    ///
    /// False when [`Error::is_outcome_unknown`]: running a non-idempotent
    /// write again could apply it twice. False for every other error
    /// (invalid input, conflicts, not found: the same call fails the same
    /// way), and for [`Error::Timeout`], which covers both waits that
    /// changed nothing and statements the client stopped waiting for.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Aborted => true,
            Error::Unavailable { .. } => !self.is_outcome_unknown(),
            Error::Database(d) => d
                .sqlstate()
                .is_some_and(|s| RETRYABLE_SQLSTATES.contains(&s)),
            _ => false,
        }
    }

    /// True when the connection was lost after the statement was sent: the
    /// server may have run it (and committed, outside a unit of work) or
    /// not. Check the state (read it back) before running a write again;
    /// inside a unit of work only a failed commit is in doubt, every earlier
    /// statement is rolled back with the lost connection.
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            Error::Unavailable {
                source: Some(s), ..
            } => s.is::<OutcomeUnknown>(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DatabaseError;

    fn pg(code: &str) -> Error {
        Error::Database(DatabaseError::postgres(
            Some(code.to_string()),
            "m".into(),
            "m".into(),
        ))
    }

    #[test]
    fn classes() {
        assert!(pg("40001").is_retryable());
        assert!(pg("40P01").is_retryable());
        assert!(!pg("23505").is_retryable());
        assert!(!pg("42P01").is_retryable());
        assert!(Error::Aborted.is_retryable());
        let before = Error::unavailable("connect refused", Some("io".into()));
        assert!(before.is_retryable() && !before.is_outcome_unknown());
        let lost = Error::unavailable("lost", Some(Box::new(OutcomeUnknown("io".into()))));
        assert!(lost.is_outcome_unknown() && !lost.is_retryable());
        for e in [
            Error::Closed,
            Error::timeout("x"),
            Error::UnknownUser,
            Error::Config("x".into()),
        ] {
            assert!(!e.is_retryable() && !e.is_outcome_unknown(), "{e:?}");
        }
    }
}
