//! The one error type of the crate.

use std::fmt;
use std::time::Duration;

use crate::backend::BackendKind;

mod copy;
mod retry;
pub use copy::CopyRefusal;
mod violation;
pub(crate) use retry::OutcomeUnknown;
pub use violation::Violation;

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

    /// The server accepts no writes: a PostgreSQL hot standby (or a server
    /// with `default_transaction_read_only` on; SQLSTATE 25006). Nothing
    /// was changed. Send writes, units of work that write and `migrate` to
    /// the primary (README "Production topologies"; `persist` exits with
    /// code 8).
    #[error(
        "the database server is read-only (a hot standby): writes and migrations must go \
         to the primary ({message})"
    )]
    ReadOnlyServer {
        /// The server's message and SQLSTATE.
        message: String,
    },

    /// The row asked for does not exist; the spec's `ErrNotFound`.
    #[error("{0} not found")]
    NotFound(Entity),

    /// A unique key is already taken; for the version keys, a
    /// conflict-checked save lost to another save; for
    /// [`UniqueKey::BattleId`], the battle id was applied with another result.
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

    /// Migrations are pending but the server is a read-only standby (hot
    /// standby in recovery): nothing was written. Run migrate against the
    /// primary; the standby follows it.
    #[error("the server is a read-only standby and migration(s) {} are pending: run migrate against the primary", versions_list(.versions))]
    PendingOnStandby {
        /// The pending versions.
        versions: Vec<i64>,
    },

    /// A migration could not take the locks its statements need within the
    /// migration statement lock timeout, in any of its attempts (a long
    /// transaction holds a conflicting lock). Nothing of it was applied;
    /// each attempt held up other sessions for at most that timeout.
    #[error("migration {file} gave up after {attempts} attempt(s): a conflicting lock was held each time (lock_timeout {lock_timeout_ms} ms per attempt); find the long transaction in pg_stat_activity and run migrate again")]
    MigrationBlocked {
        /// Its file name, `NNNN_name.sql`.
        file: String,
        /// How many times it was tried.
        attempts: u32,
        /// The lock timeout of each attempt, in milliseconds.
        lock_timeout_ms: u64,
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

    /// The database belongs to something else, so persist refuses to migrate
    /// or read it: a `schema_migrations` table of another migration tool
    /// (the message names the tool), or a SQLite file holding another
    /// application's tables and no persist history. Nothing was changed.
    #[error("not a persist database: {0}")]
    ForeignDatabase(String),

    /// [`copy`](crate::copy()) refused to start and wrote nothing; the
    /// [`CopyRefusal`](crate::CopyRefusal) says why (target holds data, source
    /// and target are one database, a schema not at this binary's version).
    #[error("copy refused: {0}")]
    CopyRefused(CopyRefusal),

    /// [`copy`](crate::copy()) wrote every batch, but the row counts or content
    /// checksums of source and target differ afterwards (the source changed
    /// during the copy, or the target was written to); the message lists the
    /// tables. The target holds a partial or mixed copy.
    #[error("copy verification failed: {0}")]
    CopyMismatch(String),

    /// Any other error the database reported; the [`DatabaseError`] gives
    /// the backend, its code (SQLSTATE or SQLite result code) and message,
    /// with the driver's error as its source.
    #[error("{0}")]
    Database(DatabaseError),
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
            Error::ReadOnlyServer { .. } => "read_only_server",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::UnknownUser => "unknown_user",
            Error::InvalidInput { .. } => "invalid_input",
            Error::StorageFull { .. } => "storage_full",
            Error::Constraint { .. } => "constraint",
            Error::InvalidMigrations(_) => "invalid_migrations",
            Error::MigrationDrift { .. } => "migration_drift",
            Error::DatabaseAhead { .. } => "database_ahead",
            Error::PendingOnStandby { .. } => "pending_on_standby",
            Error::MigrationFailed { .. } => "migration_failed",
            Error::MigrationBlocked { .. } => "migration_blocked",
            Error::ForeignDatabase(_) => "foreign_database",
            Error::CopyRefused(_) => "copy_refused",
            Error::CopyMismatch(_) => "copy_mismatch",
            Error::Database(d) => match d.backend {
                BackendKind::Sqlite => "sqlite",
                BackendKind::Postgres => "postgres",
            },
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

/// A database error this crate has no variant of its own for.
///
/// Opaque on purpose: the driver's error type is not part of this crate's
/// API (a driver's major release would otherwise be a breaking change here).
/// It stays reachable as [`std::error::Error::source`].
#[derive(Debug)]
pub struct DatabaseError {
    backend: BackendKind,
    code: Option<DbCode>,
    message: String,
    source: BoxError,
}

/// A backend's code for an error.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DbCode {
    SqlState(String),
    Sqlite(i32),
}

impl DatabaseError {
    /// A PostgreSQL error: its SQLSTATE when the server sent one.
    pub(crate) fn postgres(sqlstate: Option<String>, message: String, source: BoxError) -> Self {
        DatabaseError {
            backend: BackendKind::Postgres,
            code: sqlstate.map(DbCode::SqlState),
            message,
            source,
        }
    }

    /// A SQLite error: its extended result code when SQLite returned one.
    pub(crate) fn sqlite(code: Option<i32>, message: String, source: BoxError) -> Self {
        DatabaseError {
            backend: BackendKind::Sqlite,
            code: code.map(DbCode::Sqlite),
            message,
            source,
        }
    }

    /// The backend that reported it.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// PostgreSQL: the five-character SQLSTATE, when the server sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match &self.code {
            Some(DbCode::SqlState(s)) => Some(s),
            _ => None,
        }
    }

    /// SQLite: the extended result code, when SQLite returned one.
    pub fn sqlite_code(&self) -> Option<i32> {
        match self.code {
            Some(DbCode::Sqlite(c)) => Some(c),
            _ => None,
        }
    }

    /// The message, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.backend, self.message)
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
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
    /// A stored battle result (removed by the retention sweep while a
    /// repeat of it was reading it).
    Battle,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Account => "account",
            Entity::Session => "session",
            Entity::Loadout => "loadout",
            Entity::Progression => "progression",
            Entity::Unlock => "unlock",
            Entity::Battle => "battle result",
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
    /// `battle_results (user_id, battle_id)`: the battle id was already
    /// applied for this player with a different result.
    BattleId,
    /// `army_loadouts.version`: a conflict-checked save expected another
    /// version (someone saved, or deleted, in between).
    LoadoutVersion,
    /// `progression.version`: a conflict-checked set expected another
    /// version.
    ProgressionVersion,
}

impl fmt::Display for UniqueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UniqueKey::Email => "email",
            UniqueKey::Username => "username",
            UniqueKey::SessionToken => "session token",
            UniqueKey::UserId => "user id",
            UniqueKey::BattleId => "battle id",
            UniqueKey::LoadoutVersion => "loadout version",
            UniqueKey::ProgressionVersion => "progression version",
        })
    }
}

/// Formats a wait bound for [`Error::Timeout`] messages.
pub(crate) fn after(what: &str, d: Duration) -> String {
    format!("{what} after {} ms", d.as_millis())
}

#[cfg(test)]
mod tests;
