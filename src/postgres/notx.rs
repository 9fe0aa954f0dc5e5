//! No-transaction migrations on PostgreSQL (`-- persist:no-transaction`):
//! each statement runs on its own, outside a transaction, so
//! `CREATE INDEX CONCURRENTLY` and the like work.
//!
//! Three connections (the migrator's own and two opened outside the pool,
//! so no free pool slot is needed), so that it works the same directly and behind a
//! transaction pooler (PgBouncer `pool_mode = transaction`):
//! - the *lock* connection opens a transaction and takes the migrator's
//!   transaction-scoped advisory lock in it (the key of every other step, so
//!   they exclude each other). An open transaction keeps its server
//!   connection, also behind a transaction pooler, so the lock holds for the
//!   whole file; it ends with the transaction, also when the migrator dies.
//!   Its settings are `SET LOCAL`: nothing outlives it.
//! - the *statement* connection runs the file's statements one by one,
//!   outside any transaction, with no session setting (so nothing leaks into
//!   a pooler's server connections): each statement runs under the role's own
//!   `statement_timeout`;
//! - the *watch* connection stands in for `lock_timeout`: it watches the
//!   statement in `pg_stat_activity` (found by a comment put before it) and
//!   cancels it when it has waited for a table lock longer than the statement
//!   lock timeout; it then runs again after a backoff, a bounded number of
//!   times. The lock connection stays idle while a statement runs: a
//!   concurrent index build waits for every transaction that holds a snapshot
//!   when it starts a phase, and would wait for the lock transaction to end
//!   if that one were polling.
//!
//! The migration is recorded as started (a row with the negative version)
//! before the first statement and as applied (the started row replaced by
//! the usual one) in the lock connection's transaction, whose commit also
//! releases the lock. An interrupted run leaves the started row: `status`
//! shows the migration as incomplete, and the next `migrate` resumes it from
//! its first statement, after cancelling any statement of the dead run still
//! running on the server and dropping any INVALID index a failed concurrent
//! build left behind (so `IF NOT EXISTS` does not keep it).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::error::map;
use super::index_name::concurrent_index_name;
use super::migrate::{backoff, record_applied, recorded, statement_failed};
use super::migration_lock::take_lock;
use super::Pool;
use crate::error::{after, Error, Result};
use crate::migrate::{failed, started_marker, Applied, Migration};

/// What the no-transaction run needs from the migrator.
pub(crate) struct Params {
    pub lock_wait: Duration,
    pub statement_lock_ms: u64,
    pub retries: u32,
    /// The server knows `client_connection_check_interval` (14+).
    pub check_interval: bool,
}

/// The comment every statement of a no-transaction migration starts with
/// on the server: how the watchdog and a later run find it.
const TAG: &str = "/* persist:migration ";

/// Applies the no-transaction migration `m`: `lock` is the migrator's
/// connection; the statements run on a second one like `pool`'s (opened
/// outside it), watched from a third.
pub(crate) async fn apply(
    lock: &Object,
    pool: &Pool,
    m: &Migration,
    at: i64,
    p: &Params,
) -> Result<Applied> {
    take_lock(lock, p.lock_wait, p.statement_lock_ms, p.check_interval).await?;
    let result = locked(lock, pool, m, at, p).await;
    if result.is_err() {
        // Best effort: the migrator's connection is discarded afterwards.
        if let Err(e) = lock.batch_execute("ROLLBACK").await {
            tracing::debug!(error = %e, "rollback of the migration lock transaction");
        }
    }
    result
}

