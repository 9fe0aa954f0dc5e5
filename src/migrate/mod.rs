//! The dialect-neutral migration runner.
//!
//! Each backend supplies a few small steps ([`MigrationBackend`]): take and
//! release the migration lock, make sure the version table exists, list the
//! applied migrations, apply one migration with its bookkeeping row in one
//! transaction. The runner decides what to apply and never sees SQL.

use std::collections::BTreeSet;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::backend::BackendKind;
use crate::error::{Error, Result};

mod foreign;
mod lint;
mod plan;
mod rules;
mod runner;
mod split;

pub(crate) use foreign::{check_history_columns, foreign_tables};
pub use lint::{LintFinding, LintRule};
pub(crate) use plan::plan;
pub use plan::{LockLevel, MigrationPlan, PlannedMigration, PlannedStatement, TableLock};
pub(crate) use runner::{failed, pending, run, status, Applied, AppliedRow, MigrationBackend};
pub(crate) use split::first_line;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_migrations.rs"));
}

/// The directive line of a migration file that recomputes every stored
/// canonical key after the file's SQL ([`Migration::recomputes_keys`]).
pub(crate) const RECOMPUTE_KEYS: &str = "-- persist:recompute-keys";

/// The first-line directive of a migration file that runs outside a
/// transaction, one statement at a time ([`Migration::in_transaction`]).
pub const NO_TRANSACTION: &str = "-- persist:no-transaction";

/// One migration: a version, a name and the SQL to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    version: i64,
    name: String,
    sql: String,
    checksum: String,
}

impl Migration {
    /// A migration from its parts. The checksum is computed here.
    pub fn new(version: i64, name: impl Into<String>, sql: impl Into<String>) -> Self {
        let sql = sql.into();
        Migration {
            version,
            name: name.into(),
            checksum: checksum(&sql),
            sql,
        }
    }

    /// Its version (1, 2, ...).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Its name (the file name without version and extension).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its SQL.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// SHA-256 of its SQL with CRLF line endings normalised to LF, as 64 hex
    /// characters. Recorded in `schema_migrations.checksum`.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    /// Whether the file carries the [`RECOMPUTE_KEYS`] directive line: the
    /// runner then recomputes every stored canonical key after its SQL, in
    /// the same transaction (keys are computed in Rust, so SQL alone cannot
    /// rewrite them; migration 0003).
    pub(crate) fn recomputes_keys(&self) -> bool {
        self.sql.lines().any(|l| l.trim_end() == RECOMPUTE_KEYS)
    }

    /// False when the file's first line is the [`NO_TRANSACTION`] directive:
    /// on PostgreSQL its statements then run one at a time outside a
    /// transaction (for `CREATE INDEX CONCURRENTLY`, `DROP INDEX
    /// CONCURRENTLY`, `ALTER TYPE ... ADD VALUE`), recorded as started before
    /// and as applied after; each statement must be safe to run again
    /// (`IF NOT EXISTS`, `IF EXISTS`), since an interrupted run is resumed
    /// from its first statement. SQLite runs such a file in one transaction
    /// as any other (it has no concurrent index build).
    pub fn in_transaction(&self) -> bool {
        self.sql.lines().next().map(str::trim_end) != Some(NO_TRANSACTION)
    }

    /// Its statements, in order (quotes, dollar quotes and comments
    /// respected), for running one at a time.
    pub(crate) fn statements(&self) -> Vec<String> {
        split::statements(&self.sql)
    }

    /// Its file name, `NNNN_name.sql`.
    pub fn file_name(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }
}

/// SHA-256 of `sql` after CRLF -> LF, hex-encoded. A CRLF checkout of the
/// same file is not drift.
pub(crate) fn checksum(sql: &str) -> String {
    let mut h = Sha256::new();
    let mut rest = sql;
    while let Some(i) = rest.find("\r\n") {
        h.update(&rest.as_bytes()[..i]);
        h.update(b"\n");
        rest = &rest[i + 2..];
    }
    h.update(rest.as_bytes());
    hex::encode(h.finalize())
}

/// A validated, ordered migration set for one dialect: versions 1..=n with no
/// gap and no duplicate.
#[derive(Debug, Clone)]
pub struct Migrations {
    dialect: BackendKind,
    list: Vec<Migration>,
}

