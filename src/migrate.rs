//! The dialect-neutral migration runner.
//!
//! Each backend supplies a few small steps ([`MigrationBackend`]): take and
//! release the migration lock, make sure the version table exists, list the
//! applied migrations, apply one migration with its bookkeeping row in one
//! transaction. The runner decides what to apply and never sees SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_migrations.rs"));
}

/// The SQL dialect a migration set is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        })
    }
}

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
    dialect: Dialect,
    list: Vec<Migration>,
}

impl Migrations {
    /// Validates and orders a caller-supplied set.
    ///
    /// # Errors
    /// [`Error::InvalidMigrations`] naming the versions, when a version is
    /// below 1, appears twice, or the versions are not contiguous from 1.
    pub fn new(dialect: Dialect, mut list: Vec<Migration>) -> Result<Self> {
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
    pub fn embedded(dialect: Dialect) -> Result<Self> {
        let raw = match dialect {
            Dialect::Sqlite => embedded::SQLITE,
            Dialect::Postgres => embedded::POSTGRES,
        };
        Self::new(
            dialect,
            raw.iter()
                .map(|(v, n, sql)| Migration::new(*v, *n, *sql))
                .collect(),
        )
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
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

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppliedRow {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    pub applied_at: i64,
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
}

impl fmt::Display for MigrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Drifted => "drifted",
            MigrationState::Unknown => "unknown",
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

/// What one [`Db::migrate`](crate::Db::migrate) run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationReport {
    /// Migrations this run applied: (version, name, execution time in ms).
    pub applied: Vec<(i64, String, u64)>,
    /// The schema version after the run.
    pub version: i64,
}

/// The outcome of [`MigrationBackend::apply`].
pub(crate) enum Applied {
    /// Applied now, taking this many milliseconds.
    Now(u64),
    /// Found applied (by a concurrent migrator) when re-checked under the lock.
    Already,
}

/// The steps a backend supplies to the runner.
pub(crate) trait MigrationBackend {
    /// Takes the migration lock, waiting at most `timeout`.
    async fn lock(&mut self, timeout: Duration) -> Result<()>;
    /// Releases the migration lock.
    async fn unlock(&mut self) -> Result<()>;
    /// Creates `schema_migrations` if it does not exist.
    async fn ensure_table(&mut self) -> Result<()>;
    /// The applied migrations; empty if the table does not exist.
    async fn applied(&mut self) -> Result<Vec<AppliedRow>>;
    /// Runs the migration and records it, in one transaction.
    async fn apply(&mut self, m: &Migration, applied_at: i64) -> Result<Applied>;
}

/// Compares the shipped set with the applied rows and returns the pending
/// migrations, in order.
///
/// # Errors
/// [`Error::DatabaseAhead`], [`Error::MigrationDrift`], or
/// [`Error::InvalidMigrations`] when a pending migration is older than an
/// applied one.
pub(crate) fn pending<'a>(
    set: &'a Migrations,
    applied: &[AppliedRow],
) -> Result<Vec<&'a Migration>> {
    let shipped: BTreeMap<i64, &Migration> = set.list.iter().map(|m| (m.version, m)).collect();
    let ahead: Vec<i64> = applied
        .iter()
        .filter(|r| !shipped.contains_key(&r.version))
        .map(|r| r.version)
        .collect();
    if !ahead.is_empty() {
        return Err(Error::DatabaseAhead { versions: ahead });
    }
    let drifted: Vec<i64> = applied
        .iter()
        .filter(|r| shipped[&r.version].checksum != r.checksum)
        .map(|r| r.version)
        .collect();
    if !drifted.is_empty() {
        return Err(Error::MigrationDrift { versions: drifted });
    }
    let done: BTreeSet<i64> = applied.iter().map(|r| r.version).collect();
    let todo: Vec<&Migration> = set
        .list
        .iter()
        .filter(|m| !done.contains(&m.version))
        .collect();
    if let (Some(first), Some(&max_done)) = (todo.first(), done.last()) {
        if first.version < max_done {
            return Err(Error::InvalidMigrations(format!(
                "migration {} is pending but the later migration {max_done:04} is already applied",
                first.file_name()
            )));
        }
    }
    Ok(todo)
}

/// Per-migration status: every shipped migration, then every recorded one the
/// binary does not ship.
pub(crate) fn status(set: &Migrations, applied: &[AppliedRow]) -> Vec<MigrationStatus> {
    let by_version: BTreeMap<i64, &AppliedRow> = applied.iter().map(|r| (r.version, r)).collect();
    let mut out: Vec<MigrationStatus> = set
        .list
        .iter()
        .map(|m| match by_version.get(&m.version) {
            Some(r) => MigrationStatus {
                version: m.version,
                name: m.name.clone(),
                state: if r.checksum == m.checksum {
                    MigrationState::Applied
                } else {
                    MigrationState::Drifted
                },
                applied_at: Some(r.applied_at),
            },
            None => MigrationStatus {
                version: m.version,
                name: m.name.clone(),
                state: MigrationState::Pending,
                applied_at: None,
            },
        })
        .collect();
    let shipped: BTreeSet<i64> = set.list.iter().map(|m| m.version).collect();
    out.extend(
        applied
            .iter()
            .filter(|r| !shipped.contains(&r.version))
            .map(|r| MigrationStatus {
                version: r.version,
                name: r.name.clone(),
                state: MigrationState::Unknown,
                applied_at: Some(r.applied_at),
            }),
    );
    out
}

