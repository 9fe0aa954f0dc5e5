//! The one error type of the crate.

use std::fmt;
use std::time::Duration;

/// Boxed source error, for variants that wrap whatever a driver returned.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error this crate returns.
///
/// Callers match on the sentinel-like variants ([`Error::NotFound`],
/// [`Error::Conflict`], [`Error::UnknownUser`], [`Error::InvalidInput`],
/// [`Error::Closed`], [`Error::Timeout`], [`Error::Unavailable`]); the rest carry
/// the driver's error as their source. Driver codes (SQLite extended result
/// codes, PostgreSQL SQLSTATEs) are mapped to these variants in one place per
/// backend, so both backends report the same variant for the same situation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration or database URL is unusable; the message says why.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The database could not be reached or opened: server down or refusing
    /// connections, connection lost, file that cannot be opened or created.
    #[error("database unavailable: {message}")]
    Unavailable {
        /// What failed, for a person.
        message: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The handle was closed with [`Db::close`](crate::Db::close); the spec's
    /// `ErrNilDB`.
    #[error("database handle is closed")]
    Closed,

    /// A unit of work can no longer commit: a statement in it failed (on
    /// PostgreSQL that aborts the transaction; SQLite is made to agree), was
    /// cancelled mid-way, or the database rolled it back by itself. Roll it
    /// back (or drop it) and start again.
    #[error("unit of work aborted by an earlier failure; roll it back")]
    Aborted,

    /// A bounded wait ran out: pool checkout, connect, lock wait, statement
    /// timeout, SQLite busy timeout.
    #[error("timed out: {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
    },

    /// The row asked for does not exist; the spec's `ErrNotFound`.
    #[error("{0} not found")]
    NotFound(Entity),

    /// A unique key is already taken.
    #[error("{0} is already taken")]
    Conflict(UniqueKey),

    /// The referenced user does not exist (a foreign-key violation).
    #[error("unknown user")]
    UnknownUser,

    /// An input broke a data rule. Checked before any SQL runs, so nothing
    /// changed.
    #[error("invalid {field}: {violation}")]
    InvalidInput {
        /// The input field, as named in the API (`email`, `xp_delta`, ...).
        field: &'static str,
        /// The rule it broke.
        violation: Violation,
    },

    /// The database refused a write because its storage is full (SQLite
    /// `SQLITE_FULL`, PostgreSQL `disk_full`). Earlier data is intact.
    #[error("database storage is full")]
    StorageFull {
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// A database constraint rejected a write that input validation did not
    /// catch (should not happen through this crate's API).
    #[error("constraint violated: {constraint}")]
    Constraint {
        /// The constraint's name where the backend reports it.
        constraint: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// The shipped (or caller-supplied) migration set is malformed: gaps,
    /// duplicates, versions below 1.
    #[error("invalid migration set: {0}")]
    InvalidMigrations(String),

    /// Applied migrations whose checksum no longer matches the shipped file.
    #[error("migration drift: applied migration(s) {} changed after being applied", versions_list(.versions))]
    MigrationDrift {
        /// The drifted versions.
        versions: Vec<i64>,
    },

    /// The database records migrations this binary does not ship: it was
    /// migrated by a newer binary.
    #[error("database is newer than this binary: it records migration(s) {} that this binary does not ship", versions_list(.versions))]
    DatabaseAhead {
        /// The versions unknown to this binary.
        versions: Vec<i64>,
    },

    /// A migration failed; schema and history are as they were before it.
    #[error("migration {file} failed: {message}")]
    MigrationFailed {
        /// Its version.
        version: i64,
        /// Its file name, `NNNN_name.sql`.
        file: String,
        /// The database's message.
        message: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// [`copy`](crate::copy()) refused to start and wrote nothing; the
    /// [`CopyRefusal`](crate::CopyRefusal) says why (target holds data, source
    /// and target are one database, a schema not at this binary's version).
    #[error("copy refused: {0}")]
    CopyRefused(crate::copy::CopyRefusal),

    /// [`copy`](crate::copy()) wrote every batch, but the row counts or content
    /// checksums of source and target differ afterwards (the source changed
    /// during the copy, or the target was written to); the message lists the
    /// tables. The target holds a partial or mixed copy.
    #[error("copy verification failed: {0}")]
    CopyMismatch(String),

    /// Any other SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(#[source] rusqlite::Error),

    /// Any other PostgreSQL error.
    #[error("postgres: {}", postgres_message(.0))]
    Postgres(#[source] tokio_postgres::Error),
}

impl Error {
    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// A short, value-free name of the variant, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Unavailable { .. } => "unavailable",
            Error::Closed => "closed",
            Error::Aborted => "aborted",
            Error::Timeout { .. } => "timeout",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::UnknownUser => "unknown_user",
            Error::InvalidInput { .. } => "invalid_input",
            Error::StorageFull { .. } => "storage_full",
            Error::Constraint { .. } => "constraint",
            Error::InvalidMigrations(_) => "invalid_migrations",
            Error::MigrationDrift { .. } => "migration_drift",
            Error::DatabaseAhead { .. } => "database_ahead",
            Error::MigrationFailed { .. } => "migration_failed",
            Error::CopyRefused(_) => "copy_refused",
            Error::CopyMismatch(_) => "copy_mismatch",
            Error::Sqlite(_) => "sqlite",
            Error::Postgres(_) => "postgres",
        }
    }

    pub(crate) fn invalid(field: &'static str, violation: Violation) -> Self {
        Error::InvalidInput { field, violation }
    }

    pub(crate) fn timeout(what: impl Into<String>) -> Self {
        Error::Timeout { what: what.into() }
    }

    pub(crate) fn unavailable(message: impl Into<String>, source: Option<BoxError>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source,
        }
    }
}

