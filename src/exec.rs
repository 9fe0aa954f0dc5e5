//! How one repository call runs: on the pool or inside a unit of work, with
//! a tracing span, the shared read lanes, the client deadline and the unit
//! of work's health. The one place every repository call goes through.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tracing::Instrument;

use crate::backend::BackendKind;
use crate::db::{Backend, Db};
use crate::error::{Error, Result};
use crate::observe;
use crate::postgres::Client;
use crate::{postgres, sqlite};

/// The log target of the per-call spans and events, kept stable for log
/// filters (`RUST_LOG=persist::repos=debug`).
const CALL_TARGET: &str = "persist::repos";

/// The span's `backend` field (the names the logs have always used).
fn backend_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Sqlite => "sqlite",
        BackendKind::Postgres => "postgres",
    }
}

/// Whether a call only reads: which SQLite connection a pool call uses,
/// whether a PostgreSQL pool call may run on a shared connection (D-041),
/// and whether a read replica may answer it (outside a unit of work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Read,
    Write,
}

/// Where a repository call runs.
#[derive(Clone, Copy)]
pub(crate) enum Exec<'a> {
    Db(&'a Db),
    SqliteTx(&'a sqlite::WriterSlot, &'a TxState),
    PostgresTx(Client<'a>, &'a TxState),
}

