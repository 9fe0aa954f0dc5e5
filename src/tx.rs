//! Units of work spanning repositories.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use deadpool_postgres::Object;

use crate::db::{Backend, Db};
use crate::error::{Error, Result};
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
///
/// Any failed statement aborts the unit of work on both backends (PostgreSQL
/// aborts the transaction; SQLite is made to agree): later calls and
/// [`Tx::commit`] return [`Error::Aborted`]. So does a call whose future was
/// dropped mid-way (its statement may still have run on the server).
/// [`Error::NotFound`] and [`Error::InvalidInput`] do not abort: nothing
/// failed in the database.
pub struct Tx {
    conn: Option<Conn>,
    state: TxState,
}

/// Health of a unit of work: calls in flight (a call dropped mid-way stays
/// counted) and whether one failed.
#[derive(Default)]
pub(crate) struct TxState {
    in_flight: AtomicU32,
    failed: AtomicBool,
    /// PostgreSQL: the client-side deadline of one call.
    deadline: Option<std::time::Duration>,
}

impl TxState {
    pub(crate) fn enter(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Aborted);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    pub(crate) fn leave<T>(&self, out: &Result<T>) {
        if let Err(e) = out {
            if !matches!(e, Error::NotFound(_)) {
                self.failed.store(true, Ordering::Release);
            }
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn deadline(&self) -> Option<std::time::Duration> {
        self.deadline
    }

    fn can_commit(&self) -> bool {
        !self.failed.load(Ordering::Acquire) && self.in_flight.load(Ordering::Acquire) == 0
    }
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
        match self.live()? {
            Backend::Sqlite(p) => {
                let guard = p.write_guard().await?;
                guard.slot().with(|c| {
                    c.execute_batch(sqlite::ids::BEGIN)
                        .map_err(sqlite::error::map)
                })?;
                Ok(Tx {
                    conn: Some(Conn::Sqlite(guard)),
                    state: TxState::default(),
                })
            }
            Backend::Postgres(p) => {
                // Own the connection before BEGIN is sent: if this future is
                // dropped mid-way, Tx's drop rolls back instead of a
                // connection going back to the pool inside a transaction.
                let mut tx = Tx {
                    conn: Some(Conn::Postgres(Box::new(p.get().await?))),
                    state: TxState {
                        deadline: p.deadline(),
                        ..TxState::default()
                    },
                };
                let begun = match &tx.conn {
                    Some(Conn::Postgres(o)) => o.batch_execute("BEGIN").await,
                    _ => return Err(Error::Closed),
                };
                if let Err(e) = begun {
                    if let Some(Conn::Postgres(o)) = tx.conn.take() {
                        drop(Object::take(*o));
                    }
                    return Err(postgres::error::map(e));
                }
                Ok(tx)
            }
        }
    }
}

impl Tx {
    fn exec(&self) -> Exec<'_> {
        match &self.conn {
            Some(Conn::Sqlite(g)) => Exec::SqliteTx(g.slot(), &self.state),
            Some(Conn::Postgres(o)) => Exec::PostgresTx(o, &self.state),
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
    /// [`Error::Aborted`] when a call in it failed or was cancelled (the work
    /// is rolled back); the backend's error when the commit fails (rolled
    /// back too).
    pub async fn commit(mut self) -> Result<()> {
        if !self.state.can_commit() {
            self.finish("ROLLBACK").await?;
            return Err(Error::Aborted);
        }
        // On PostgreSQL, COMMIT of an aborted transaction answers as a
        // rollback without an error; the SELECT fails in that state, which
        // stops the batch before COMMIT and reports it.
        let sql = match self.conn {
            Some(Conn::Postgres(_)) => "SELECT 1; COMMIT",
            _ => "COMMIT",
        };
        self.finish(sql).await
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
            Some(Conn::Sqlite(g)) if sql == "ROLLBACK" => g.slot().with(sqlite::ids::rollback),
            Some(Conn::Sqlite(g)) => g.slot().with(|c| {
                // SQLite may have rolled the transaction back by itself
                // (SQLITE_FULL or IOERR in a statement without a statement
                // journal): nothing is left to roll back or to commit.
                if c.is_autocommit() {
                    return if sql == "COMMIT" {
                        Err(Error::Aborted)
                    } else {
                        Ok(())
                    };
                }
                match c.execute_batch(sql) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        sqlite::ids::rollback_quietly_keeping_ids(c);
                        Err(sqlite::error::map(e))
                    }
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
                    sqlite::ids::rollback_quietly_keeping_ids(c);
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
