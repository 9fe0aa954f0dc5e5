//! PostgreSQL SQLSTATEs (and pool errors) -> [`Error`], in one place.

use deadpool_postgres::{PoolError, TimeoutType};
use tokio_postgres::error::SqlState;

use crate::error::{DatabaseError, Error, OutcomeUnknown, UniqueKey};

/// The unique constraints of the schema and the key each one guards.
const UNIQUE_KEYS: &[(&str, UniqueKey)] = &[
    ("accounts_email_key_uq", UniqueKey::Email),
    ("accounts_username_key_uq", UniqueKey::Username),
    ("sessions_pkey", UniqueKey::SessionToken),
    ("accounts_pkey", UniqueKey::UserId),
];

/// What a server error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Conflict(UniqueKey),
    UnknownUser,
    Constraint,
    Timeout,
    Aborted,
    StorageFull,
    Unavailable,
    ReadOnly,
    Other,
}

/// Classifies by SQLSTATE and, for unique violations, by constraint name (a
/// structured field of the error, never its message).
fn classify(code: &SqlState, constraint: Option<&str>) -> Class {
    if *code == SqlState::UNIQUE_VIOLATION {
        return constraint
            .and_then(|name| UNIQUE_KEYS.iter().find(|(n, _)| *n == name))
            .map_or(Class::Constraint, |(_, k)| Class::Conflict(*k));
    }
    if *code == SqlState::FOREIGN_KEY_VIOLATION {
        return Class::UnknownUser;
    }
    if *code == SqlState::CHECK_VIOLATION
        || *code == SqlState::NOT_NULL_VIOLATION
        || *code == SqlState::NUMERIC_VALUE_OUT_OF_RANGE
    {
        return Class::Constraint;
    }
    if *code == SqlState::QUERY_CANCELED || *code == SqlState::LOCK_NOT_AVAILABLE {
        return Class::Timeout;
    }
    if *code == SqlState::DISK_FULL {
        return Class::StorageFull;
    }
    if *code == SqlState::IN_FAILED_SQL_TRANSACTION {
        return Class::Aborted;
    }
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        return Class::ReadOnly;
    }
    // 08: connection exception; 57: operator intervention (shutdown, restart,
    // terminated backend); 28: authorization; 53300: too many connections;
    // 3D000: no such database.
    match code.code().get(..2).unwrap_or("") {
        "08" | "57" | "28" => Class::Unavailable,
        _ if *code == SqlState::TOO_MANY_CONNECTIONS || *code == SqlState::INVALID_CATALOG_NAME => {
            Class::Unavailable
        }
        _ => Class::Other,
    }
}

/// Maps a driver error to the crate's error.
pub(crate) fn map(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        return match classify(db.code(), db.constraint()) {
            Class::Conflict(k) => Error::Conflict(k),
            Class::UnknownUser => Error::UnknownUser,
            Class::Constraint => constraint(e),
            Class::Timeout => Error::timeout(message(&e)),
            Class::Aborted => Error::Aborted,
            Class::StorageFull => Error::StorageFull { source: e.into() },
            Class::Unavailable => Error::unavailable(message(&e), Some(e.into())),
            Class::ReadOnly => Error::ReadOnlyServer {
                message: message(&e),
            },
            Class::Other => other(e),
        };
    }
    if e.is_closed() || has_io_source(&e) {
        // Lost while a statement was in flight (connect failures are
        // mapped by `map_pool`): the server may have run it.
        let text = message(&e);
        let source = OutcomeUnknown(e.into());
        return Error::unavailable(format!("{text} ({source})"), Some(Box::new(source)));
    }
    other(e)
}

/// A PostgreSQL error with no variant of its own.
fn other(e: tokio_postgres::Error) -> Error {
    let sqlstate = e.as_db_error().map(|d| d.code().code().to_string());
    Error::Database(DatabaseError::postgres(sqlstate, message(&e), e.into()))
}

/// The server's message for a PostgreSQL error when it has one, else the
/// client's description.
pub(crate) fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

fn constraint(e: tokio_postgres::Error) -> Error {
    let name = e
        .as_db_error()
        .and_then(|d| d.constraint())
        .unwrap_or("unnamed")
        .to_string();
    Error::Constraint {
        constraint: name,
        source: e.into(),
    }
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.is::<std::io::Error>() {
            return true;
        }
        src = s.source();
    }
    false
}

