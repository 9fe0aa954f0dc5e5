//! Units of work spanning repositories.

use deadpool_postgres::Object;

use crate::db::{Backend, Db};
use crate::error::Result;
use crate::postgres;
use crate::repos::{Accounts, Exec, Loadouts, ProgressionRepo, Sessions, Unlocks};
use crate::sqlite::{self, WriteGuard};

enum Conn {
    Sqlite(WriteGuard),
    Postgres(Box<Object>),
}

/// A unit of work: every repository call made through it commits together
/// with [`Tx::commit`], or not at all. Dropping it without committing rolls
/// it back.
///
/// SQLite: begins with `BEGIN IMMEDIATE` on the writer connection, so the
/// write lock is taken up front (a plain `BEGIN` that reads and then writes
/// can fail with `SQLITE_BUSY` at once, ignoring the busy timeout); other
/// writers of this handle wait for it to finish. PostgreSQL: a transaction
/// on one pooled connection, at the server's default isolation level.
pub struct Tx {
    conn: Option<Conn>,
}

impl Db {
    /// Begins a unit of work.
    ///
    /// # Errors
    /// [`Error::Closed`](crate::Error::Closed); [`Error::Timeout`](crate::Error::Timeout)
    /// when no connection (SQLite: the writer) is free within the acquire
    /// timeout or, on SQLite, another process holds the write lock past the
    /// busy timeout; [`Error::Unavailable`](crate::Error::Unavailable).
    pub async fn begin(&self) -> Result<Tx> {
        let conn = match self.live()? {
            Backend::Sqlite(p) => {
                let guard = p.write_guard().await?;
                guard.slot().with(|c| {
                    c.execute_batch("BEGIN IMMEDIATE")
                        .map_err(sqlite::error::map)
                })?;
                Conn::Sqlite(guard)
            }
            Backend::Postgres(p) => {
                let obj = p.get().await?;
                obj.batch_execute("BEGIN")
                    .await
                    .map_err(postgres::error::map)?;
                Conn::Postgres(Box::new(obj))
            }
        };
        Ok(Tx { conn: Some(conn) })
    }
}

impl Tx {
    fn exec(&self) -> Exec<'_> {
        match &self.conn {
            Some(Conn::Sqlite(g)) => Exec::SqliteTx(g.slot()),
            Some(Conn::Postgres(o)) => Exec::PostgresTx(o),
            // `conn` is taken only by commit/rollback/drop, which consume self.
            None => unreachable!("a finished Tx cannot be used"),
        }
    }

    /// The accounts repository, inside this unit of work.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts { ex: self.exec() }
    }
    /// The sessions repository, inside this unit of work.
    pub fn sessions(&self) -> Sessions<'_> {
        Sessions { ex: self.exec() }
    }
    /// The loadouts repository, inside this unit of work.
    pub fn loadouts(&self) -> Loadouts<'_> {
        Loadouts { ex: self.exec() }
    }
    /// The progression repository, inside this unit of work.
    pub fn progression(&self) -> ProgressionRepo<'_> {
        ProgressionRepo { ex: self.exec() }
    }
    /// The unlocks repository, inside this unit of work.
    pub fn unlocks(&self) -> Unlocks<'_> {
        Unlocks { ex: self.exec() }
    }

    /// Commits every change made through this unit of work.
    ///
    /// # Errors
    /// The backend's error when the commit fails; the work is rolled back
    /// then.
    pub async fn commit(mut self) -> Result<()> {
        self.finish("COMMIT").await
    }

    /// Rolls back every change made through this unit of work.
    ///
    /// # Errors
    /// The backend's error when the rollback fails (the connection is then
    /// discarded, which also ends the transaction).
    pub async fn rollback(mut self) -> Result<()> {
        self.finish("ROLLBACK").await
    }

    async fn finish(&mut self, sql: &str) -> Result<()> {
        match self.conn.take() {
            Some(Conn::Sqlite(g)) => g.slot().with(|c| match c.execute_batch(sql) {
                Ok(()) => Ok(()),
                Err(e) => {
                    if !c.is_autocommit() {
                        sqlite::rollback_quietly(c, "ROLLBACK");
                    }
                    Err(sqlite::error::map(e))
                }
            }),
            Some(Conn::Postgres(o)) => match o.batch_execute(sql).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // State unknown: never hand this connection out again.
                    drop(Object::take(*o));
                    Err(postgres::error::map(e))
                }
            },
            None => Ok(()),
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        match self.conn.take() {
            None => {}
            Some(Conn::Sqlite(g)) => {
                // `with` fails only on a closed handle, whose connection is gone.
                if let Err(e) = g.slot().with(|c| {
                    sqlite::rollback_quietly(c, "ROLLBACK");
                    Ok(())
                }) {
                    tracing::debug!(error = %e, "no rollback needed");
                }
            }
            Some(Conn::Postgres(o)) => match tokio::runtime::Handle::try_current() {
                // Roll back before the connection returns to the pool.
                Ok(rt) => {
                    rt.spawn(async move {
                        if let Err(e) = o.batch_execute("ROLLBACK").await {
                            tracing::warn!(error = %e, "rollback of a dropped unit of work failed");
                            drop(Object::take(*o));
                        }
                    });
                }
                // No runtime to roll back on: close the connection, which
                // makes the server roll back.
                Err(_) => drop(Object::take(*o)),
            },
        }
    }
}