impl Migrations {
    /// Validates and orders a caller-supplied set.
    ///
    /// # Errors
    /// [`Error::InvalidMigrations`] naming the versions, when a version is
    /// below 1, appears twice, or the versions are not contiguous from 1.
    pub fn new(dialect: BackendKind, mut list: Vec<Migration>) -> Result<Self> {
        list.sort_by_key(|m| m.version);
        if let Some(m) = list.iter().find(|m| m.version < 1) {
            return Err(Error::InvalidMigrations(format!(
                "{dialect}: version {} of {} is below 1",
                m.version,
                m.file_name()
            )));
        }
        let dups: BTreeSet<i64> = list
            .windows(2)
            .filter(|w| w[0].version == w[1].version)
            .map(|w| w[0].version)
            .collect();
        if !dups.is_empty() {
            return Err(Error::InvalidMigrations(format!(
                "{dialect}: duplicate version(s) {}",
                join(dups.iter())
            )));
        }
        let missing: Vec<i64> = match list.last() {
            Some(last) => {
                let have: BTreeSet<i64> = list.iter().map(|m| m.version).collect();
                (1..last.version).filter(|v| !have.contains(v)).collect()
            }
            None => Vec::new(),
        };
        if !missing.is_empty() {
            return Err(Error::InvalidMigrations(format!(
                "{dialect}: gap in versions, missing {}",
                join(missing.iter())
            )));
        }
        Ok(Migrations { dialect, list })
    }

    /// The set embedded in this binary for `dialect` (`migrations/<dialect>/`).
    ///
    /// # Errors
    /// [`Error::InvalidMigrations`] if the shipped files have gaps or
    /// duplicates (a test keeps this from shipping).
    pub fn embedded(dialect: BackendKind) -> Result<Self> {
        let raw = match dialect {
            BackendKind::Sqlite => embedded::SQLITE,
            BackendKind::Postgres => embedded::POSTGRES,
        };
        Self::new(
            dialect,
            raw.iter()
                .map(|(v, n, sql)| Migration::new(*v, *n, *sql))
                .collect(),
        )
    }

    /// The backend whose dialect the set is written in.
    pub fn backend(&self) -> BackendKind {
        self.dialect
    }

    /// The migrations, in version order.
    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.list.iter()
    }

    /// The highest version, 0 for an empty set.
    pub fn latest_version(&self) -> i64 {
        self.list.last().map_or(0, |m| m.version)
    }
}

fn join<'a>(v: impl Iterator<Item = &'a i64>) -> String {
    v.map(|v| format!("{v:04}")).collect::<Vec<_>>().join(", ")
}

/// Where one migration stands in a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigrationState {
    /// Applied, with the shipped checksum.
    Applied,
    /// Shipped, not yet applied.
    Pending,
    /// Applied, but the shipped file has changed since.
    Drifted,
    /// Recorded in the database but not shipped by this binary (the database
    /// is ahead of the binary).
    Unknown,
    /// A no-transaction migration recorded as started and never as applied
    /// (interrupted): the next `migrate` resumes it.
    Incomplete,
}

impl fmt::Display for MigrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Drifted => "drifted",
            MigrationState::Unknown => "unknown",
            MigrationState::Incomplete => "incomplete",
        })
    }
}

/// The status of one migration, from [`Db::migration_status`](crate::Db::migration_status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Version.
    pub version: i64,
    /// Name (the shipped one, or the recorded one for [`MigrationState::Unknown`]).
    pub name: String,
    /// State.
    pub state: MigrationState,
    /// When it was applied (seconds since the epoch), if it was.
    pub applied_at: Option<i64>,
}

/// The `schema_migrations` version of the row [`copy`](crate::copy()) keeps
/// while its target is incomplete: no migration has version 0, so a binary
/// that does not know the marker sees a migration it does not ship and
/// refuses the database too.
pub(crate) const INCOMPLETE_COPY_VERSION: i64 = 0;

/// The marker row's name.
pub(crate) const INCOMPLETE_COPY_NAME: &str = "incomplete_copy";

/// The `schema_migrations` version of the row that records no-transaction
/// migration `version` as started: its negative. A binary that does not know
/// the marker sees a migration it does not ship and refuses the database.
pub(crate) fn started_marker(version: i64) -> i64 {
    -version
}

