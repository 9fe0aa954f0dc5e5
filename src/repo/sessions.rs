//! The `sessions` repository.

use sha2::{Digest, Sha256};

use crate::backend::BackendKind;
use crate::error::{Error, Result, Violation};
use crate::exec::{Exec, Mode};
use crate::models::{Page, Session, SessionCursor, SessionId, UserId};
use crate::{observe, validate};
use crate::{postgres, sqlite};

/// Most rows one sweep batch deletes.
const SWEEP_BATCH_MAX: i64 = 100_000;

pub(crate) fn token_digest(token: &str) -> Result<[u8; 32]> {
    validate::token(token)?;
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// `sessions`: keyed by the SHA-256 digest of the bearer token; the token
/// itself is never stored.
#[derive(Clone, Copy)]
pub struct SessionsRepo<'a> {
    ex: Exec<'a>,
}

impl std::fmt::Debug for SessionsRepo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionsRepo").finish_non_exhaustive()
    }
}

impl<'a> SessionsRepo<'a> {
    pub(super) fn new(ex: Exec<'a>) -> Self {
        SessionsRepo { ex }
    }
}

impl SessionsRepo<'_> {
    /// Stores a session for the bearer token the caller issued.
    ///
    /// # Errors
    /// [`Error::UnknownUser`](crate::Error::UnknownUser); [`Error::Conflict`](crate::Error::Conflict)`(SessionToken)` when the
    /// token is already in use; [`Error::InvalidInput`](crate::Error::InvalidInput) for a token shorter
    /// than 22 characters ([`Violation::TooShort`](crate::Violation::TooShort): 16 random bytes in
    /// base64url, the floor below which the stored digest could be reversed)
    /// or over 512 bytes, timestamps out of range, or `expires_at`
    /// before `created_at`.
    pub async fn create(
        &self,
        token: &str,
        user: UserId,
        created_at: i64,
        expires_at: i64,
    ) -> Result<Session> {
        validate::new_token(token)?;
        let digest = token_digest(token)?;
        validate::user_id(user)?;
        validate::timestamp("created_at", created_at)?;
        validate::timestamp("expires_at", expires_at)?;
        if expires_at < created_at {
            return Err(Error::invalid(
                "expires_at",
                Violation::OutOfRange {
                    min: created_at,
                    max: validate::TIMESTAMP_MAX,
                },
            ));
        }
        self.ex
            .run(
                "sessions.create",
                Mode::Write,
                |c| sqlite::sessions::create(c, &digest, user, created_at, expires_at),
                async |p| {
                    postgres::sessions::create(p, &digest, user, created_at, expires_at).await
                },
            )
            .await?;
        Ok(Session {
            id: session_id(&digest),
            user_id: user,
            created_at,
            expires_at,
        })
    }

    /// The session of a bearer token: one indexed point read. Expired
    /// sessions are returned too; checking `expires_at` is the caller's rule.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for an empty or over-long
    /// token.
    pub async fn find_by_token(&self, token: &str) -> Result<Session> {
        let digest = token_digest(token)?;
        let (user_id, created_at, expires_at) = self
            .ex
            .run(
                "sessions.find_by_token",
                Mode::Read,
                |c| sqlite::sessions::lookup(c, &digest),
                async |p| postgres::sessions::lookup(p, &digest).await,
            )
            .await?;
        Ok(Session {
            id: session_id(&digest),
            user_id,
            created_at,
            expires_at,
        })
    }

    /// Deletes the session of a bearer token (logout).
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) when no session has this token.
    pub async fn delete(&self, token: &str) -> Result<()> {
        let digest = token_digest(token)?;
        self.ex
            .run(
                "sessions.delete",
                Mode::Write,
                |c| sqlite::sessions::delete(c, &digest),
                async |p| postgres::sessions::delete(p, &digest).await,
            )
            .await
    }

    /// Deletes every session of a user (password change, ban); returns how
    /// many there were.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1.
    pub async fn delete_all_for_user(&self, user: UserId) -> Result<u64> {
        validate::user_id(user)?;
        self.ex
            .run(
                "sessions.delete_all_for_user",
                Mode::Write,
                |c| sqlite::sessions::delete_for_user(c, user),
                async |p| postgres::sessions::delete_for_user(p, user).await,
            )
            .await
    }

    /// All of a user's sessions, oldest first. Reads and returns every one:
    /// its cost grows with the user's session count, which a client
    /// hammering login can make large. Prefer
    /// [`SessionsRepo::list_for_user_page`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1.
    pub async fn list_for_user(&self, user: UserId) -> Result<Vec<Session>> {
        validate::user_id(user)?;
        self.ex
            .run(
                "sessions.list_for_user",
                Mode::Read,
                |c| sqlite::sessions::list_for_user(c, user),
                async |p| postgres::sessions::list_for_user(p, user).await,
            )
            .await
    }

    /// One page of a user's sessions, oldest first (by creation time, then
    /// id): at most `limit` sessions after `after` (`None`: from the first).
    /// Keyset pagination: a page reads an index range, whatever page it is,
    /// and sessions created or deleted between pages never make one repeat
    /// or skip another.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1 or a `limit` outside
    /// `1..=`[`MAX_PAGE_SIZE`](crate::MAX_PAGE_SIZE).
    pub async fn list_for_user_page(
        &self,
        user: UserId,
        after: Option<SessionCursor>,
        limit: u32,
    ) -> Result<Page<Session, SessionCursor>> {
        validate::user_id(user)?;
        let rows = super::page_rows(limit)?;
        // Sessions sort by (created_at, token digest); the cursor holds the
        // first 16 bytes of the digest (the public id), so the rest is padded
        // with 0xFF to sort after every digest with that prefix. No cursor:
        // before every row (created_at is never negative).
        let mut key = [0xFFu8; 32];
        let created_at = match after {
            Some(c) => {
                key[..16].copy_from_slice(&c.id.0);
                c.created_at
            }
            None => -1,
        };
        let sessions = self
            .ex
            .run(
                "sessions.list_for_user_page",
                Mode::Read,
                |c| sqlite::sessions::list_for_user_page(c, user, (created_at, &key), rows),
                async |p| {
                    postgres::sessions::list_for_user_page(p, user, (created_at, &key), rows).await
                },
            )
            .await?;
        Ok(super::page(sessions, limit, SessionCursor::after))
    }

    /// Revokes one of a user's sessions by its public id.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) when the user has no session with this id.
    pub async fn revoke(&self, user: UserId, id: SessionId) -> Result<()> {
        validate::user_id(user)?;
        self.ex
            .run(
                "sessions.revoke",
                Mode::Write,
                |c| sqlite::sessions::revoke(c, user, &id),
                async |p| postgres::sessions::revoke(p, user, &id).await,
            )
            .await
    }

    /// Deletes every session with `expires_at <= now`, in batches of at most
    /// `batch_size` rows, each its own short transaction (on the pool), so a
    /// sweep over millions of rows never holds a long write lock. The first
    /// batch is at most 128 rows; a batch that takes longer than 5 ms on
    /// SQLite (20 ms on PostgreSQL) halves the next one, to no fewer than 64
    /// rows; quick batches double it, up to `batch_size`. On SQLite the
    /// batches commit without the automatic WAL checkpoint and a passive
    /// checkpoint runs between them, outside the writer gate. Returns the
    /// number deleted.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a `batch_size` outside `1..=100000` or a
    /// timestamp out of range.
    pub async fn delete_expired(&self, now: i64, batch_size: i64) -> Result<u64> {
        validate::timestamp("now", now)?;
        let sys = observe::system(self.ex.backend());
        sweep(
            self.ex,
            "sessions.delete_expired",
            batch_size,
            |c, batch| sqlite::sessions::delete_expired_batch(c, now, batch),
            async |p, batch| postgres::sessions::delete_expired_batch(p, now, batch).await,
            |n, took| observe::sweep_batch(sys, n, took),
        )
        .await
    }
}

