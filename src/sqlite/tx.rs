//! Transactions on a SQLite connection: units of work, and the
//! `BEGIN IMMEDIATE` blocks of the migrator and `copy`.

use rusqlite::Connection;

use super::error::map;
use super::ids;
use crate::error::{Error, Result};

/// Begins a unit of work. `BEGIN IMMEDIATE` takes the write lock up front: a
/// plain `BEGIN` that reads and then writes can fail with `SQLITE_BUSY` at
/// once, ignoring the busy timeout.
///
/// A savepoint follows, so that a rollback keeps the account-id counter past
/// every id the unit of work handed out ([`super::ids`]).
pub(crate) fn begin(c: &Connection) -> Result<()> {
    c.execute_batch(ids::BEGIN).map_err(map)
}

/// Fails with [`Error::Aborted`] when SQLite ended the transaction by itself
/// (`SQLITE_FULL`, IOERR in a statement without a statement journal): a unit
/// of work never goes on in autocommit mode.
pub(crate) fn ensure_open(c: &Connection) -> Result<()> {
    if c.is_autocommit() {
        return Err(Error::Aborted);
    }
    Ok(())
}

/// Commits a unit of work; [`Error::Aborted`] when SQLite already rolled it
/// back by itself. A failed commit is rolled back.
pub(crate) fn commit(c: &Connection) -> Result<()> {
    ensure_open(c)?;
    c.execute_batch("COMMIT").map_err(|e| {
        ids::rollback_quietly_keeping_ids(c);
        map(e)
    })
}

/// Rolls back a unit of work, keeping the account-id counter past the ids
/// it handed out ([`super::ids`]).
pub(crate) fn rollback(c: &Connection) -> Result<()> {
    ids::rollback(c)
}

/// Rolls back a unit of work that is dropped unfinished.
pub(crate) fn rollback_on_drop(c: &Connection) {
    ids::rollback_quietly_keeping_ids(c);
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction on `c`: commits when it
/// succeeds, rolls back when it or the commit fails.
pub(crate) fn in_immediate_transaction<T>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    c.execute_batch("BEGIN IMMEDIATE").map_err(map)?;
    match f(c) {
        Ok(out) => match c.execute_batch("COMMIT") {
            Ok(()) => Ok(out),
            Err(e) => {
                rollback_quietly(c);
                Err(map(e))
            }
        },
        Err(e) => {
            rollback_quietly(c);
            Err(e)
        }
    }
}

/// Rolls back after a failure that is already being reported; a failing
/// rollback is logged, since the first error is the one the caller needs.
pub(crate) fn rollback_quietly(c: &Connection) {
    if let Err(e) = c.execute_batch("ROLLBACK") {
        tracing::warn!(error = %e, "sqlite rollback failed");
    }
}
