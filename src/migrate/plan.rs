//! What `migrate` would do, without doing it: each pending migration's
//! statements, whether it runs in a transaction, the lock each statement
//! takes on which table (PostgreSQL's lock levels per statement kind, below),
//! and the findings of the DDL linter ([`super::lint`]).

use std::fmt;

use serde::Serialize;

use super::lint::{self, LintFinding};
use super::{Migration, Migrations};
use crate::backend::BackendKind;

/// A table-level lock mode of PostgreSQL, weakest first, or SQLite's one
/// database write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockLevel {
    /// `ACCESS SHARE`: plain reads; conflicts only with ACCESS EXCLUSIVE.
    AccessShare,
    /// `ROW EXCLUSIVE`: INSERT, UPDATE, DELETE.
    RowExclusive,
    /// `SHARE UPDATE EXCLUSIVE`: concurrent index builds, VALIDATE
    /// CONSTRAINT; reads and writes go on.
    ShareUpdateExclusive,
    /// `SHARE`: a plain CREATE INDEX; blocks writes for the whole build.
    Share,
    /// `SHARE ROW EXCLUSIVE`: ADD FOREIGN KEY (both tables), CREATE TRIGGER;
    /// blocks writes.
    ShareRowExclusive,
    /// `ACCESS EXCLUSIVE`: most ALTER TABLE forms, DROP, TRUNCATE; blocks
    /// reads and writes, and every later request queues behind it.
    AccessExclusive,
    /// SQLite: the database's write lock (readers go on under WAL).
    DatabaseWrite,
}

impl fmt::Display for LockLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockLevel::AccessShare => "ACCESS SHARE",
            LockLevel::RowExclusive => "ROW EXCLUSIVE",
            LockLevel::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockLevel::Share => "SHARE",
            LockLevel::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockLevel::AccessExclusive => "ACCESS EXCLUSIVE",
            LockLevel::DatabaseWrite => "database write lock",
        })
    }
}

/// The lock one statement takes on one table (or object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableLock {
    /// The table, as the statement names it (an index for DROP INDEX, whose
    /// table the statement does not name; `(database)` on SQLite).
    pub table: String,
    /// The lock mode.
    pub level: LockLevel,
}

/// One statement of a planned migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStatement {
    /// Its text, as in the file.
    pub sql: String,
    /// Its kind, lower case (`create index concurrently`, `alter table`,
    /// ...; `unparsed` when the parser does not know it).
    pub kind: String,
    /// The locks it takes.
    pub locks: Vec<TableLock>,
    /// The linter's findings on it, suppressions applied.
    pub findings: Vec<LintFinding>,
}

/// One pending migration, planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMigration {
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// False for a `-- persist:no-transaction` file on PostgreSQL.
    pub in_transaction: bool,
    /// Its statements, in order.
    pub statements: Vec<PlannedStatement>,
}

/// What `migrate` would apply, from
/// [`Db::migration_plan_with`](crate::Db::migration_plan_with). Changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationPlan {
    /// The backend planned for.
    #[serde(serialize_with = "display")]
    pub backend: BackendKind,
    /// The pending migrations, in order; empty when up to date.
    pub pending: Vec<PlannedMigration>,
}

impl MigrationPlan {
    /// The plan of `pending` (in order), as if none of them were applied:
    /// tables created by an earlier statement of the plan count as new.
    pub fn for_pending(dialect: BackendKind, pending: &[&Migration]) -> MigrationPlan {
        plan(dialect, pending)
    }

    /// Every finding of every pending migration, with its version.
    pub fn findings(&self) -> impl Iterator<Item = (i64, &LintFinding)> {
        self.pending.iter().flat_map(|m| {
            m.statements
                .iter()
                .flat_map(move |s| s.findings.iter().map(move |f| (m.version, f)))
        })
    }
}

fn display<S: serde::Serializer>(b: &BackendKind, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(b)
}

/// Plans `pending` (in order) for `dialect`. Tables created by an earlier
/// statement of the plan count as new (empty): the linter's "existing
/// table" rules do not fire on them.
pub(crate) fn plan(dialect: BackendKind, pending: &[&Migration]) -> MigrationPlan {
    let mut created = lint::Created::default();
    let pending = pending
        .iter()
        .map(|m| plan_one(dialect, m, &mut created))
        .collect();
    MigrationPlan {
        backend: dialect,
        pending,
    }
}

fn plan_one(dialect: BackendKind, m: &Migration, created: &mut lint::Created) -> PlannedMigration {
    let in_transaction = dialect == BackendKind::Sqlite || m.in_transaction();
    let statements = lint::analyse(dialect, m, created)
        .into_iter()
        .map(|a| PlannedStatement {
            sql: a.sql,
            kind: a.kind,
            locks: a.locks,
            findings: a.findings,
        })
        .collect();
    PlannedMigration {
        version: m.version(),
        name: m.name().to_string(),
        in_transaction,
        statements,
    }
}

impl Migrations {
    /// The linter's findings on every migration of the set, each linted as
    /// if every table of the earlier migrations existed and held data
    /// (tables created earlier in the same file count as new). SQLite sets
    /// have no findings (the rules are about PostgreSQL's locks).
    pub fn lint(&self) -> Vec<(i64, LintFinding)> {
        self.iter()
            .flat_map(|m| {
                let mut created = lint::Created::default();
                lint::analyse(self.backend(), m, &mut created)
                    .into_iter()
                    .flat_map(|a| a.findings)
                    .map(move |f| (m.version(), f))
            })
            .collect()
    }
}
