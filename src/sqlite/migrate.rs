//! The migration runner's steps on SQLite.
//!
//! The lock is SQLite's own write lock: each migration runs in a
//! `BEGIN IMMEDIATE` transaction that first re-reads `schema_migrations`, so
//! concurrent migrators (threads or processes) apply each migration exactly
//! once. While migrating, the busy timeout is raised to the migration lock
//! timeout so a migrator waits for another one's migration to finish.

use std::time::{Duration, Instant};

use rusqlite::{params, OptionalExtension};

use super::error::map;
use super::tx::in_immediate_transaction;
use super::{set_busy_timeout, table_exists, WriteGuard};
use crate::error::{Error, Result};
use crate::migrate::{
    check_history_columns, failed, foreign_tables, Applied, AppliedRow, Migration, MigrationBackend,
};

pub(crate) struct SqliteMigrator {
    pub(crate) guard: WriteGuard,
    pub(crate) busy_timeout: Duration,
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version      INTEGER NOT NULL PRIMARY KEY,
    name         TEXT    NOT NULL,
    checksum     TEXT    NOT NULL,
    applied_at   INTEGER NOT NULL,
    execution_ms INTEGER NOT NULL
) STRICT";

impl MigrationBackend for SqliteMigrator {
    async fn lock(&mut self, timeout: Duration) -> Result<()> {
        self.guard
            .slot()
            .with(|c| set_busy_timeout(c, timeout).map_err(map))
    }

    async fn unlock(&mut self) -> Result<()> {
        let busy = self.busy_timeout;
        self.guard
            .slot()
            .with(|c| set_busy_timeout(c, busy).map_err(map))
    }

    async fn ensure_table(&mut self) -> Result<()> {
        self.guard.slot().with(|c| {
            refuse_foreign(c)?;
            c.execute_batch(CREATE).map_err(map)
        })
    }

    async fn applied(&mut self) -> Result<Vec<AppliedRow>> {
        self.guard.slot().with(applied)
    }

    async fn standby(&mut self) -> Result<bool> {
        Ok(false)
    }

    async fn apply(&mut self, m: &Migration, applied_at: i64) -> Result<Applied> {
        self.guard.slot().with(|c| {
            // Foreign keys off while migrating (SQLite ignores the pragma
            // inside a transaction): a table rebuild's DROP TABLE would
            // otherwise cascade-delete every child row. Checked before commit.
            c.execute_batch("PRAGMA foreign_keys = OFF").map_err(map)?;
            let result = apply_in_transaction(c, m, applied_at);
            let restored = c.execute_batch("PRAGMA foreign_keys = ON").map_err(map);
            let applied = result?;
            restored?;
            Ok(applied)
        })
    }
}

fn apply_in_transaction(
    c: &rusqlite::Connection,
    m: &Migration,
    applied_at: i64,
) -> Result<Applied> {
    in_immediate_transaction(c, |c| {
        let applied = apply_locked(c, m, applied_at)?;
        if matches!(applied, Applied::Already) {
            return Ok(applied);
        }
        let violations: i64 = c
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .map_err(map)?;
        if violations > 0 {
            return Err(failed(
                m,
                format!("{violations} foreign-key violation(s) after the migration"),
                "foreign_key_check failed".into(),
            ));
        }
        Ok(applied)
    })
}

fn apply_locked(c: &rusqlite::Connection, m: &Migration, applied_at: i64) -> Result<Applied> {
    let recorded: Option<String> = c
        .query_row(
            "SELECT checksum FROM schema_migrations WHERE version = ?1",
            [m.version()],
            |r| r.get(0),
        )
        .optional()
        .map_err(map)?;
    match recorded {
        Some(sum) if sum == m.checksum() => return Ok(Applied::Already),
        Some(_) => {
            return Err(Error::MigrationDrift {
                versions: vec![m.version()],
            })
        }
        None => {}
    }
    let start = Instant::now();
    super::script::run(c, m)?;
    super::rekey::after_sql(c, m)?;
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    c.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at, execution_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![m.version(), m.name(), m.checksum(), applied_at, ms as i64],
    )
    .map_err(|e| failed(m, e.to_string(), e.into()))?;
    Ok(Applied::Now(ms))
}

/// The rows of `schema_migrations`, or none when the table does not exist.
pub(crate) fn applied(c: &rusqlite::Connection) -> Result<Vec<AppliedRow>> {
    if !table_exists(c, "schema_migrations")? {
        return Ok(Vec::new());
    }
    let columns = c
        .prepare("SELECT name FROM pragma_table_info('schema_migrations')")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(map)?;
    if let Some(e) = check_history_columns(&columns) {
        return Err(e);
    }
    let mut st = c
        .prepare(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version",
        )
        .map_err(map)?;
    let rows = st
        .query_map([], |r| {
            Ok(AppliedRow {
                version: r.get(0)?,
                name: r.get(1)?,
                checksum: r.get(2)?,
                applied_at: r.get(3)?,
            })
        })
        .map_err(map)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)
}

/// Refuses a file that holds other tables but no `schema_migrations`:
/// another application's database, which persist must not switch to WAL nor
/// add tables to.
pub(crate) fn refuse_foreign(c: &rusqlite::Connection) -> Result<()> {
    // One read of the catalog: a concurrent migrator may be creating
    // `schema_migrations` meanwhile.
    let tables = other_tables(c)?;
    if tables.is_empty() || tables.iter().any(|t| t == "schema_migrations") {
        Ok(())
    } else {
        Err(foreign_tables(&tables))
    }
}

/// The tables of the file other than SQLite's own.
fn other_tables(c: &rusqlite::Connection) -> Result<Vec<String>> {
    c.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .and_then(|mut st| {
        st.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(map)
}