async fn locked(lock: &Object, pool: &Pool, m: &Migration, at: i64, p: &Params) -> Result<Applied> {
    if let Some(done) = recorded(&***lock, m).await? {
        lock.batch_execute("COMMIT").await.map_err(map)?;
        return Ok(done);
    }
    // Activity is read outside the lock transaction: inside one,
    // `pg_stat_activity` is a snapshot taken at its first read.
    let watch = Unpooled::open(pool, m).await?;
    cancel_orphans(watch.client(), p.lock_wait).await?;
    let side = Unpooled::open(pool, m).await?;
    // persist's own statement_timeout is for repository calls; an index
    // build runs under the role's. RESET sets nothing a pooler could hand
    // to another client.
    side.client()
        .batch_execute("RESET statement_timeout")
        .await
        .map_err(map)?;
    // The unnamed portal of the lock connection's last extended-protocol
    // query keeps its snapshot, so the idle transaction would keep an xmin,
    // and a concurrent index build waits for every transaction with an old
    // enough xmin to end: this one only ends after the build. A simple
    // query drops that portal and leaves none.
    lock.batch_execute("SELECT 1").await.map_err(map)?;
    let marker = started_marker(m.version());
    let new = side
        .client()
        .execute_typed(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at, execution_ms) \
             VALUES ($1, $2, $3, $4, 0) ON CONFLICT (version) DO NOTHING",
            &[
                (&marker, Type::INT8),
                (&m.name(), Type::TEXT),
                (&m.checksum(), Type::TEXT),
                (&at, Type::INT8),
            ],
        )
        .await
        .map_err(map)?;
    if new == 0 {
        tracing::warn!(
            version = m.version(),
            "resuming an interrupted no-transaction migration"
        );
    }
    let start = Instant::now();
    let tag = format!("{TAG}{} {} */ ", m.version(), nonce());
    for (i, statement) in m.statements().iter().enumerate() {
        let w = Watched {
            watch: watch.client(),
            side: side.client(),
            tag: &tag,
            lock_ms: p.statement_lock_ms,
        };
        run_statement(&w, m, i, statement, p).await?;
    }
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    record_applied(lock, m, at, ms).await?;
    Ok(Applied::Now(ms))
}

/// A connection of the pool's kind opened outside it, so a migration never
/// needs a free pool slot (`pool_size` 1 works); closed when dropped, also
/// with a statement still running on it.
struct Unpooled(tokio_postgres::Client, tokio::task::JoinHandle<()>);

impl Unpooled {
    async fn open(pool: &Pool, m: &Migration) -> Result<Unpooled> {
        let (client, task) = pool.open_unpooled().await.map_err(|e| {
            failed(
                m,
                format!("cannot open the migration's statement connection: {e}"),
                e.into(),
            )
        })?;
        Ok(Unpooled(client, task))
    }

    fn client(&self) -> &tokio_postgres::Client {
        &self.0
    }
}

impl Drop for Unpooled {
    fn drop(&mut self) {
        self.1.abort();
    }
}

/// A run-unique word for the statements' comment.
fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{nanos:08x}", std::process::id())
}