fn versions_list(v: &[i64]) -> String {
    v.iter()
        .map(|v| format!("{v:04}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The server's message for a PostgreSQL error when it has one, else the
/// client's description.
pub(crate) fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

/// The kinds of row [`Error::NotFound`] speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Entity {
    /// An account.
    Account,
    /// A session.
    Session,
    /// An army loadout.
    Loadout,
    /// A progression row.
    Progression,
    /// An unlock flag of a user.
    Unlock,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Account => "account",
            Entity::Session => "session",
            Entity::Loadout => "loadout",
            Entity::Progression => "progression",
            Entity::Unlock => "unlock",
        })
    }
}

/// The unique keys [`Error::Conflict`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UniqueKey {
    /// `accounts.email` (through its canonical key).
    Email,
    /// `accounts.username` (through its canonical key).
    Username,
    /// `sessions.token` (the digest of a bearer token).
    SessionToken,
    /// `accounts.user_id`, when a caller supplies ids (copy, restore).
    UserId,
}

impl fmt::Display for UniqueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UniqueKey::Email => "email",
            UniqueKey::Username => "username",
            UniqueKey::SessionToken => "session token",
            UniqueKey::UserId => "user id",
        })
    }
}

/// The data rule an input broke, carried by [`Error::InvalidInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// Empty text or bytes.
    Empty,
    /// Longer than the cap (characters for text, bytes for byte strings).
    TooLong {
        /// The cap.
        max: usize,
    },
    /// Contains a NUL character.
    Nul,
    /// Contains another control character.
    ControlCharacter,
    /// Contains an invisible character: a default-ignorable code point or a
    /// format (`Cf`) character other than the two joiners (zero-width spaces,
    /// soft hyphens, bidi controls, fillers, variation selectors, tags).
    InvisibleCharacter,
    /// Shorter than the floor (characters).
    TooShort {
        /// The floor.
        min: usize,
    },
    /// Negative where only zero or more is allowed.
    Negative,
    /// Outside the allowed range.
    OutOfRange {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// The result of an arithmetic update would overflow its column.
    Overflow,
    /// The result of an arithmetic update would be negative.
    WouldBeNegative,
    /// Not in the expected format; the text says which.
    Malformed(&'static str),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Empty => f.write_str("must not be empty"),
            Violation::TooLong { max } => write!(f, "must be at most {max} long"),
            Violation::Nul => f.write_str("must not contain NUL"),
            Violation::ControlCharacter => f.write_str("must not contain control characters"),
            Violation::InvisibleCharacter => f.write_str(
                "must not contain invisible or format characters (zero-width, bidi controls, fillers)",
            ),
            Violation::TooShort { min } => write!(f, "must be at least {min} long"),
            Violation::Negative => f.write_str("must not be negative"),
            Violation::OutOfRange { min, max } => write!(f, "must be between {min} and {max}"),
            Violation::Overflow => f.write_str("would overflow"),
            Violation::WouldBeNegative => f.write_str("would make the value negative"),
            Violation::Malformed(what) => write!(f, "malformed: {what}"),
        }
    }
}

/// Formats a wait bound for [`Error::Timeout`] messages.
pub(crate) fn after(what: &str, d: Duration) -> String {
    format!("{what} after {} ms", d.as_millis())
}
