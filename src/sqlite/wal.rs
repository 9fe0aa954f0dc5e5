//! The write-ahead log during a sweep: batches commit without SQLite's
//! automatic checkpoint, and a passive checkpoint runs between batches on
//! a reader connection, outside the writer gate (D-126).
//!
//! SQLite's automatic checkpoint (`wal_autocheckpoint`, 1000 pages) runs
//! inside the commit that crossed the threshold, on the committing
//! connection: on persist's writer, so every other writer waits behind it.
//! A sweep batch dirties hundreds of pages, so most batches' commits carried
//! one. A PASSIVE checkpoint on another connection never blocks a writer
//! (it copies what no reader still needs and stops), so the log is still
//! copied back after every batch and cannot grow without bound.

use rusqlite::Connection;

use super::error::map;
use crate::error::Result;

/// Runs `f` on the writer with automatic checkpoints off, then restores the
/// connection's threshold (also when `f` fails).
pub(crate) fn without_autocheckpoint<T>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    let threshold: i64 = c
        .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
        .map_err(map)?;
    c.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(map)?;
    let out = f(c);
    let restored = c
        .pragma_update(None, "wal_autocheckpoint", threshold)
        .map_err(map);
    let out = out?;
    restored?;
    Ok(out)
}

/// What one `PRAGMA wal_checkpoint(PASSIVE)` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Another connection was checkpointing: this one did nothing.
    pub(crate) busy: bool,
    /// Frames in the log.
    pub(crate) log_frames: i64,
    /// Frames copied back into the database (by this or earlier
    /// checkpoints).
    pub(crate) checkpointed: i64,
}

/// A passive checkpoint on `c`: copies back the log frames no reader still
/// needs, without waiting on and without blocking any writer or reader.
pub(crate) fn checkpoint_passive(c: &Connection) -> Result<Checkpoint> {
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Checkpoint {
            busy: r.get::<_, i64>(0)? != 0,
            log_frames: r.get(1)?,
            checkpointed: r.get(2)?,
        })
    })
    .map_err(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL database whose connection checkpoints after every commit, and
    /// a second connection to observe the log from.
    fn wal_pair() -> (tempfile::TempDir, Connection, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let w = Connection::open(&path).unwrap();
        w.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get::<_, String>(0))
            .unwrap();
        w.execute_batch("CREATE TABLE t (x BLOB); PRAGMA wal_autocheckpoint = 1;")
            .unwrap();
        checkpoint_passive(&w).unwrap();
        let o = Connection::open(&path).unwrap();
        (dir, w, o)
    }

    /// One write of 20 rows of 3000 bytes: about 20 pages.
    fn insert_pages(c: &Connection) -> Result<usize> {
        c.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) \
             INSERT INTO t SELECT randomblob(3000) FROM n",
            [],
        )
        .map_err(map)
    }

    #[test]
    fn writes_without_autocheckpoint_leave_their_frames_for_the_passive_checkpoint() {
        // Control: with the threshold at 1 page, each commit checkpoints the
        // whole log itself, so the next write starts the log over and the
        // log holds the last write's frames only.
        let (_d, w, o) = wal_pair();
        insert_pages(&w).unwrap();
        insert_pages(&w).unwrap();
        let one_write = checkpoint_passive(&o).unwrap();
        assert!(!one_write.busy);
        assert!(one_write.log_frames > 20, "{one_write:?}");

        // Without automatic checkpoints the two writes' frames stay in the
        // log, none copied back, until a passive checkpoint on the other
        // connection copies every one of them.
        let (_d, w, o) = wal_pair();
        without_autocheckpoint(&w, insert_pages).unwrap();
        without_autocheckpoint(&w, insert_pages).unwrap();
        let both = checkpoint_passive(&o).unwrap();
        assert!(!both.busy);
        assert!(both.log_frames >= 2 * one_write.log_frames - 2, "{both:?}");
        assert_eq!(both.checkpointed, both.log_frames);
        // The connection's threshold is back, also after a failing batch.
        let threshold = |c: &Connection| {
            c.pragma_query_value(None, "wal_autocheckpoint", |r| r.get::<_, i64>(0))
                .unwrap()
        };
        assert_eq!(threshold(&w), 1);
        let failed = without_autocheckpoint(&w, |c| {
            c.execute("INSERT INTO missing VALUES (1)", []).map_err(map)
        });
        assert!(failed.is_err());
        assert_eq!(threshold(&w), 1);
    }
}