/// Cancels every statement of a no-transaction migration still running in
/// this database. Called under the lock: any such statement belongs to a
/// run that lost the lock (its migrator died), and must not race this one.
async fn cancel_orphans(c: &tokio_postgres::Client, wait: Duration) -> Result<()> {
    let deadline = crate::config::deadline_after(wait);
    loop {
        let rows = c
            .query_typed(
                "SELECT pid, pg_cancel_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND state = 'active' AND starts_with(query, $1)",
                &[(&TAG, Type::TEXT)],
            )
            .await
            .map_err(map)?;
        let Some(row) = rows.first() else {
            return Ok(());
        };
        let pid: i32 = row.try_get(0).map_err(map)?;
        tracing::warn!(pid, "cancelling a statement of an interrupted migration");
        if Instant::now() >= deadline {
            return Err(Error::timeout(after(
                &format!(
                    "waiting for a statement of an interrupted migration (server pid {pid}) to \
                     end"
                ),
                wait,
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A statement on the statement connection, watched from the watch one.
struct Watched<'a> {
    watch: &'a tokio_postgres::Client,
    side: &'a tokio_postgres::Client,
    /// The comment the statement is sent with.
    tag: &'a str,
    lock_ms: u64,
}

/// How a watched statement ended.
enum Ran {
    Done,
    /// It waited for a table lock longer than the statement lock timeout
    /// and was cancelled (or the role's own `lock_timeout` fired).
    Blocked,
    Failed(tokio_postgres::Error),
}

impl Watched<'_> {
    /// Runs `sql`; while it runs, polls its server process and cancels it
    /// once it has waited for a lock (other than the wait of a concurrent
    /// index build for older transactions, which blocks nobody) for longer
    /// than `lock_ms`. Fails when the watch connection fails; the statement
    /// connection is then discarded with the statement.
    async fn run(&self, sql: &str) -> Result<Ran> {
        let text = format!("{}{sql}", self.tag);
        let statement = self.side.batch_execute(&text);
        tokio::pin!(statement);
        let limit = Duration::from_millis(self.lock_ms);
        let tick = Duration::from_millis((self.lock_ms / 10).clamp(5, 100));
        let mut waiting_since: Option<Instant> = None;
        let mut cancelled = false;
        loop {
            tokio::select! {
                r = &mut statement => {
                    return Ok(match r {
                        Ok(()) => Ran::Done,
                        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ran::Blocked,
                        Err(e) if cancelled && e.code() == Some(&SqlState::QUERY_CANCELED) => {
                            Ran::Blocked
                        }
                        Err(e) => Ran::Failed(e),
                    });
                }
                () = tokio::time::sleep(tick), if !cancelled => {
                    match self.lock_wait_of_statement().await? {
                        Some(pid) => {
                            let since = *waiting_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= limit {
                                self.watch
                                    .query_typed("SELECT pg_cancel_backend($1)", &[(&pid, Type::INT4)])
                                    .await
                                    .map_err(map)?;
                                cancelled = true;
                            }
                        }
                        None => waiting_since = None,
                    }
                }
            }
        }
    }

    /// The server pid of the statement when it is waiting for a lock that
    /// queues other sessions.
    async fn lock_wait_of_statement(&self) -> Result<Option<i32>> {
        let row = self
            .watch
            .query_typed_opt(
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() AND state = 'active' \
                 AND starts_with(query, $1) AND wait_event_type = 'Lock' \
                 AND wait_event <> 'virtualxid' LIMIT 1",
                &[(&self.tag, Type::TEXT)],
            )
            .await
            .map_err(map)?;
        row.map(|r| r.try_get(0).map_err(map)).transpose()
    }
}

/// Statement `i` of `m`, retried with backoff when it cannot get its locks
/// within the statement lock timeout.
async fn run_statement(
    w: &Watched<'_>,
    m: &Migration,
    i: usize,
    statement: &str,
    p: &Params,
) -> Result<()> {
    let attempts = p.retries.saturating_add(1);
    for n in 1..=attempts {
        let ran = match concurrent_index_name(statement) {
            Some(index) => match drop_if_invalid(w, &index).await? {
                Ran::Done => w.run(statement).await?,
                other => other,
            },
            None => w.run(statement).await?,
        };
        match ran {
            Ran::Done => return Ok(()),
            Ran::Blocked if n < attempts => {
                tracing::warn!(
                    version = m.version(),
                    attempt = n,
                    "no-transaction statement blocked by a conflicting lock; retrying"
                );
                tokio::time::sleep(backoff(n)).await;
            }
            Ran::Blocked => break,
            Ran::Failed(e) => return Err(statement_failed(m, i, statement, e)),
        }
    }
    Err(Error::MigrationBlocked {
        file: m.file_name(),
        attempts,
        lock_timeout_ms: p.statement_lock_ms,
    })
}

/// Drops index `name` of the current schema when it is INVALID (left by a
/// failed or interrupted concurrent build), so the build runs again.
async fn drop_if_invalid(w: &Watched<'_>, name: &str) -> Result<Ran> {
    let invalid = w
        .watch
        .query_typed_opt(
            "SELECT format('%I.%I', n.nspname, cl.relname) FROM pg_index i \
             JOIN pg_class cl ON cl.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = cl.relnamespace \
             WHERE cl.relname = $1 AND n.nspname = current_schema() AND NOT i.indisvalid",
            &[(&name, Type::TEXT)],
        )
        .await
        .map_err(map)?;
    let Some(row) = invalid else {
        return Ok(Ran::Done);
    };
    let qualified: String = row.try_get(0).map_err(map)?;
    tracing::warn!(index = %qualified, "dropping an INVALID index left by a failed build");
    w.run(&format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}"))
        .await
}
