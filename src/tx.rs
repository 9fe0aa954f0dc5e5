//! Units of work spanning repositories.

use std::time::Instant;

use crate::db::{Backend, Db};
use crate::error::{Error, Result};
use crate::exec::{Exec, TxState};
use crate::observe;
use crate::sqlite::WriteGuard;
use crate::{postgres, sqlite};

enum Conn {
    Sqlite(WriteGuard),
    Postgres(Box<deadpool_postgres::Object>),
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
    /// When it began and on which `db_system` (its metrics).
    began: Instant,
    sys: &'static str,
    /// PostgreSQL: statements unnamed (behind a transaction pooler).
    pg_unnamed: bool,
    /// The handle's read replicas: a commit raises their fence.
    replicas: Option<std::sync::Arc<crate::replicas::Replicas>>,
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
                guard.slot().with(sqlite::tx::begin)?;
                Ok(Tx {
                    conn: Some(Conn::Sqlite(guard)),
                    state: TxState::new(self, None),
                    began: Instant::now(),
                    sys: sqlite::SYSTEM,
                    pg_unnamed: false,
                    replicas: None,
                })
            }
            Backend::Postgres(p) => {
                // Own the connection before BEGIN is sent: if this future is
                // dropped mid-way, Tx's drop rolls back instead of a
                // connection going back to the pool inside a transaction.
                let mut tx = Tx {
                    conn: Some(Conn::Postgres(Box::new(p.get().await?))),
                    state: TxState::new(self, p.deadline()),
                    began: Instant::now(),
                    sys: postgres::SYSTEM,
                    pg_unnamed: p.unnamed(),
                    replicas: self.replica_arc(),
                };
                let begun = match &tx.conn {
                    Some(Conn::Postgres(o)) => p.begin(o).await,
                    _ => return Err(Error::Closed),
                };
                if let Err(e) = begun {
                    if let Some(Conn::Postgres(o)) = tx.conn.take() {
                        postgres::discard(*o, "unknown_state");
                    }
                    return Err(e);
                }
                Ok(tx)
            }
        }
    }
}

impl Tx {
    pub(crate) fn exec(&self) -> Exec<'_> {
        match &self.conn {
            Some(Conn::Sqlite(g)) => Exec::SqliteTx(g.slot(), &self.state),
            Some(Conn::Postgres(o)) => {
                Exec::PostgresTx(postgres::Client::new(o, self.pg_unnamed), &self.state)
            }
            // `conn` is taken only by commit/rollback/drop, which consume self.
            None => unreachable!("a finished Tx cannot be used"),
        }
    }

    /// Commits every change made through this unit of work.
    ///
    /// # Errors
    /// [`Error::Aborted`] when a call in it failed or was cancelled (the work
    /// is rolled back); the backend's error when the commit fails (rolled
    /// back too).
    pub async fn commit(mut self) -> Result<()> {
        if !self.state.can_commit() {
            let out = self.finish(End::Rollback).await;
            self.record("aborted");
            out?;
            return Err(Error::Aborted);
        }
        let out = self.finish(End::Commit).await;
        self.record(if out.is_ok() { "committed" } else { "aborted" });
        out
    }

    /// Rolls back every change made through this unit of work.
    ///
    /// # Errors
    /// The backend's error when the rollback fails (the connection is then
    /// discarded, which also ends the transaction).
    pub async fn rollback(mut self) -> Result<()> {
        let out = self.finish(End::Rollback).await;
        self.record("rolled_back");
        out
    }

    /// Records how it ended: `committed`, `rolled_back` or `aborted`.
    fn record(&self, outcome: &'static str) {
        observe::unit_of_work(self.sys, outcome, self.began.elapsed());
    }

    async fn finish(&mut self, end: End) -> Result<()> {
        match self.conn.take() {
            Some(Conn::Sqlite(g)) => g.slot().with(match end {
                End::Commit => sqlite::tx::commit,
                End::Rollback => sqlite::tx::rollback,
            }),
            Some(Conn::Postgres(o)) => {
                let out = match end {
                    End::Commit => postgres::tx::commit(&o).await,
                    End::Rollback => postgres::tx::rollback(&o).await,
                };
                if out.is_err() {
                    // State unknown: never hand this connection out again.
                    postgres::discard(*o, "unknown_state");
                } else if let (End::Commit, Some(set)) = (end, &self.replicas) {
                    // Committed: its position raises the read fence.
                    let c = postgres::Client::new(&o, self.pg_unnamed);
                    set.wrote(postgres::replicas::write_position(&c).await);
                }
                out
            }
            None => Ok(()),
        }
    }
}

/// How a unit of work ends.
#[derive(Clone, Copy)]
enum End {
    Commit,
    Rollback,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.conn {
            Some(Conn::Sqlite(_)) => Some("sqlite"),
            Some(Conn::Postgres(_)) => Some("postgres"),
            None => None,
        };
        f.debug_struct("Tx")
            .field("backend", &backend)
            .field("can_commit", &self.state.can_commit())
            .finish()
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.conn.is_some() {
            // Dropped without commit or rollback: rolled back here.
            self.record("rolled_back");
        }
        match self.conn.take() {
            None => {}
            Some(Conn::Sqlite(g)) => {
                // `with` fails only on a closed handle, whose connection is gone.
                if let Err(e) = g.slot().with(|c| {
                    sqlite::tx::rollback_on_drop(c);
                    Ok(())
                }) {
                    tracing::debug!(error = %e, "no rollback needed");
                }
            }
            Some(Conn::Postgres(o)) => match tokio::runtime::Handle::try_current() {
                // Roll back before the connection returns to the pool.
                Ok(rt) => {
                    rt.spawn(async move {
                        if let Err(e) = postgres::tx::rollback(&o).await {
                            tracing::warn!(error = %e, "rollback of a dropped unit of work failed");
                            postgres::discard(*o, "unknown_state");
                        }
                    });
                }
                // No runtime to roll back on: close the connection, which
                // makes the server roll back.
                Err(_) => drop(deadpool_postgres::Object::take(*o)),
            },
        }
    }
}