/// Deletes rows in batches of at most `batch_size` (1..=100000), each its
/// own short write (on the pool) or statement (in a unit of work), sized by
/// time (D-043), until a batch comes back short; returns the number deleted.
/// `on_batch` sees each batch's count and duration. Shared by the session and
/// battle-record sweeps.
pub(super) async fn sweep(
    ex: Exec<'_>,
    op: &'static str,
    batch_size: i64,
    lite: impl Fn(&rusqlite::Connection, i64) -> Result<u64>,
    pg: impl AsyncFn(&postgres::Client<'_>, i64) -> Result<u64>,
    mut on_batch: impl FnMut(u64, std::time::Duration),
) -> Result<u64> {
    if !(1..=SWEEP_BATCH_MAX).contains(&batch_size) {
        return Err(Error::invalid(
            "batch_size",
            Violation::OutOfRange {
                min: 1,
                max: SWEEP_BATCH_MAX,
            },
        ));
    }
    let mut total = 0u64;
    let mut batch = first_sweep_batch(batch_size);
    // SQLite: no automatic checkpoint inside a batch (it would run in the
    // batch's commit, holding the writer gate); a passive one after each
    // batch, outside the gate, keeps the log short.
    let off_gate = ex.sweep_checkpoints_off_gate();
    let target = sweep_batch_time(ex.backend());
    loop {
        let started = std::time::Instant::now();
        let n = ex
            .run(
                op,
                Mode::Write,
                |c| match off_gate {
                    true => sqlite::wal::without_autocheckpoint(c, |c| lite(c, batch)),
                    false => lite(c, batch),
                },
                async |p| pg(p, batch).await,
            )
            .await?;
        let took = started.elapsed();
        total += n;
        on_batch(n, took);
        if off_gate {
            ex.checkpoint_passive().await;
        }
        if n < batch.unsigned_abs() {
            return Ok(total);
        }
        batch = next_sweep_batch(batch, batch_size, took, target);
    }
}

/// How long one sweep batch should take (D-043). On SQLite a batch holds
/// the one writer, so other writers wait for about one batch: 5 ms there
/// (D-138). On PostgreSQL a batch locks only the rows it deletes, which no
/// other call writes: 20 ms, fewer round trips.
fn sweep_batch_time(backend: BackendKind) -> std::time::Duration {
    match backend {
        BackendKind::Sqlite => std::time::Duration::from_millis(5),
        BackendKind::Postgres => std::time::Duration::from_millis(20),
    }
}

/// Rows in a sweep's first batch at most: nothing is known yet about how
/// long a batch takes here, so the sweep starts small and doubles up to the
/// caller's size while batches stay quick, instead of holding the writer for
/// a full-size batch of unknown length first.
const SWEEP_FIRST_BATCH: i64 = 128;

/// Rows in a batch at least, however slow batches are (D-140): below this a
/// batch's fixed costs (its commit's sync, the wait for the writer gate, the
/// checkpoint after it) dominate, so halving further would mostly multiply
/// the commits. `max` when smaller.
const SWEEP_MIN_BATCH: i64 = 64;

/// The first batch's size: [`SWEEP_FIRST_BATCH`], or `max` when smaller.
fn first_sweep_batch(max: i64) -> i64 {
    max.min(SWEEP_FIRST_BATCH)
}

/// The next sweep batch size: halved after a batch that took longer than
/// `target` ([`sweep_batch_time`]), down to [`SWEEP_MIN_BATCH`] (or `max`
/// when smaller); doubled (up to the caller's `max`) after one that took
/// less than half of it.
fn next_sweep_batch(
    batch: i64,
    max: i64,
    took: std::time::Duration,
    target: std::time::Duration,
) -> i64 {
    if took > target {
        (batch / 2).max(SWEEP_MIN_BATCH.min(max))
    } else if took < target / 2 {
        batch.saturating_mul(2).min(max)
    } else {
        batch
    }
}

fn session_id(digest: &[u8; 32]) -> SessionId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    SessionId(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_batches_shrink_when_slow_and_grow_back_to_the_cap() {
        for kind in [BackendKind::Sqlite, BackendKind::Postgres] {
            let t = sweep_batch_time(kind);
            let (slow, fast, steady) = (t * 2, t / 4, t * 3 / 4);
            assert_eq!(next_sweep_batch(1000, 1000, slow, t), 500);
            // Never below 64 rows (D-140), nor above a smaller cap.
            assert_eq!(next_sweep_batch(100, 1000, slow, t), 64);
            assert_eq!(next_sweep_batch(64, 1000, slow, t), 64);
            assert_eq!(next_sweep_batch(10, 10, slow, t), 10);
            assert_eq!(next_sweep_batch(1, 1, slow, t), 1);
            assert_eq!(next_sweep_batch(500, 1000, fast, t), 1000);
            assert_eq!(next_sweep_batch(1000, 1000, fast, t), 1000);
            assert_eq!(next_sweep_batch(700, 1000, fast, t), 1000);
            assert_eq!(next_sweep_batch(300, 1000, steady, t), 300);
            assert_eq!(
                next_sweep_batch(i64::MAX / 2 + 1, i64::MAX, fast, t),
                i64::MAX
            );
        }
    }

    /// D-138: a SQLite batch (which holds the one writer) aims at 5 ms, a
    /// PostgreSQL batch (which blocks no other writer) at 20 ms: a 10 ms
    /// batch halves the next on SQLite and keeps its size on PostgreSQL.
    #[test]
    fn sqlite_sweep_batches_aim_shorter_than_postgres_ones() {
        let ten = std::time::Duration::from_millis(10);
        let sqlite = sweep_batch_time(BackendKind::Sqlite);
        let postgres = sweep_batch_time(BackendKind::Postgres);
        assert_eq!(sqlite, std::time::Duration::from_millis(5));
        assert_eq!(postgres, std::time::Duration::from_millis(20));
        assert_eq!(next_sweep_batch(500, 1000, ten, sqlite), 250);
        assert_eq!(next_sweep_batch(500, 1000, ten, postgres), 500);
    }

    #[test]
    fn sweeps_start_small_and_reach_the_cap_by_doubling() {
        assert_eq!(first_sweep_batch(7), 7);
        assert_eq!(first_sweep_batch(1000), 128);
        assert_eq!(first_sweep_batch(SWEEP_BATCH_MAX), 128);
        let t = sweep_batch_time(BackendKind::Sqlite);
        let fast = t / 4;
        let mut b = first_sweep_batch(1000);
        let mut sizes = vec![b];
        while b < 1000 {
            b = next_sweep_batch(b, 1000, fast, t);
            sizes.push(b);
        }
        assert_eq!(sizes, [128, 256, 512, 1000]);
    }

    #[test]
    fn token_digest_is_sha256_and_validated() {
        let d = token_digest("abc").unwrap();
        assert_eq!(
            hex::encode(d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            token_digest(""),
            Err(Error::InvalidInput {
                field: "token",
                violation: Violation::Empty
            })
        ));
        assert!(matches!(
            token_digest(&"x".repeat(513)),
            Err(Error::InvalidInput {
                field: "token",
                violation: Violation::TooLong { max: 512 }
            })
        ));
    }
}
