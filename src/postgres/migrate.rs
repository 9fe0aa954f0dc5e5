//! The migration runner's steps on PostgreSQL.
//!
//! A session-level advisory lock, taken before `schema_migrations` is created
//! (concurrent `CREATE TABLE IF NOT EXISTS` can fail in PostgreSQL), polled
//! with `pg_try_advisory_lock` until the bound runs out. The server frees it
//! if the migrator dies. Each migration and its row commit in one transaction.

use std::time::{Duration, Instant};

use deadpool_postgres::Object;

use super::error::map;
use super::error::message;
use crate::error::{after, Error, Result};
use crate::migrate::{
    check_history_columns, failed, Applied, AppliedRow, Migration, MigrationBackend,
};

/// Advisory lock key of the migrator: the bytes of "persist\0" as an i64.
const LOCK_KEY: i64 = 0x7065_7273_6973_7400;

pub(crate) struct PgMigrator {
    pub(crate) conn: Option<Object>,
}

impl PgMigrator {
    fn conn(&self) -> Result<&Object> {
        self.conn.as_ref().ok_or(Error::Closed)
    }
}

impl Drop for PgMigrator {
    fn drop(&mut self) {
        // Never hand the migrator's connection back to the pool: it may still
        // hold the advisory lock (a cancelled or failed unlock) or carry
        // session settings a migration made. Closing it frees the lock.
        if let Some(obj) = self.conn.take() {
            super::discard(obj, "after_migration");
        }
    }
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version      BIGINT NOT NULL PRIMARY KEY,
    name         TEXT   NOT NULL,
    checksum     TEXT   NOT NULL,
    applied_at   BIGINT NOT NULL,
    execution_ms BIGINT NOT NULL
)";

impl MigrationBackend for PgMigrator {
    async fn lock(&mut self, timeout: Duration) -> Result<()> {
        // If this migrator dies mid-statement, the server notices the lost
        // client within 250 ms and ends the backend, freeing the lock, instead
        // of finishing the statement first (PostgreSQL 14+; older servers do
        // not know the setting and keep their default behaviour).
        if let Err(e) = self
            .conn()?
            .batch_execute("SET client_connection_check_interval = 250")
            .await
        {
            if e.code() != Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) {
                return Err(map(e));
            }
        }
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            let got: bool = self
                .conn()?
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
                .await
                .map_err(map)?
                .try_get(0)
                .map_err(map)?;
            if got {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(after(
                    "waiting for the migration lock held by another migrator",
                    timeout,
                )));
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    async fn unlock(&mut self) -> Result<()> {
        self.conn()?
            .query_one("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn ensure_table(&mut self) -> Result<()> {
        self.conn()?.batch_execute(CREATE).await.map_err(map)
    }

    async fn applied(&mut self) -> Result<Vec<AppliedRow>> {
        applied(self.conn()?).await
    }

    async fn apply(&mut self, m: &Migration, applied_at: i64) -> Result<Applied> {
        let conn = self.conn.as_mut().ok_or(Error::Closed)?;
        let tx = conn.transaction().await.map_err(map)?;
        // A migration may legitimately run longer than the statement timeout
        // applications get.
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .map_err(map)?;
        let start = Instant::now();
        if let Err(e) = tx.batch_execute(m.sql()).await {
            return Err(failed(m, message(&e), e.into()));
        }
        super::rekey::after_sql(&*tx, m).await?;
        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let ms_i64 = i64::try_from(ms).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at, execution_ms) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&m.version(), &m.name(), &m.checksum(), &applied_at, &ms_i64],
        )
        .await
        .map_err(|e| failed(m, message(&e), e.into()))?;
        tx.commit()
            .await
            .map_err(|e| failed(m, message(&e), e.into()))?;
        Ok(Applied::Now(ms))
    }
}

/// The rows of `schema_migrations`, or none when the table does not exist.
pub(crate) async fn applied(c: &Object) -> Result<Vec<AppliedRow>> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(map)?
        .try_get(0)
        .map_err(map)?;
    if !exists {
        return Ok(Vec::new());
    }
    let columns: Vec<String> = c
        .query(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = to_regclass('schema_migrations') AND attnum > 0 \
             AND NOT attisdropped",
            &[],
        )
        .await
        .map_err(map)?
        .iter()
        .map(|r| r.try_get(0).map_err(map))
        .collect::<Result<_>>()?;
    if let Some(e) = check_history_columns(&columns) {
        return Err(e);
    }
    let rows = c
        .query(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(map)?;
    rows.iter()
        .map(|r| {
            Ok(AppliedRow {
                version: r.try_get(0).map_err(map)?,
                name: r.try_get(1).map_err(map)?,
                checksum: r.try_get(2).map_err(map)?,
                applied_at: r.try_get(3).map_err(map)?,
            })
        })
        .collect()
}