/// Runs every pending migration of `set`, under the backend's lock.
pub(crate) async fn run<B: MigrationBackend>(
    backend: &mut B,
    set: &Migrations,
    lock_timeout: Duration,
) -> Result<MigrationReport> {
    backend.lock(lock_timeout).await?;
    let result = run_locked(backend, set).await;
    let unlocked = backend.unlock().await;
    let report = result?;
    unlocked?;
    Ok(report)
}

async fn run_locked<B: MigrationBackend>(
    backend: &mut B,
    set: &Migrations,
) -> Result<MigrationReport> {
    backend.ensure_table().await?;
    let applied = backend.applied().await?;
    let todo = pending(set, &applied)?;
    let todo_len = todo.len();
    let mut report = MigrationReport::default();
    for m in todo {
        match backend.apply(m, now_seconds()).await? {
            Applied::Now(ms) => {
                tracing::info!(version = m.version, name = %m.name, ms, "applied migration");
                report.applied.push((m.version, m.name.clone(), ms));
            }
            Applied::Already => {
                tracing::debug!(version = m.version, "migration applied concurrently");
            }
        }
    }
    if todo_len > 0 {
        // On SQLite the lock is per migration, so a newer binary may have
        // migrated past this set meanwhile: check the final state again.
        let now_applied = backend.applied().await?;
        pending(set, &now_applied)?;
    }
    report.version = set.latest_version();
    Ok(report)
}

pub(crate) fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `MigrationFailed` error for `m`.
pub(crate) fn failed(m: &Migration, message: String, source: crate::error::BoxError) -> Error {
    Error::MigrationFailed {
        version: m.version,
        file: m.file_name(),
        message,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(versions: &[i64]) -> Result<Migrations> {
        Migrations::new(
            Dialect::Sqlite,
            versions
                .iter()
                .map(|v| Migration::new(*v, format!("m{v}"), format!("-- {v}")))
                .collect(),
        )
    }

    fn row(m: &Migration) -> AppliedRow {
        AppliedRow {
            version: m.version,
            name: m.name.clone(),
            checksum: m.checksum.clone(),
            applied_at: 1,
        }
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
    fn pending_detects_drift_ahead_and_out_of_order() {
        let s = set(&[1, 2, 3]).unwrap();
        let rows: Vec<AppliedRow> = s.iter().take(1).map(row).collect();
        let todo = pending(&s, &rows).unwrap();
        assert_eq!(todo.iter().map(|m| m.version).collect::<Vec<_>>(), [2, 3]);

        let mut drifted = rows.clone();
        drifted[0].checksum = "0".repeat(64);
        assert!(
            matches!(pending(&s, &drifted), Err(Error::MigrationDrift { versions }) if versions == [1])
        );

        let mut ahead: Vec<AppliedRow> = s.iter().map(row).collect();
        ahead.push(AppliedRow {
            version: 4,
            name: "future".into(),
            checksum: "x".into(),
            applied_at: 2,
        });
        assert!(
            matches!(pending(&s, &ahead), Err(Error::DatabaseAhead { versions }) if versions == [4])
        );

        let gap = vec![row(s.iter().next().unwrap()), row(s.iter().nth(2).unwrap())];
        assert!(
            matches!(pending(&s, &gap), Err(Error::InvalidMigrations(m)) if m.contains("0002_m2.sql"))
        );
    }

    #[test]
    fn status_lists_every_state() {
        let s = set(&[1, 2, 3]).unwrap();
        let mut rows: Vec<AppliedRow> = s.iter().take(2).map(row).collect();
        rows[1].checksum = "changed".into();
        rows.push(AppliedRow {
            version: 9,
            name: "future".into(),
            checksum: "x".into(),
            applied_at: 5,
        });
        let st = status(&s, &rows);
        let states: Vec<(i64, MigrationState)> = st.iter().map(|s| (s.version, s.state)).collect();
        assert_eq!(
            states,
            [
                (1, MigrationState::Applied),
                (2, MigrationState::Drifted),
                (3, MigrationState::Pending),
                (9, MigrationState::Unknown)
            ]
        );
        assert_eq!(st[2].applied_at, None);
        assert_eq!(st[3].applied_at, Some(5));
    }

    #[test]
    fn embedded_sets_are_valid_and_identical_across_dialects() {
        let lite = Migrations::embedded(Dialect::Sqlite).unwrap();
        let pg = Migrations::embedded(Dialect::Postgres).unwrap();
        let names = |s: &Migrations| {
            s.iter()
                .map(|m| (m.version(), m.name().to_string()))
                .collect::<Vec<_>>()
        };
        assert!(lite.latest_version() >= 1);
        assert_eq!(names(&lite), names(&pg));
    }
}
