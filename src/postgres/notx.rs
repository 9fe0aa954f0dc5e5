//! No-transaction migrations on PostgreSQL (`-- persist:no-transaction`):
//! each statement runs on its own, outside a transaction, so
//! `CREATE INDEX CONCURRENTLY` and the like work.
//!
//! The migrator holds the session advisory lock (the same key as the
//! transaction-scoped one of the other steps, so the two exclude each other)
//! across the statements. The migration is recorded as started (a row with
//! the negative version) before the first statement and as applied (the
//! started row replaced by the usual one, in one transaction) after the
//! last. An interrupted run leaves the started row: `status` shows the
//! migration as incomplete, and the next `migrate` resumes it from its first
//! statement, after dropping any INVALID index a failed concurrent build of
//! one of its indexes left behind (so `IF NOT EXISTS` does not keep it).
//!
//! A session lock means nothing behind a transaction pooler: before each
//! statement the server session is checked to still be the one holding the
//! lock, and a change stops the migration with an error naming the direct-URL
//! workaround. Session settings made here (`statement_timeout`,
//! `lock_timeout`) die with the connection, which the migrator never hands
//! back to the pool.

use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::error::{map, message};
use super::migrate::{backoff, LOCK_KEY};
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

/// Applies the no-transaction migration `m` under the session lock.
pub(crate) async fn apply(c: &Object, m: &Migration, at: i64, p: &Params) -> Result<Applied> {
    let pid = session_lock(c, p.lock_wait).await?;
    let result = locked(c, m, at, p, pid).await;
    let unlocked = c
        .query_typed("SELECT pg_advisory_unlock($1)", &[(&LOCK_KEY, Type::INT8)])
        .await
        .map_err(map);
    let applied = result?;
    unlocked?;
    Ok(applied)
}

/// Takes the session lock, waiting at most `wait`; the holder's backend pid.
async fn session_lock(c: &Object, wait: Duration) -> Result<i32> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(10);
    loop {
        let row = c
            .query_typed_one(
                "SELECT pg_try_advisory_lock($1), pg_backend_pid()",
                &[(&LOCK_KEY, Type::INT8)],
            )
            .await
            .map_err(map)?;
        if row.try_get::<_, bool>(0).map_err(map)? {
            return row.try_get(1).map_err(map);
        }
        if Instant::now() >= deadline {
            return Err(Error::timeout(after(
                "waiting for the migration lock held by another migrator",
                wait,
            )));
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

async fn locked(c: &Object, m: &Migration, at: i64, p: &Params, pid: i32) -> Result<Applied> {
    // A killed migrator's backend notices the lost client within 250 ms and
    // ends, freeing the session lock (PostgreSQL 14+).
    let check = if p.check_interval {
        "; SET client_connection_check_interval = 250"
    } else {
        ""
    };
    c.batch_execute(&format!(
        "SET statement_timeout = 0; SET lock_timeout = {}{check}",
        p.statement_lock_ms
    ))
    .await
    .map_err(map)?;
    if let Some(done) = super::migrate::recorded(&***c, m).await? {
        return Ok(done);
    }
    let marker = started_marker(m.version());
    let new = c
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
    for statement in m.statements() {
        run_statement(c, m, &statement, p, pid).await?;
    }
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    record_applied(c, m, at, ms).await?;
    Ok(Applied::Now(ms))
}

/// Replaces the started row of `m` with its applied row, in one transaction.
async fn record_applied(c: &Object, m: &Migration, at: i64, ms: u64) -> Result<()> {
    let marker = started_marker(m.version());
    let ms_i64 = i64::try_from(ms).unwrap_or(i64::MAX);
    c.batch_execute("BEGIN").await.map_err(map)?;
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
    if let Err(e) = done {
        // Best effort: the connection is discarded after the run anyway.
        if let Err(r) = c.batch_execute("ROLLBACK").await {
            tracing::debug!(error = %r, "rollback after a failed record");
        }
        return Err(failed(m, message(&e), e.into()));
    }
    Ok(())
}

/// One statement, on the session holding the lock, retried with backoff
/// when it cannot get its locks within the lock timeout.
async fn run_statement(
    c: &Object,
    m: &Migration,
    statement: &str,
    p: &Params,
    pid: i32,
) -> Result<()> {
    let attempts = p.retries.saturating_add(1);
    for n in 1..=attempts {
        same_session(c, m, pid).await?;
        if let Some(index) = concurrent_index_name(statement) {
            drop_if_invalid(c, &index).await?;
        }
        match c.batch_execute(statement).await {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) && n < attempts => {
                tracing::warn!(
                    version = m.version(),
                    attempt = n,
                    "no-transaction statement blocked by a conflicting lock; retrying"
                );
                tokio::time::sleep(backoff(n)).await;
            }
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(Error::MigrationBlocked {
                    file: m.file_name(),
                    attempts,
                    lock_timeout_ms: p.statement_lock_ms,
                })
            }
            Err(e) => return Err(failed(m, message(&e), e.into())),
        }
    }
    Ok(())
}