impl Exec<'_> {
    /// The id of the handle the call runs on (keys the metric handles).
    fn db_id(&self) -> u64 {
        match self {
            Exec::Db(db) => db.id(),
            Exec::SqliteTx(_, state) | Exec::PostgresTx(_, state) => state.db_id,
        }
    }

    pub(crate) fn backend(&self) -> BackendKind {
        match self {
            Exec::Db(db) => db.backend(),
            Exec::SqliteTx(..) => BackendKind::Sqlite,
            Exec::PostgresTx(..) => BackendKind::Postgres,
        }
    }

    /// Runs one repository call: `lite` on SQLite, `pg` on PostgreSQL, on
    /// the connection this `Exec` designates, inside a span per call
    /// (operation, backend, duration, outcome kind), and records its
    /// latency and outcome ([`observe::call`]). Values are never recorded:
    /// no token, hash or email reaches a log or a label.
    pub(crate) async fn run<T>(
        self,
        op: &'static str,
        mode: Mode,
        lite: impl FnOnce(&Connection) -> Result<T>,
        pg: impl AsyncFnOnce(&Client<'_>) -> Result<T> + Clone,
    ) -> Result<T> {
        let backend = self.backend();
        let span = tracing::debug_span!(target: CALL_TARGET, "persist", op, backend = backend_name(backend));
        let start = Instant::now();
        let out = self.dispatch(mode, lite, pg).instrument(span.clone()).await;
        let took = start.elapsed();
        let outcome = observe::outcome(&out);
        observe::call(self.db_id(), observe::system(backend), op, outcome, took);
        if !span.is_disabled() {
            span.in_scope(|| {
                tracing::debug!(
                    target: CALL_TARGET,
                    elapsed_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                    outcome,
                    "call"
                )
            });
        }
        out
    }

    /// Whether a sweep batch here runs with the SQLite automatic checkpoint
    /// off and is followed by [`Exec::checkpoint_passive`]: on a SQLite file
    /// pool, outside a unit of work (whose commit holds the writer anyway).
    pub(crate) fn sweep_checkpoints_off_gate(&self) -> bool {
        match self {
            Exec::Db(db) => matches!(
                db.live(),
                Ok(Backend::Sqlite(pool)) if pool.sweep_checkpoints_off_gate()
            ),
            Exec::SqliteTx(..) | Exec::PostgresTx(..) => false,
        }
    }

    /// A passive WAL checkpoint outside the writer gate (SQLite pool only;
    /// nothing elsewhere). A failure is logged, not returned: the rows are
    /// deleted, and the writers' automatic checkpoints still bound the log.
    pub(crate) async fn checkpoint_passive(self) {
        let Exec::Db(db) = self else { return };
        let Ok(Backend::Sqlite(pool)) = db.live() else {
            return;
        };
        match pool.checkpoint_passive().await {
            Ok(ck) => tracing::trace!(
                target: CALL_TARGET,
                busy = ck.busy,
                log_frames = ck.log_frames,
                checkpointed = ck.checkpointed,
                "passive checkpoint after a sweep batch"
            ),
            Err(e) => tracing::warn!(
                target: CALL_TARGET,
                error = %e,
                "passive checkpoint after a sweep batch failed"
            ),
        }
    }

    async fn dispatch<T>(
        self,
        mode: Mode,
        lite: impl FnOnce(&Connection) -> Result<T>,
        pg: impl AsyncFnOnce(&Client<'_>) -> Result<T> + Clone,
    ) -> Result<T> {
        match self {
            Exec::Db(db) => match db.live()? {
                Backend::Sqlite(pool) => match mode {
                    Mode::Read => pool.read(lite).await,
                    Mode::Write => pool.write(lite).await,
                },
                // The PostgreSQL branches are boxed (D-137): inline, their
                // state (kilobytes) would be part of every call's future,
                // SQLite's too, and be moved with it. One allocation per
                // PostgreSQL call, next to a round trip.
                // Without replicas: one branch, the pool as before.
                Backend::Postgres(pool) => match db.replica_set() {
                    None => Box::pin(pool.call(mode == Mode::Read, pg)).await,
                    Some(set) => match mode {
                        Mode::Read => Box::pin(set.read(pool, db.floor(), pg)).await,
                        Mode::Write => Box::pin(set.write(pool, pg)).await,
                    },
                },
            },
            Exec::SqliteTx(slot, state) => {
                state.enter()?;
                let out = slot.with(|c| {
                    sqlite::tx::ensure_open(c)?;
                    lite(c)
                });
                state.leave(&out);
                out
            }
            Exec::PostgresTx(client, state) => {
                state.enter()?;
                let out = Box::pin(postgres::with_deadline(state.deadline(), pg(&client))).await;
                state.leave(&out);
                out
            }
        }
    }
}

/// Health of a unit of work: calls in flight (a call dropped mid-way stays
/// counted) and whether one failed.
#[derive(Default)]
pub(crate) struct TxState {
    in_flight: AtomicU32,
    failed: AtomicBool,
    /// PostgreSQL: the client-side deadline of one call.
    deadline: Option<Duration>,
    /// The handle the unit of work was begun on ([`Db::id`]).
    db_id: u64,
}

impl TxState {
    /// The state of a unit of work begun on `db`, with the client-side
    /// deadline of one call.
    pub(crate) fn new(db: &Db, deadline: Option<Duration>) -> Self {
        TxState {
            deadline,
            db_id: db.id(),
            ..TxState::default()
        }
    }

    fn enter(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Aborted);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Any failure but [`Error::NotFound`] aborts the unit of work.
    fn leave<T>(&self, out: &Result<T>) {
        if let Err(e) = out {
            if !matches!(e, Error::NotFound(_)) {
                self.failed.store(true, Ordering::Release);
            }
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// No call failed and none is still in flight.
    pub(crate) fn can_commit(&self) -> bool {
        !self.failed.load(Ordering::Acquire) && self.in_flight.load(Ordering::Acquire) == 0
    }
}

#[cfg(test)]
mod tests {
    /// D-137: a call's future holds the PostgreSQL branches boxed, so a
    /// SQLite call does not move kilobytes of PostgreSQL state with every
    /// poll and await (the session look-up's future: 5,160 bytes unboxed,
    /// 816 boxed, in a release build and in this test's debug build alike).
    #[tokio::test]
    async fn a_call_future_does_not_carry_the_postgres_branches_inline() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("size.db").display());
        let db = crate::open(&crate::Config::from_url(&url).unwrap())
            .await
            .unwrap();
        let sessions = db.sessions();
        let lookup = sessions.find_by_token("a-token-of-some-length");
        let size = std::mem::size_of_val(&lookup);
        eprintln!("find_by_token future: {size} bytes");
        assert!(size <= 2048, "find_by_token's future is {size} bytes");
        drop(lookup);
        db.close().await;
    }
}
