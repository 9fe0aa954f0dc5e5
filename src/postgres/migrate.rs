//! The migration runner's steps on PostgreSQL.
//!
//! Every step is one transaction that first takes the migrator's
//! transaction-scoped advisory lock and re-reads `schema_migrations` under
//! it, so exactly one migrator applies each migration even behind a
//! transaction pooler (PgBouncer `pool_mode = transaction`), where
//! consecutive statements outside a transaction may run on different server
//! connections and a session lock would exclude nobody. The lock ends with
//! the transaction, also when the migrator dies.
//!
//! How a step waits for the lock: [`super::migration_lock`].
//!
//! No session setting is made: every `SET` is `SET LOCAL`, so
//! nothing leaks into a pool. Statements are unnamed (`query_typed`) or
//! simple-protocol, never server-side named prepared statements, which a
//! transaction pooler cannot keep.
//!
//! A standby (`pg_is_in_recovery()`) is only read: with nothing pending the
//! run writes nothing; with something pending it is refused
//! ([`Error::PendingOnStandby`]).

use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::error::map;
use super::error::message;
use super::migration_lock::take_lock;
use crate::error::{Error, Result};
use crate::migrate::{
    check_history_columns, failed, first_line, Applied, AppliedRow, Migration, MigrationBackend,
};

/// The first server version that knows `client_connection_check_interval`.
const CHECK_INTERVAL_SINCE: i32 = 140_000;

pub(crate) struct PgMigrator<'p> {
    pub(crate) conn: Option<Object>,
    /// Where a no-transaction migration gets its statement connection.
    pool: &'p super::Pool,
    /// How long one step waits for the migration lock.
    lock_wait: Duration,
    /// `server_version_num`, read once.
    server_version: Option<i32>,
    /// `lock_timeout` of the migrations' own statements.
    statement_lock_timeout: Duration,
    /// Retries of a migration whose statements hit that timeout.
    retries: u32,
}

/// The first pause before retrying a blocked migration; it doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The pause before attempt `n + 1` (after `n` failed attempts, n >= 1).
pub(crate) fn backoff(n: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// How one attempt at a migration ended.
enum Attempt {
    Done(Applied),
    /// A statement could not get its lock within the statement lock timeout.
    Blocked,
}

impl<'p> PgMigrator<'p> {
    pub(crate) fn new(
        conn: Object,
        pool: &'p super::Pool,
        statement_lock_timeout: Duration,
        retries: u32,
    ) -> Self {
        PgMigrator {
            conn: Some(conn),
            pool,
            lock_wait: Duration::from_secs(60),
            server_version: None,
            statement_lock_timeout,
            retries,
        }
    }

    fn statement_lock_ms(&self) -> u64 {
        u64::try_from(self.statement_lock_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, i32::MAX as u64)
    }

    fn conn(&self) -> Result<&Object> {
        self.conn.as_ref().ok_or(Error::Closed)
    }

    /// Opens a step's transaction holding the migration lock, waiting at
    /// most `lock_wait` for each transaction that holds it meanwhile; the
    /// caller ends it ([`finish`]).
    async fn locked(&self) -> Result<&tokio_postgres::Client> {
        let check = self.server_version.unwrap_or(0) >= CHECK_INTERVAL_SINCE;
        let c = self.conn()?;
        take_lock(c, self.lock_wait, self.statement_lock_ms(), check).await?;
        Ok(c)
    }
}

/// Ends a step's transaction that `r` did not commit: rolled back, best
/// effort after an error (the migrator's connection is then discarded,
/// never returned to a pool).
async fn finish<T>(c: &tokio_postgres::Client, r: Result<Step<T>>) -> Result<T> {
    match r {
        Ok(Step::Committed(v)) => Ok(v),
        Ok(Step::Open(v)) => {
            c.batch_execute("ROLLBACK").await.map_err(map)?;
            Ok(v)
        }
        Err(e) => {
            if let Err(r) = c.batch_execute("ROLLBACK").await {
                tracing::debug!(error = %r, "rollback of a failed migration step");
            }
            Err(e)
        }
    }
}

/// What a step left of its transaction.
enum Step<T> {
    Committed(T),
    /// Still open: to be rolled back.
    Open(T),
}

impl Drop for PgMigrator<'_> {
    fn drop(&mut self) {
        // Never hand the migrator's connection back to the pool: a cancelled
        // step may have left it inside a transaction.
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

impl MigrationBackend for PgMigrator<'_> {
    async fn lock(&mut self, timeout: Duration) -> Result<()> {
        // No session lock: each step takes the transaction-scoped one.
        self.lock_wait = timeout;
        let v: String = self
            .conn()?
            .query_typed_one("SELECT current_setting('server_version_num')", &[])
            .await
            .map_err(map)?
            .try_get(0)
            .map_err(map)?;
        self.server_version = v.parse().ok();
        Ok(())
    }

    async fn unlock(&mut self) -> Result<()> {
        Ok(())
    }

    async fn ensure_table(&mut self) -> Result<()> {
        // Read first: an existing table (and any standby) means no write.
        if table_exists(self.conn()?).await? || in_recovery(self.conn()?).await? {
            return Ok(());
        }
        // Concurrent `CREATE TABLE IF NOT EXISTS` can fail in PostgreSQL:
        // create it under the lock.
        let c = self.locked().await?;
        let created = async {
            c.batch_execute(CREATE).await.map_err(map)?;
            c.batch_execute("COMMIT").await.map_err(map)?;
            Ok(Step::Committed(()))
        };
        finish(c, created.await).await
    }

    async fn applied(&mut self) -> Result<Vec<AppliedRow>> {
        applied(self.conn()?).await
    }

    async fn standby(&mut self) -> Result<bool> {
        in_recovery(self.conn()?).await
    }

    async fn apply(&mut self, m: &Migration, applied_at: i64) -> Result<Applied> {
        if !m.in_transaction() {
            let params = super::notx::Params {
                lock_wait: self.lock_wait,
                statement_lock_ms: self.statement_lock_ms(),
                retries: self.retries,
                check_interval: self.server_version.unwrap_or(0) >= CHECK_INTERVAL_SINCE,
            };
            return super::notx::apply(self.conn()?, self.pool, m, applied_at, &params).await;
        }
        let attempts = self.retries.saturating_add(1);
        for n in 1..=attempts {
            match self.attempt(m, applied_at).await? {
                Attempt::Done(applied) => return Ok(applied),
                Attempt::Blocked if n < attempts => {
                    tracing::warn!(
                        version = m.version(),
                        attempt = n,
                        "migration blocked by a conflicting lock; retrying"
                    );
                    tokio::time::sleep(backoff(n)).await;
                }
                Attempt::Blocked => {}
            }
        }
        Err(Error::MigrationBlocked {
            file: m.file_name(),
            attempts,
            lock_timeout_ms: self.statement_lock_ms(),
        })
    }
}

impl PgMigrator<'_> {
    /// One attempt at `m`: its own transaction under the migration lock.
    async fn attempt(&mut self, m: &Migration, applied_at: i64) -> Result<Attempt> {
        let c = self.locked().await?;
        finish(c, in_step(c, m, applied_at).await).await
    }
}

