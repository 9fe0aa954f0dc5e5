//! How a PostgreSQL migrator waits for the migration lock (D-106, D-141).
//!
//! The lock is a transaction-scoped advisory lock: every step of a migrator
//! (and a no-transaction migration's lock transaction) holds it for its
//! transaction. A waiter never keeps a transaction open while it waits: it
//! tries for the lock (`pg_try_advisory_xact_lock`) in a short transaction,
//! ended at once when the try fails, and tries again after a pause. A
//! concurrent index build (another migrator's no-transaction migration)
//! waits for every transaction that held an older snapshot when it looked,
//! until that transaction ends: a waiter blocked in a statement, or one idle
//! in a transaction after a try the build saw, would wait for the build's
//! lock holder while the build waited for it, until the waiter gave up.
//! Behind a transaction pooler, a waiter keeps no server connection either.
//!
//! The wait is bounded per holding transaction, as D-106's per-step wait
//! was: each try also reads which transaction holds the lock, and the
//! migration lock timeout starts again whenever that changes. A migrator
//! that applies many migrations takes the lock again right after each one,
//! so a waiter rarely gets it between two; without the restart the
//! waiter's one timeout would have to cover the holder's whole run.

use std::time::Duration;

use tokio::time::Instant;

use super::error::map;
use crate::error::{after, DatabaseError, Error, Result};

/// Advisory lock key of the migrator: the bytes of "persist\0" as an i64.
pub(crate) const LOCK_KEY: i64 = 0x7065_7273_6973_7400;

/// `pg_locks` shows a bigint advisory key as its high half in `classid`,
/// its low half in `objid`, with `objsubid = 1`.
const KEY_HIGH: u32 = (LOCK_KEY as u64 >> 32) as u32;
const KEY_LOW: u32 = (LOCK_KEY as u64 & 0xffff_ffff) as u32;

/// Opens a transaction on `c` holding the migration lock, trying for it in
/// short transactions; fails with a timeout once one holder has kept it for
/// `lock_wait` (see the module's notes).
///
/// A migration may legitimately run longer than the statement timeout
/// applications get. If the migrator dies mid-statement, the server notices
/// the lost client within 250 ms (`client_connection_check_interval`, 14+)
/// and ends the backend, and so the transaction and its lock, instead of
/// finishing the statement first. The migration's statements wait at most
/// `statement_lock_ms` for a table lock: sessions queued behind their lock
/// request are held up no longer than that. A role's own
/// `idle_in_transaction_session_timeout` would end a no-transaction
/// migration's lock transaction while its statements run elsewhere.
pub(crate) async fn take_lock(
    c: &tokio_postgres::Client,
    lock_wait: Duration,
    statement_lock_ms: u64,
    check_interval: bool,
) -> Result<()> {
    let check = if check_interval {
        "; SET LOCAL client_connection_check_interval = 250"
    } else {
        ""
    };
    let begin = format!(
        "BEGIN; SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0; \
         SET LOCAL lock_timeout = {statement_lock_ms}{check}"
    );
    let try_sql = try_sql();
    let mut poll = LockPoll::new(lock_wait);
    loop {
        c.batch_execute(&begin).await.map_err(map)?;
        let tried = try_lock(c, &try_sql).await?;
        if tried.got {
            return Ok(());
        }
        c.batch_execute("ROLLBACK").await.map_err(map)?;
        poll.pause(tried.holder).await?;
    }
}

/// What one try saw.
struct Tried {
    got: bool,
    /// The virtual transaction that holds the lock, when another one does.
    holder: Option<String>,
}

/// The try: the lock without waiting, and who else holds it.
fn try_sql() -> String {
    format!(
        "SELECT pg_try_advisory_xact_lock({LOCK_KEY}), \
         (SELECT l.virtualtransaction FROM pg_locks l \
          WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid() \
          AND l.classid = '{KEY_HIGH}'::oid AND l.objid = '{KEY_LOW}'::oid AND l.objsubid = 1 \
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
          LIMIT 1)"
    )
}

/// Runs the try ([`try_sql`]) in the caller's transaction.
///
/// In the simple protocol, which leaves no portal behind: the unnamed portal
/// of an extended-protocol query keeps its snapshot until the next one or
/// the transaction's end.
async fn try_lock(c: &tokio_postgres::Client, sql: &str) -> Result<Tried> {
    let reply = c.simple_query(sql).await.map_err(map)?;
    let row = reply.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    let Some(row) = row else {
        return Err(Error::Database(DatabaseError::postgres(
            None,
            "the try for the migration lock returned no row".into(),
            "pg_try_advisory_xact_lock: no row".into(),
        )));
    };
    Ok(Tried {
        got: row.get(0) == Some("t"),
        holder: row.get(1).map(str::to_owned),
    })
}

/// The pauses between a migrator's tries for the migration lock: 10 ms,
/// doubling up to 250 ms. Fails once `wait` has passed since the holder
/// last changed (or since the first try).
struct LockPoll {
    wait: Duration,
    /// `None`: a wait too long to represent, i.e. no limit.
    deadline: Option<Instant>,
    holder: Option<String>,
    pause: Duration,
}

impl LockPoll {
    fn new(wait: Duration) -> Self {
        LockPoll {
            wait,
            deadline: Instant::now().checked_add(wait),
            holder: None,
            pause: Duration::from_millis(10),
        }
    }

    /// After a failed try that saw `holder`: sleeps before the next try, or
    /// fails with a timeout once the same holder has kept the lock for
    /// `wait`.
    async fn pause(&mut self, holder: Option<String>) -> Result<()> {
        if holder.is_some() && holder != self.holder {
            self.holder = holder;
            self.deadline = Instant::now().checked_add(self.wait);
        }
        let left = match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        };
        if left.is_zero() {
            return Err(Error::timeout(after(
                "waiting for the migration lock, held by one transaction of another migrator \
                 all along,",
                self.wait,
            )));
        }
        tokio::time::sleep(self.pause.min(left)).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(250));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_halves_put_back_together_are_the_key() {
        assert_eq!(((KEY_HIGH as u64) << 32 | KEY_LOW as u64) as i64, LOCK_KEY);
    }

    #[test]
    fn a_wait_too_long_to_represent_has_no_deadline() {
        assert!(LockPoll::new(Duration::MAX).deadline.is_none());
        assert!(LockPoll::new(Duration::from_secs(60)).deadline.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_starts_again_when_the_holder_changes() {
        let mut poll = LockPoll::new(Duration::from_millis(100));
        // One holder for 100 ms: the wait runs out.
        let mut n = 0;
        while poll.pause(Some("3/7".into())).await.is_ok() {
            n += 1;
            assert!(n < 100, "the wait never ran out");
        }
        // A new holder after every pause: it never runs out.
        let mut poll = LockPoll::new(Duration::from_millis(100));
        for i in 0..50 {
            let r = poll.pause(Some(format!("3/{i}"))).await;
            assert!(r.is_ok(), "timed out at the {i}th holder: {r:?}");
        }
        // No holder seen (the lock was free at the try): the first wait
        // still bounds it.
        let mut poll = LockPoll::new(Duration::from_millis(100));
        let mut n = 0;
        while poll.pause(None).await.is_ok() {
            n += 1;
            assert!(n < 100, "the wait never ran out");
        }
    }
}