/// Maps a pool checkout error.
pub(crate) fn map_pool(e: PoolError) -> Error {
    match e {
        PoolError::Timeout(TimeoutType::Wait) => {
            Error::timeout("waiting for a pooled PostgreSQL connection")
        }
        PoolError::Timeout(TimeoutType::Create) => {
            Error::unavailable("connecting to PostgreSQL timed out (connect timeout)", None)
        }
        PoolError::Timeout(TimeoutType::Recycle) => {
            Error::unavailable("checking a pooled PostgreSQL connection timed out", None)
        }
        // Without a server error, a failure while connecting (TLS refused,
        // missing password, socket error) means the server is unusable.
        PoolError::Backend(e) if e.as_db_error().is_none() => {
            Error::unavailable(message(&e), Some(e.into()))
        }
        PoolError::Backend(e) => map(e),
        PoolError::Closed => Error::Closed,
        other => Error::unavailable(format!("PostgreSQL pool: {other}"), Some(other.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_unique_constraint_maps_to_a_key() {
        let names: Vec<&str> = UNIQUE_KEYS.iter().map(|(n, _)| *n).collect();
        // The constraint names must exist in the PostgreSQL schema.
        let all_sql: String =
            crate::migrate::Migrations::embedded(crate::backend::BackendKind::Postgres)
                .unwrap()
                .iter()
                .map(|m| m.sql().to_string())
                .collect();
        for n in &names[..2] {
            assert!(all_sql.contains(n), "{n} not in the schema");
        }
    }

    #[test]
    fn sqlstates_map_to_classes() {
        let cases = [
            (
                SqlState::UNIQUE_VIOLATION,
                Some("accounts_email_key_uq"),
                Class::Conflict(UniqueKey::Email),
            ),
            (
                SqlState::UNIQUE_VIOLATION,
                Some("accounts_username_key_uq"),
                Class::Conflict(UniqueKey::Username),
            ),
            (
                SqlState::UNIQUE_VIOLATION,
                Some("sessions_pkey"),
                Class::Conflict(UniqueKey::SessionToken),
            ),
            (
                SqlState::UNIQUE_VIOLATION,
                Some("some_other_uq"),
                Class::Constraint,
            ),
            (SqlState::UNIQUE_VIOLATION, None, Class::Constraint),
            (
                SqlState::FOREIGN_KEY_VIOLATION,
                Some("sessions_user_id_fkey"),
                Class::UnknownUser,
            ),
            (
                SqlState::CHECK_VIOLATION,
                Some("progression_xp_check"),
                Class::Constraint,
            ),
            (SqlState::NOT_NULL_VIOLATION, None, Class::Constraint),
            (
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                None,
                Class::Constraint,
            ),
            (SqlState::QUERY_CANCELED, None, Class::Timeout),
            (SqlState::LOCK_NOT_AVAILABLE, None, Class::Timeout),
            (SqlState::DISK_FULL, None, Class::StorageFull),
            (SqlState::IN_FAILED_SQL_TRANSACTION, None, Class::Aborted),
            (SqlState::READ_ONLY_SQL_TRANSACTION, None, Class::ReadOnly),
            (SqlState::ADMIN_SHUTDOWN, None, Class::Unavailable),
            (SqlState::CRASH_SHUTDOWN, None, Class::Unavailable),
            (SqlState::CANNOT_CONNECT_NOW, None, Class::Unavailable),
            (SqlState::CONNECTION_FAILURE, None, Class::Unavailable),
            (SqlState::INVALID_PASSWORD, None, Class::Unavailable),
            (SqlState::TOO_MANY_CONNECTIONS, None, Class::Unavailable),
            (SqlState::INVALID_CATALOG_NAME, None, Class::Unavailable),
            (SqlState::SYNTAX_ERROR, None, Class::Other),
            (SqlState::T_R_SERIALIZATION_FAILURE, None, Class::Other),
        ];
        for (code, constraint, want) in cases {
            assert_eq!(classify(&code, constraint), want, "{}", code.code());
        }
    }

    #[test]
    fn pool_errors_map_to_variants() {
        assert!(matches!(
            map_pool(PoolError::Timeout(TimeoutType::Wait)),
            Error::Timeout { .. }
        ));
        assert!(matches!(
            map_pool(PoolError::Timeout(TimeoutType::Create)),
            Error::Unavailable { .. }
        ));
        assert!(matches!(map_pool(PoolError::Closed), Error::Closed));
    }
}