/// Fails when the statements no longer reach the session holding the lock.
async fn same_session(c: &Object, m: &Migration, pid: i32) -> Result<()> {
    let now: i32 = c
        .query_typed_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(map)?
        .try_get(0)
        .map_err(map)?;
    if now == pid {
        return Ok(());
    }
    Err(failed(
        m,
        "a no-transaction migration needs one server session for its lock, and the server \
         session changed between statements (a transaction pooler such as PgBouncer in \
         pool_mode = transaction): run migrate with a direct URL to the server"
            .into(),
        "server session changed".into(),
    ))
}

/// Drops index `name` of the current schema when it is INVALID (left by a
/// failed or interrupted concurrent build), so the build runs again.
async fn drop_if_invalid(c: &Object, name: &str) -> Result<()> {
    let invalid = c
        .query_typed_opt(
            "SELECT format('%I.%I', n.nspname, cl.relname) FROM pg_index i \
             JOIN pg_class cl ON cl.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = cl.relnamespace \
             WHERE cl.relname = $1 AND n.nspname = current_schema() AND NOT i.indisvalid",
            &[(&name, Type::TEXT)],
        )
        .await
        .map_err(map)?;
    if let Some(row) = invalid {
        let qualified: String = row.try_get(0).map_err(map)?;
        tracing::warn!(index = %qualified, "dropping an INVALID index left by a failed build");
        c.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}"))
            .await
            .map_err(map)?;
    }
    Ok(())
}

/// The index name of `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS]
/// name ...`, unquoted; `None` for other statements and unnamed indexes.
pub(crate) fn concurrent_index_name(statement: &str) -> Option<String> {
    let code: String = statement
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let mut words = code.split_whitespace().flat_map(|w| {
        let cut = w.find('(').unwrap_or(w.len());
        [&w[..cut]].into_iter().filter(|s| !s.is_empty())
    });
    let mut next = || words.next().map(str::to_string);
    let is = |w: &Option<String>, k: &str| w.as_deref().is_some_and(|w| w.eq_ignore_ascii_case(k));
    if !is(&next(), "CREATE") {
        return None;
    }
    let mut w = next();
    if is(&w, "UNIQUE") {
        w = next();
    }
    if !is(&w, "INDEX") || !is(&next(), "CONCURRENTLY") {
        return None;
    }
    let mut name = next();
    if is(&name, "IF") {
        let (a, b) = (next(), next());
        if !is(&a, "NOT") || !is(&b, "EXISTS") {
            return None;
        }
        name = next();
    }
    let name = name.filter(|n| !n.eq_ignore_ascii_case("ON"))?;
    let last = name.rsplit('.').next().unwrap_or(&name);
    Some(
        match last.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(q) => q.replace("\"\"", "\""),
            None => last.to_lowercase(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::concurrent_index_name as name;

    #[test]
    fn finds_the_name_of_a_concurrent_index_build() {
        assert_eq!(
            name("-- c\nCREATE INDEX CONCURRENTLY IF NOT EXISTS Sessions_X ON sessions (a)"),
            Some("sessions_x".into())
        );
        assert_eq!(
            name("create unique index concurrently \"Odd\"\"Name\" on t(a)"),
            Some("Odd\"Name".into())
        );
        assert_eq!(
            name("CREATE INDEX CONCURRENTLY public.ix ON t (a)"),
            Some("ix".into())
        );
        assert_eq!(name("CREATE INDEX CONCURRENTLY ON t (a)"), None);
        assert_eq!(name("CREATE INDEX ix ON t (a)"), None);
        assert_eq!(name("DROP INDEX CONCURRENTLY ix"), None);
    }
}
