//! Account ids handed out in a unit of work that rolls back are never handed
//! out again, as on PostgreSQL (whose sequences ignore rollbacks).
//!
//! `accounts.user_id` is `AUTOINCREMENT`: SQLite keeps the largest id issued
//! in `sqlite_sequence`, but that row is part of the transaction, so a
//! rollback also rolls the counter back and the next account gets an id a
//! caller has already seen. A unit of work therefore opens a savepoint right
//! after `BEGIN IMMEDIATE`; its rollback reads the counter, rolls back to
//! the savepoint, and when the counter moved, writes it back and commits
//! that one row, all without letting go of the write lock, so no other
//! connection or process can take an id in between. A unit of work that
//! created no account rolls back exactly as before.

use rusqlite::{Connection, OptionalExtension};

use super::error::map;
use super::tx::rollback_quietly;
use crate::error::Result;

/// How a unit of work begins on SQLite.
pub(crate) const BEGIN: &str = "BEGIN IMMEDIATE; SAVEPOINT persist_unit_of_work";

/// The largest account id issued so far, as the connection sees it (inside
/// or outside a transaction); 0 before the first.
fn issued(c: &Connection) -> Result<i64> {
    c.prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'accounts'")
        .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)).optional())
        .map(|v| v.unwrap_or(0))
        .map_err(map)
}

/// Moves the counter up to `seen` (never down), in the open transaction.
fn keep(c: &Connection, seen: i64) -> Result<()> {
    let updated = c
        .prepare_cached("UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'accounts'")
        .and_then(|mut st| st.execute([seen]))
        .map_err(map)?;
    if updated == 0 {
        c.prepare_cached("INSERT INTO sqlite_sequence (name, seq) VALUES ('accounts', ?1)")
            .and_then(|mut st| st.execute([seen]))
            .map_err(map)?;
    }
    Ok(())
}

/// Rolls back the unit of work open on `c`, keeping the account-id counter
/// past every id it handed out.
///
/// # Errors
/// SQLite's error when a step fails; the transaction is rolled back all the
/// same.
pub(crate) fn rollback(c: &Connection) -> Result<()> {
    if c.is_autocommit() {
        // SQLite ended the transaction itself (disk full, I/O error): what
        // it issued is gone with it. The connection's last inserted rowid
        // is the best bound left; keep it if the disk lets us (a failure is
        // logged: the unit of work is rolled back whatever happens here).
        if let Err(e) = keep_after_the_fact(c) {
            tracing::warn!(error = %e, "could not keep the account-id counter after a rollback");
        }
        return Ok(());
    }
    let result = (|| {
        let seen = issued(c)?;
        c.execute_batch("ROLLBACK TO persist_unit_of_work")
            .map_err(map)?;
        if seen > issued(c)? {
            keep(c, seen)?;
            c.execute_batch("COMMIT").map_err(map)
        } else {
            c.execute_batch("ROLLBACK").map_err(map)
        }
    })();
    if result.is_err() && !c.is_autocommit() {
        rollback_quietly(c);
    }
    result
}

/// [`rollback`] for paths that already report another error, or none (drop):
/// a failure is logged.
pub(crate) fn rollback_quietly_keeping_ids(c: &Connection) {
    if let Err(e) = rollback(c) {
        tracing::warn!(error = %e, "sqlite rollback failed");
    }
}

fn keep_after_the_fact(c: &Connection) -> Result<()> {
    let last = c.last_insert_rowid();
    if last <= issued(c)? {
        return Ok(());
    }
    c.execute_batch("BEGIN IMMEDIATE").map_err(map)?;
    let kept = keep(c, last).and_then(|()| c.execute_batch("COMMIT").map_err(map));
    if kept.is_err() && !c.is_autocommit() {
        rollback_quietly(c);
    }
    kept
}
