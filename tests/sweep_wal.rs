mod common;

// The SQLite sweep and the write-ahead log (issue 11): the batches commit
// without SQLite's automatic checkpoint, and a passive checkpoint between
// batches, outside the writer gate, copies the log back, so after a sweep
// every frame is in the database and the log stayed short.

use std::path::{Path, PathBuf};

use persist::{Db, NewAccount};

const T0: i64 = 1_700_000_000;
const HASH: &[u8] = b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
/// Expired sessions the sweep deletes.
const EXPIRED: i64 = 20_000;
/// Sessions that stay.
const LIVE: i64 = 100;

/// `n` sessions of `user` with random tokens expiring at random times in
/// the 1000 s from `expires_at` (so a batch, taken in expiry order, deletes
/// rows all over the token-ordered table, as a real sweep does), in one raw
/// transaction; then the log is copied back and emptied, so the
/// sweep starts from an empty log.
fn seed(path: &Path, user: i64, n: i64, expires_at: i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c.execute(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1) \
         INSERT INTO sessions (token, user_id, expires_at, created_at) \
         SELECT randomblob(32), ?2, ?3 + abs(random() % 1000), ?4 FROM k",
        rusqlite::params![n, user, expires_at, T0],
    )
    .unwrap();
    let (busy, _, _): (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(busy, 0, "the seed's checkpoint completed");
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The log's state from the wal-index (`-shm`) header, read without
/// touching the database (SQLite's file format: `mxFrame` at byte 16 of the
/// index header, `nBackfill` at byte 96, both native-endian u32): frames in
/// the log and frames already copied back into the database.
fn wal_index(path: &Path) -> (u32, u32) {
    let shm = std::fs::read(with_suffix(path, "-shm")).unwrap();
    let at = |i: usize| u32::from_ne_bytes(shm[i..i + 4].try_into().unwrap());
    (at(16), at(96))
}

async fn user(db: &Db) -> i64 {
    db.accounts()
        .create(&NewAccount {
            email: "sweeper@example.com",
            username: "sweeper",
            pass_hash: HASH,
            created_at: T0,
        })
        .await
        .unwrap()
        .user_id
        .0
}

#[tokio::test]
async fn sqlite_sweep_leaves_the_log_checkpointed_and_short() {
    let t = common::sqlite().await;
    let path = t.db.config().sqlite_path().unwrap().to_owned();
    let u = user(&t.db).await;
    seed(&path, u, EXPIRED, T0 + 10);
    seed(&path, u, LIVE, T0 + 10_000);
    assert_eq!(
        std::fs::metadata(with_suffix(&path, "-wal")).unwrap().len(),
        0
    );

    let deleted =
        t.db.sessions()
            .delete_expired(T0 + 2000, 1000)
            .await
            .unwrap();
    assert_eq!(deleted, EXPIRED as u64);

    // Every frame the sweep wrote is back in the database: the passive
    // checkpoint after the last batch copied it. (With the automatic
    // checkpoint inside the batches instead, 101-479 frames were left, none
    // copied back: it only runs once 1000 frames are waiting.)
    let (frames, backfilled) = wal_index(&path);
    assert!(frames > 0, "the sweep wrote to the log");
    assert_eq!(
        backfilled, frames,
        "frames {frames}, copied back {backfilled}"
    );
    // The log started over after each batch's checkpoint, so the file never
    // held much more than one batch (about 510 frames here). With SQLite's
    // automatic checkpoint inside the batches it only starts over once 1000
    // frames are waiting: this sweep left a 1480-1495-frame file that way.
    let wal = std::fs::read(with_suffix(&path, "-wal")).unwrap();
    // The log header's page size (big-endian u32 at byte 8); a frame is a
    // page and its 24-byte header, after the 32-byte log header.
    let page = u32::from_be_bytes(wal[8..12].try_into().unwrap());
    let wal_frames = (wal.len() as u64 - 32) / (u64::from(page) + 24);
    assert!(
        wal_frames > 0 && wal_frames < 1000,
        "the log grew to {wal_frames} frames"
    );

    // The sweep left the live sessions.
    let c = rusqlite::Connection::open(&path).unwrap();
    let left: i64 = c
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, LIVE);
    drop(c);
    assert_eq!(
        t.db.sessions()
            .delete_expired(T0 + 2000, 1000)
            .await
            .unwrap(),
        0
    );
    t.close().await;
}