impl MigrationStatus {
    /// True for the row that marks a database as the target of a copy that
    /// has not finished (its checksums not verified yet): it must not be
    /// used. `persist copy --force` into it again clears the mark.
    pub fn marks_incomplete_copy(&self) -> bool {
        self.version == INCOMPLETE_COPY_VERSION && self.state == MigrationState::Unknown
    }
}

/// The highest version a database records (applied, drifted or unknown; 0
/// when none) and how many shipped migrations are pending, from a status list.
pub(crate) fn summary(status: &[MigrationStatus]) -> (i64, usize) {
    let waiting = |s: &&MigrationStatus| {
        matches!(
            s.state,
            MigrationState::Pending | MigrationState::Incomplete
        )
    };
    let version = status
        .iter()
        .filter(|s| !waiting(s))
        .map(|s| s.version)
        .max()
        .unwrap_or(0);
    let pending = status.iter().filter(waiting).count();
    (version, pending)
}

/// One migration a [`Db::migrate`](crate::Db::migrate) run applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// How long it took to apply, in milliseconds.
    pub millis: u64,
}

/// What one [`Db::migrate`](crate::Db::migrate) run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationReport {
    /// Migrations this run applied, in order.
    pub applied: Vec<AppliedMigration>,
    /// The schema version after the run.
    pub version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(versions: &[i64]) -> Result<Migrations> {
        Migrations::new(
            BackendKind::Sqlite,
            versions
                .iter()
                .map(|v| Migration::new(*v, format!("m{v}"), format!("-- {v}")))
                .collect(),
        )
    }

    #[test]
    fn the_recompute_keys_directive_is_a_whole_line() {
        assert!(
            Migration::new(3, "x", "-- x\n-- persist:recompute-keys\nSELECT 1;").recomputes_keys()
        );
        assert!(
            !Migration::new(3, "x", "SELECT 1; -- persist:recompute-keys later").recomputes_keys()
        );
    }

    #[test]
    fn the_no_transaction_directive_is_the_first_line() {
        assert!(!Migration::new(5, "x", "-- persist:no-transaction\nSELECT 1;").in_transaction());
        assert!(!Migration::new(5, "x", "-- persist:no-transaction\r\nSELECT 1;").in_transaction());
        assert!(
            Migration::new(5, "x", "-- x\n-- persist:no-transaction\nSELECT 1;").in_transaction()
        );
        assert!(Migration::new(5, "x", "SELECT 1;").in_transaction());
    }

    #[test]
    fn checksum_ignores_crlf_but_not_content() {
        let lf = "CREATE TABLE t (a INT);\nCREATE INDEX i ON t (a);\n";
        let crlf = "CREATE TABLE t (a INT);\r\nCREATE INDEX i ON t (a);\r\n";
        assert_eq!(checksum(lf), checksum(crlf));
        assert_ne!(checksum(lf), checksum("CREATE TABLE t (a BIGINT);\n"));
        // Known SHA-256 of the empty string.
        assert_eq!(
            checksum(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(checksum("a\r\n"), checksum("a\n"));
        // A lone CR is content, not a line ending.
        assert_ne!(checksum("a\rb"), checksum("a\nb"));
    }

    #[test]
    fn sets_are_ordered_and_strict() {
        let s = set(&[2, 1, 3]).unwrap();
        assert_eq!(s.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(s.latest_version(), 3);
        let msg = |r: Result<Migrations>| match r {
            Err(Error::InvalidMigrations(m)) => m,
            other => panic!("expected InvalidMigrations, got {other:?}"),
        };
        assert!(msg(set(&[1, 3])).contains("missing 0002"));
        assert!(msg(set(&[2, 3])).contains("missing 0001"));
        assert!(msg(set(&[1, 2, 2])).contains("duplicate version(s) 0002"));
        assert!(msg(set(&[0, 1])).contains("below 1"));
        assert_eq!(set(&[]).unwrap().latest_version(), 0);
    }

    #[test]
    fn embedded_sets_are_valid_and_identical_across_dialects() {
        let lite = Migrations::embedded(BackendKind::Sqlite).unwrap();
        let pg = Migrations::embedded(BackendKind::Postgres).unwrap();
        let names = |s: &Migrations| {
            s.iter()
                .map(|m| (m.version(), m.name().to_string()))
                .collect::<Vec<_>>()
        };
        assert!(lite.latest_version() >= 1);
        assert_eq!(names(&lite), names(&pg));
    }
}
