//! SQLite result codes -> [`Error`], in one place.

use rusqlite::{ffi, ErrorCode};

use crate::error::{DatabaseError, Error, UniqueKey};

/// A SQLite error with no variant of its own.
fn other(e: rusqlite::Error) -> Error {
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
        _ => None,
    };
    let damaged = matches!(
        code.map(|c| c & 0xff),
        Some(ffi::SQLITE_CORRUPT | ffi::SQLITE_NOTADB)
    );
    let message = if damaged {
        format!(
            "the database file is damaged ({e}); `persist verify` (PRAGMA integrity_check) \
             lists the findings"
        )
    } else {
        e.to_string()
    };
    Error::Database(DatabaseError::sqlite(code, message, e.into()))
}

/// Maps a SQLite error to the crate's error by its (extended) result code.
///
/// A unique-key violation maps to [`Error::Constraint`] here: which key it
/// was is decided by the caller (see [`unique_or`]), since SQLite reports the
/// key only in message text, which is never parsed.
pub(crate) fn map(e: rusqlite::Error) -> Error {
    let rusqlite::Error::SqliteFailure(f, _) = &e else {
        return other(e);
    };
    match f.extended_code {
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => return Error::UnknownUser,
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
            return constraint("unique", e)
        }
        ffi::SQLITE_CONSTRAINT_CHECK => return constraint("check", e),
        ffi::SQLITE_CONSTRAINT_NOTNULL => return constraint("not null", e),
        ffi::SQLITE_CONSTRAINT_DATATYPE => return constraint("datatype", e),
        _ => {}
    }
    match f.code {
        ErrorCode::DatabaseBusy => {
            Error::timeout("SQLite database is locked by another connection (busy timeout elapsed)")
        }
        ErrorCode::DatabaseLocked => {
            Error::timeout("SQLite table is locked by another statement of this connection")
        }
        ErrorCode::DiskFull => Error::StorageFull { source: e.into() },
        ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly => {
            Error::unavailable(
                format!("SQLite database cannot be used: {e}"),
                Some(e.into()),
            )
        }
        _ => other(e),
    }
}

fn constraint(kind: &str, e: rusqlite::Error) -> Error {
    Error::Constraint {
        constraint: kind.to_string(),
        source: e.into(),
    }
}

/// True for a UNIQUE or PRIMARY KEY violation.
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// [`Error::Conflict`] on `key` for a unique violation, else [`map`].
pub(crate) fn unique_or(e: rusqlite::Error, key: UniqueKey) -> Error {
    if is_unique_violation(&e) {
        Error::Conflict(key)
    } else {
        map(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn failure(extended: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(extended), None)
    }

    #[test]
    fn codes_map_to_variants() {
        assert!(matches!(
            map(failure(ffi::SQLITE_CONSTRAINT_FOREIGNKEY)),
            Error::UnknownUser
        ));
        assert!(
            matches!(map(failure(ffi::SQLITE_CONSTRAINT_CHECK)), Error::Constraint { constraint, .. } if constraint == "check")
        );
        assert!(matches!(
            map(failure(ffi::SQLITE_BUSY)),
            Error::Timeout { .. }
        ));
        assert!(matches!(
            map(failure(ffi::SQLITE_BUSY_SNAPSHOT)),
            Error::Timeout { .. }
        ));
        assert!(matches!(
            map(failure(ffi::SQLITE_LOCKED)),
            Error::Timeout { .. }
        ));
        assert!(matches!(
            map(failure(ffi::SQLITE_FULL)),
            Error::StorageFull { .. }
        ));
        assert!(matches!(
            map(failure(ffi::SQLITE_CANTOPEN)),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            map(failure(ffi::SQLITE_READONLY)),
            Error::Unavailable { .. }
        ));
        match map(failure(ffi::SQLITE_CORRUPT)) {
            Error::Database(d) => {
                assert_eq!(d.sqlite_code(), Some(ffi::SQLITE_CORRUPT));
                assert_eq!(d.sqlstate(), None);
                assert!(d.to_string().starts_with("sqlite: "), "{d}");
                assert!(d.to_string().contains("file is damaged"), "{d}");
            }
            other => panic!("expected Error::Database, got {other:?}"),
        }
        match map(rusqlite::Error::QueryReturnedNoRows) {
            Error::Database(d) => assert_eq!(d.sqlite_code(), None),
            other => panic!("expected Error::Database, got {other:?}"),
        }
    }

    #[test]
    fn unique_violations_name_the_callers_key() {
        for code in [
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
        ] {
            assert!(is_unique_violation(&failure(code)));
            assert!(matches!(
                unique_or(failure(code), UniqueKey::SessionToken),
                Error::Conflict(UniqueKey::SessionToken)
            ));
        }
        assert!(!is_unique_violation(&failure(ffi::SQLITE_CONSTRAINT_CHECK)));
        assert!(matches!(
            unique_or(failure(ffi::SQLITE_CONSTRAINT_FOREIGNKEY), UniqueKey::Email),
            Error::UnknownUser
        ));
    }
}