/// The body of an attempt at `m` in the step's transaction on `c`.
async fn in_step(
    c: &tokio_postgres::Client,
    m: &Migration,
    applied_at: i64,
) -> Result<Step<Attempt>> {
    // Re-read under the lock: another migrator may have applied it.
    if let Some(done) = recorded(c, m).await? {
        return Ok(Step::Open(Attempt::Done(done)));
    }
    let start = Instant::now();
    // One statement at a time (each one round trip, in the one
    // transaction), so a failure names its statement.
    for (i, statement) in m.statements().iter().enumerate() {
        if let Err(e) = c.batch_execute(statement).await {
            if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                return Ok(Step::Open(Attempt::Blocked));
            }
            return Err(statement_failed(m, i, statement, e));
        }
    }
    super::rekey::after_sql(c, m).await?;
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    // A started row of this version (an interrupted run of an earlier,
    // no-transaction form of the file) is superseded.
    record_applied(c, m, applied_at, ms).await?;
    Ok(Step::Committed(Attempt::Done(Applied::Now(ms))))
}

/// Replaces any started row of `m` with its applied row and commits the
/// step's transaction (which releases the lock).
pub(crate) async fn record_applied(
    c: &tokio_postgres::Client,
    m: &Migration,
    at: i64,
    ms: u64,
) -> Result<()> {
    let marker = crate::migrate::started_marker(m.version());
    let ms_i64 = i64::try_from(ms).unwrap_or(i64::MAX);
    let done = async {
        c.execute_typed(
            "DELETE FROM schema_migrations WHERE version = $1",
            &[(&marker, Type::INT8)],
        )
        .await?;
        c.execute_typed(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at, execution_ms) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                (&m.version(), Type::INT8),
                (&m.name(), Type::TEXT),
                (&m.checksum(), Type::TEXT),
                (&at, Type::INT8),
                (&ms_i64, Type::INT8),
            ],
        )
        .await?;
        c.batch_execute("COMMIT").await
    }
    .await;
    done.map_err(|e| failed(m, message(&e), e.into()))
}

/// The failure of statement `i` (from 0) of `m`: its number and first line,
/// then the server's message, as SQLite's runner reports it.
pub(crate) fn statement_failed(
    m: &Migration,
    i: usize,
    statement: &str,
    e: tokio_postgres::Error,
) -> Error {
    let what = format!(
        "statement {} ({}): {}",
        i + 1,
        first_line(statement),
        message(&e)
    );
    failed(m, what, e.into())
}

async fn table_exists(c: &Object) -> Result<bool> {
    c.query_typed_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(map)?
        .try_get(0)
        .map_err(map)
}

/// Whether the server is a standby (in recovery): read-only.
pub(crate) async fn in_recovery(c: &Object) -> Result<bool> {
    c.query_typed_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(map)?
        .try_get(0)
        .map_err(map)
}

/// The rows of `schema_migrations`, or none when the table does not exist.
/// Unnamed statements only: safe through a transaction pooler.
pub(crate) async fn applied(c: &Object) -> Result<Vec<AppliedRow>> {
    if !table_exists(c).await? {
        return Ok(Vec::new());
    }
    let columns: Vec<String> = c
        .query_typed(
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
        .query_typed(
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

/// Whether `m` is already recorded: `Some(Applied::Already)` with its
/// checksum, [`Error::MigrationDrift`] with another, `None` when it is not.
pub(crate) async fn recorded(
    c: &impl tokio_postgres::GenericClient,
    m: &Migration,
) -> Result<Option<Applied>> {
    let row = c
        .query_typed_opt(
            "SELECT checksum FROM schema_migrations WHERE version = $1",
            &[(&m.version(), Type::INT8)],
        )
        .await
        .map_err(map)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let sum: String = row.try_get(0).map_err(map)?;
    if sum == m.checksum() {
        Ok(Some(Applied::Already))
    } else {
        Err(Error::MigrationDrift {
            versions: vec![m.version()],
        })
    }
}
