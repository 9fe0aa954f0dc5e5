//! The five repositories: input rules, then one call into the backend's SQL.
//!
//! A repository is a short-lived view over either the pool ([`Db`]) or a unit
//! of work ([`Tx`](crate::Tx)); the same methods serve both.

use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::db::{Backend, Db};
use crate::error::{Error, Result, Violation};
use crate::models::{
    Account, Loadout, NewAccount, Progression, Session, SessionId, Unlock, UserId,
};
use crate::postgres::Client;
use crate::sqlite::WriterSlot;
use crate::tx::TxState;
use crate::validate::{self, EMAIL_MAX, KEY_MAX, PASS_HASH_MAX, USERNAME_MAX};
use crate::{postgres, sqlite};

/// Where a repository call runs.
#[derive(Clone, Copy)]
pub(crate) enum Exec<'a> {
    Db(&'a Db),
    SqliteTx(&'a WriterSlot, &'a TxState),
    PostgresTx(&'a Client, &'a TxState),
}

impl Exec<'_> {
    fn backend_name(&self) -> &'static str {
        match self {
            Exec::Db(db) => match db.backend() {
                crate::BackendKind::Sqlite => "sqlite",
                crate::BackendKind::Postgres => "postgres",
            },
            Exec::SqliteTx(..) => "sqlite",
            Exec::PostgresTx(..) => "postgres",
        }
    }
}

/// Runs the SQLite closure or the PostgreSQL future on the connection `$ex`
/// designates. `$mode` is `read` or `write`: which SQLite connection a pool
/// call uses, and whether a PostgreSQL pool call may run on a shared
/// connection.
macro_rules! run {
    // PostgreSQL reads outside a unit of work may share a connection (D-041).
    (@shared read) => {
        true
    };
    (@shared write) => {
        false
    };
    ($ex:expr, $mode:ident, $op:literal, |$c:ident| $lite:expr, |$p:ident| $pg:expr) => {{
        let ex = $ex;
        // A span per repository call (operation, backend, duration). Values
        // are never recorded: no token, hash or email reaches a log.
        let span = tracing::debug_span!("persist", op = $op, backend = ex.backend_name());
        let start = (!span.is_disabled()).then(std::time::Instant::now);
        let out = async {
            match ex {
                Exec::Db(db) => match db.live()? {
                    Backend::Sqlite(pool) => pool.$mode(|$c| $lite).await,
                    Backend::Postgres(pool) => {
                        let conn = pool.conn(run!(@shared $mode)).await?;
                        let timed = {
                            let $p: &Client = &conn;
                            crate::postgres::timed(pool.deadline(), $pg).await
                        };
                        match timed {
                            Ok(out) => {
                                conn.answered();
                                out
                            }
                            // Maybe a frozen server or a dead path: never
                            // hand this connection out again.
                            Err(d) => {
                                conn.discard(d);
                                Err(crate::postgres::missed_deadline(d))
                            }
                        }
                    }
                },
                Exec::SqliteTx(slot, state) => {
                    state.enter()?;
                    let out = slot.with(|$c| {
                        // SQLite ends a transaction by itself on some errors
                        // (SQLITE_FULL, IOERR): never go on in autocommit.
                        if $c.is_autocommit() {
                            return Err(Error::Aborted);
                        }
                        $lite
                    });
                    state.leave(&out);
                    out
                }
                Exec::PostgresTx($p, state) => {
                    state.enter()?;
                    let out = crate::postgres::with_deadline(state.deadline(), $pg).await;
                    state.leave(&out);
                    out
                }
            }
        }
        .instrument(span.clone())
        .await;
        if let Some(start) = start {
            span.in_scope(|| {
                tracing::debug!(
                    elapsed_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                    outcome = match &out {
                        Ok(_) => "ok",
                        Err(e) => e.kind(),
                    },
                    "call"
                )
            });
        }
        out
    }};
}

/// Most rows one sweep batch deletes.
const SWEEP_BATCH_MAX: i64 = 100_000;

pub(crate) fn token_digest(token: &str) -> Result<[u8; 32]> {
    validate::token(token)?;
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// `accounts`: create, read by id / email / username, update, delete.
#[derive(Clone, Copy)]
pub struct Accounts<'a> {
    pub(crate) ex: Exec<'a>,
}

impl Accounts<'_> {
    /// Creates an account and returns it with its new `user_id`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty, over-long (counted on the NFC
    /// form, which is what is stored) or control-character email or
    /// username, one holding an invisible character
    /// ([`Violation::InvisibleCharacter`]), an empty or over-long hash, or a
    /// timestamp out of range; [`Error::Conflict`] naming [`UniqueKey::Email`](crate::UniqueKey::Email)
    /// or [`UniqueKey::Username`](crate::UniqueKey::Username) when the
    /// canonical key is taken (email is reported when both are).
    pub async fn create(&self, a: &NewAccount<'_>) -> Result<Account> {
        let email = validate::stored_text("email", a.email, EMAIL_MAX)?;
        let username = validate::stored_text("username", a.username, USERNAME_MAX)?;
        validate::bytes("pass_hash", a.pass_hash, PASS_HASH_MAX)?;
        validate::timestamp("created_at", a.created_at)?;
        let (email_key, username_key) = (&email.key, &username.key);
        let a = &NewAccount {
            email: &email.display,
            username: &username.display,
            ..*a
        };
        run!(
            self.ex,
            write,
            "accounts.create",
            |c| sqlite::accounts::create(c, a, email_key, username_key),
            |p| postgres::accounts::create(p, a, email_key, username_key)
        )
    }

    /// The account with this id.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for an id below 1.
    pub async fn get(&self, id: UserId) -> Result<Account> {
        validate::user_id(id)?;
        run!(
            self.ex,
            read,
            "accounts.get",
            |c| sqlite::accounts::get(c, id),
            |p| postgres::accounts::get(p, id)
        )
    }

    /// The account whose email has the same canonical key as `email`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for input no account
    /// could have.
    pub async fn find_by_email(&self, email: &str) -> Result<Account> {
        let key = validate::keyed_text("email", email, KEY_MAX)?;
        run!(
            self.ex,
            read,
            "accounts.find_by_email",
            |c| sqlite::accounts::find_by_email_key(c, &key),
            |p| postgres::accounts::find_by_email_key(p, &key)
        )
    }

    /// The account whose username has the same canonical key as `username`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for input no account
    /// could have.
    pub async fn find_by_username(&self, username: &str) -> Result<Account> {
        let key = validate::keyed_text("username", username, KEY_MAX)?;
        run!(
            self.ex,
            read,
            "accounts.find_by_username",
            |c| sqlite::accounts::find_by_username_key(c, &key),
            |p| postgres::accounts::find_by_username_key(p, &key)
        )
    }

    /// Stamps `last_login_at`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for a bad id or timestamp.
    pub async fn update_last_login(&self, id: UserId, at: i64) -> Result<()> {
        validate::user_id(id)?;
        validate::timestamp("last_login_at", at)?;
        run!(
            self.ex,
            write,
            "accounts.update_last_login",
            |c| sqlite::accounts::touch_login(c, id, at),
            |p| postgres::accounts::touch_login(p, id, at)
        )
    }

    /// Replaces the password hash.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for an empty or over-long
    /// hash.
    pub async fn update_pass_hash(&self, id: UserId, pass_hash: &[u8]) -> Result<()> {
        validate::user_id(id)?;
        validate::bytes("pass_hash", pass_hash, PASS_HASH_MAX)?;
        run!(
            self.ex,
            write,
            "accounts.update_pass_hash",
            |c| sqlite::accounts::update_pass_hash(c, id, pass_hash),
            |p| postgres::accounts::update_pass_hash(p, id, pass_hash)
        )
    }

    /// Changes the email (display form, stored NFC, and canonical key).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Conflict`]`(Email)` when another account
    /// has the key (changing only the case of one's own email is allowed);
    /// [`Error::InvalidInput`] under the rules of [`Accounts::create`].
    pub async fn update_email(&self, id: UserId, email: &str) -> Result<()> {
        validate::user_id(id)?;
        let validate::Stored { display, key } = validate::stored_text("email", email, EMAIL_MAX)?;
        let email = display.as_str();
        run!(
            self.ex,
            write,
            "accounts.update_email",
            |c| sqlite::accounts::update_email(c, id, email, &key),
            |p| postgres::accounts::update_email(p, id, email, &key)
        )
    }

    /// Changes the username (display form, stored NFC, and canonical key).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Conflict`]`(Username)` when another
    /// account has the key; [`Error::InvalidInput`] under the rules of
    /// [`Accounts::create`].
    pub async fn update_username(&self, id: UserId, username: &str) -> Result<()> {
        validate::user_id(id)?;
        let validate::Stored { display, key } =
            validate::stored_text("username", username, USERNAME_MAX)?;
        let username = display.as_str();
        run!(
            self.ex,
            write,
            "accounts.update_username",
            |c| sqlite::accounts::update_username(c, id, username, &key),
            |p| postgres::accounts::update_username(p, id, username, &key)
        )
    }

    /// Deletes the account and, by foreign-key cascade, every row of that
    /// user in every table (sessions, loadout, progression, unlocks).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for an id below 1.
    pub async fn delete(&self, id: UserId) -> Result<()> {
        validate::user_id(id)?;
        run!(
            self.ex,
            write,
            "accounts.delete",
            |c| sqlite::accounts::delete(c, id),
            |p| postgres::accounts::delete(p, id)
        )
    }
}

/// `sessions`: keyed by the SHA-256 digest of the bearer token; the token
/// itself is never stored.
#[derive(Clone, Copy)]
pub struct Sessions<'a> {
    pub(crate) ex: Exec<'a>,
}

impl Sessions<'_> {
    /// Stores a session for the bearer token the caller issued.
    ///
    /// # Errors
    /// [`Error::UnknownUser`]; [`Error::Conflict`]`(SessionToken)` when the
    /// token is already in use; [`Error::InvalidInput`] for a token shorter
    /// than 22 characters ([`Violation::TooShort`]: 16 random bytes in
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
        run!(
            self.ex,
            write,
            "sessions.create",
            |c| sqlite::sessions::create(c, &digest, user, created_at, expires_at),
            |p| postgres::sessions::create(p, &digest, user, created_at, expires_at)
        )?;
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
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for an empty or over-long
    /// token.
    pub async fn find_by_token(&self, token: &str) -> Result<Session> {
        let digest = token_digest(token)?;
        let (user_id, created_at, expires_at) = run!(
            self.ex,
            read,
            "sessions.find_by_token",
            |c| sqlite::sessions::lookup(c, &digest),
            |p| postgres::sessions::lookup(p, &digest)
        )?;
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
    /// [`Error::NotFound`] when no session has this token.
    pub async fn delete(&self, token: &str) -> Result<()> {
        let digest = token_digest(token)?;
        run!(
            self.ex,
            write,
            "sessions.delete",
            |c| sqlite::sessions::delete(c, &digest),
            |p| postgres::sessions::delete(p, &digest)
        )
    }

    /// Deletes every session of a user (password change, ban); returns how
    /// many there were.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an id below 1.
    pub async fn delete_all_for_user(&self, user: UserId) -> Result<u64> {
        validate::user_id(user)?;
        run!(
            self.ex,
            write,
            "sessions.delete_all_for_user",
            |c| sqlite::sessions::delete_for_user(c, user),
            |p| postgres::sessions::delete_for_user(p, user)
        )
    }

    /// A user's sessions, oldest first.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an id below 1.
    pub async fn list_for_user(&self, user: UserId) -> Result<Vec<Session>> {
        validate::user_id(user)?;
        run!(
            self.ex,
            read,
            "sessions.list_for_user",
            |c| sqlite::sessions::list_for_user(c, user),
            |p| postgres::sessions::list_for_user(p, user)
        )
    }

    /// Revokes one of a user's sessions by its public id.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user has no session with this id.
    pub async fn revoke(&self, user: UserId, id: SessionId) -> Result<()> {
        validate::user_id(user)?;
        run!(
            self.ex,
            write,
            "sessions.revoke",
            |c| sqlite::sessions::revoke(c, user, &id),
            |p| postgres::sessions::revoke(p, user, &id)
        )
    }

    /// Deletes every session with `expires_at <= now`, in batches of at most
    /// `batch_size` rows, each its own short transaction (on the pool), so a
    /// sweep over millions of rows never holds a long write lock. A batch that
    /// takes longer than 20 ms halves the next one; quick batches double it
    /// back, up to `batch_size`. Returns the number deleted.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a `batch_size` outside `1..=100000` or a
    /// timestamp out of range.
    pub async fn delete_expired(&self, now: i64, batch_size: i64) -> Result<u64> {
        validate::timestamp("now", now)?;
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
        let mut batch = batch_size;
        loop {
            let started = std::time::Instant::now();
            let n = run!(
                self.ex,
                write,
                "sessions.delete_expired",
                |c| sqlite::sessions::delete_expired_batch(c, now, batch),
                |p| postgres::sessions::delete_expired_batch(p, now, batch)
            )?;
            total += n;
            if n < batch.unsigned_abs() {
                return Ok(total);
            }
            batch = next_sweep_batch(batch, batch_size, started.elapsed());
        }
    }
}

/// How long one sweep batch should hold the write lock (D-043). Other writers
/// wait for at most about one batch.
const SWEEP_BATCH_TIME: std::time::Duration = std::time::Duration::from_millis(20);

/// The next sweep batch size: halved after a batch that took longer than
/// [`SWEEP_BATCH_TIME`], doubled (up to the caller's `max`) after one that
/// took less than half of it.
fn next_sweep_batch(batch: i64, max: i64, took: std::time::Duration) -> i64 {
    if took > SWEEP_BATCH_TIME {
        (batch / 2).max(1)
    } else if took < SWEEP_BATCH_TIME / 2 {
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

/// `army_loadouts`: the whole loadout is read and saved at once.
#[derive(Clone, Copy)]
pub struct Loadouts<'a> {
    pub(crate) ex: Exec<'a>,
}

impl Loadouts<'_> {
    /// A user's loadout.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for an id below 1.
    pub async fn get(&self, user: UserId) -> Result<Loadout> {
        validate::user_id(user)?;
        run!(
            self.ex,
            read,
            "loadouts.get",
            |c| sqlite::loadouts::get(c, user),
            |p| postgres::loadouts::get(p, user)
        )
    }

    /// Inserts or replaces the whole loadout, with its `updated_at`.
    ///
    /// # Errors
    /// [`Error::UnknownUser`]; [`Error::InvalidInput`] for a negative id in
    /// any slot or a timestamp out of range.
    pub async fn save(&self, loadout: &Loadout) -> Result<()> {
        validate::loadout(loadout)?;
        run!(
            self.ex,
            write,
            "loadouts.save",
            |c| sqlite::loadouts::save(c, loadout),
            |p| postgres::loadouts::save(p, loadout)
        )
    }

    /// Deletes a user's loadout.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for an id below 1.
    pub async fn delete(&self, user: UserId) -> Result<()> {
        validate::user_id(user)?;
        run!(
            self.ex,
            write,
            "loadouts.delete",
            |c| sqlite::loadouts::delete(c, user),
            |p| postgres::loadouts::delete(p, user)
        )
    }
}

/// `progression`: level and xp.
#[derive(Clone, Copy)]
pub struct ProgressionRepo<'a> {
    pub(crate) ex: Exec<'a>,
}

impl ProgressionRepo<'_> {
    /// A user's progression.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for an id below 1.
    pub async fn get(&self, user: UserId) -> Result<Progression> {
        validate::user_id(user)?;
        run!(
            self.ex,
            read,
            "progression.get",
            |c| sqlite::progression::get(c, user),
            |p| postgres::progression::get(p, user)
        )
    }

    /// Inserts or replaces level and xp.
    ///
    /// # Errors
    /// [`Error::UnknownUser`]; [`Error::InvalidInput`] for a negative level or
    /// xp.
    pub async fn set(&self, p: &Progression) -> Result<()> {
        validate::user_id(p.user_id)?;
        validate::non_negative("level", p.level.into())?;
        validate::non_negative("xp", p.xp)?;
        run!(
            self.ex,
            write,
            "progression.set",
            |c| sqlite::progression::set(c, p),
            |pg| postgres::progression::set(pg, p)
        )
    }

    /// Adds `delta` (which may be negative) to xp in one atomic statement and
    /// returns the new values. Concurrent calls never lose an update.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user has no progression row;
    /// [`Error::InvalidInput`] with [`Violation::Overflow`] or
    /// [`Violation::WouldBeNegative`] (field `xp_delta`) when the result would
    /// leave `0..=i64::MAX`; nothing changes then.
    pub async fn add_xp(&self, user: UserId, delta: i64) -> Result<Progression> {
        validate::user_id(user)?;
        let updated = run!(
            self.ex,
            write,
            "progression.add_xp",
            |c| sqlite::progression::add_xp(c, user, delta),
            |p| postgres::progression::add_xp(p, user, delta)
        )?;
        match updated {
            Some((level, xp)) => Ok(Progression {
                user_id: user,
                level,
                xp,
            }),
            // Nothing changed: say why.
            None => match self.get(user).await {
                Ok(_) if delta >= 0 => Err(Error::invalid("xp_delta", Violation::Overflow)),
                Ok(_) => Err(Error::invalid("xp_delta", Violation::WouldBeNegative)),
                Err(e) => Err(e),
            },
        }
    }
}

/// `user_unlocks`: unlock flags held by users.
#[derive(Clone, Copy)]
pub struct Unlocks<'a> {
    pub(crate) ex: Exec<'a>,
}

impl Unlocks<'_> {
    /// Grants a flag; granting one already held is not an error. Returns
    /// whether it was new.
    ///
    /// # Errors
    /// [`Error::UnknownUser`]; [`Error::InvalidInput`] for a negative flag or a
    /// timestamp out of range.
    pub async fn grant(&self, user: UserId, flag_id: i32, at: i64) -> Result<bool> {
        validate::user_id(user)?;
        validate::non_negative("flag_id", flag_id.into())?;
        validate::timestamp("unlocked_at", at)?;
        run!(
            self.ex,
            write,
            "unlocks.grant",
            |c| sqlite::unlocks::grant(c, user, flag_id, at),
            |p| postgres::unlocks::grant(p, user, flag_id, at)
        )
    }

    /// Grants several flags in one statement (one round trip, all or
    /// nothing). Returns the flags that were new, ascending.
    ///
    /// # Errors
    /// As [`Unlocks::grant`]; nothing is granted on error.
    pub async fn grant_many(&self, user: UserId, flag_ids: &[i32], at: i64) -> Result<Vec<i32>> {
        validate::user_id(user)?;
        for f in flag_ids {
            validate::non_negative("flag_id", (*f).into())?;
        }
        validate::timestamp("unlocked_at", at)?;
        let mut flags = flag_ids.to_vec();
        flags.sort_unstable();
        flags.dedup();
        if flags.is_empty() {
            return Ok(Vec::new());
        }
        run!(
            self.ex,
            write,
            "unlocks.grant_many",
            |c| sqlite::unlocks::grant_many(c, user, &flags, at),
            |p| postgres::unlocks::grant_many(p, user, &flags, at)
        )
    }

    /// Whether the user holds the flag.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad id or a negative flag.
    pub async fn has(&self, user: UserId, flag_id: i32) -> Result<bool> {
        validate::user_id(user)?;
        validate::non_negative("flag_id", flag_id.into())?;
        run!(
            self.ex,
            read,
            "unlocks.has",
            |c| sqlite::unlocks::has(c, user, flag_id),
            |p| postgres::unlocks::has(p, user, flag_id)
        )
    }

    /// The user's flags in flag order (empty for an unknown user).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an id below 1.
    pub async fn list(&self, user: UserId) -> Result<Vec<Unlock>> {
        validate::user_id(user)?;
        run!(
            self.ex,
            read,
            "unlocks.list",
            |c| sqlite::unlocks::list(c, user),
            |p| postgres::unlocks::list(p, user)
        )
    }

    /// Revokes a flag.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user does not hold it.
    pub async fn revoke(&self, user: UserId, flag_id: i32) -> Result<()> {
        validate::user_id(user)?;
        validate::non_negative("flag_id", flag_id.into())?;
        run!(
            self.ex,
            write,
            "unlocks.revoke",
            |c| sqlite::unlocks::revoke(c, user, flag_id),
            |p| postgres::unlocks::revoke(p, user, flag_id)
        )
    }
}

impl Db {
    /// The accounts repository.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts { ex: Exec::Db(self) }
    }
    /// The sessions repository.
    pub fn sessions(&self) -> Sessions<'_> {
        Sessions { ex: Exec::Db(self) }
    }
    /// The loadouts repository.
    pub fn loadouts(&self) -> Loadouts<'_> {
        Loadouts { ex: Exec::Db(self) }
    }
    /// The progression repository.
    pub fn progression(&self) -> ProgressionRepo<'_> {
        ProgressionRepo { ex: Exec::Db(self) }
    }
    /// The unlocks repository.
    pub fn unlocks(&self) -> Unlocks<'_> {
        Unlocks { ex: Exec::Db(self) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_batches_shrink_when_slow_and_grow_back_to_the_cap() {
        let slow = SWEEP_BATCH_TIME * 2;
        let fast = SWEEP_BATCH_TIME / 4;
        let steady = SWEEP_BATCH_TIME * 3 / 4;
        assert_eq!(next_sweep_batch(1000, 1000, slow), 500);
        assert_eq!(next_sweep_batch(1, 1000, slow), 1);
        assert_eq!(next_sweep_batch(500, 1000, fast), 1000);
        assert_eq!(next_sweep_batch(1000, 1000, fast), 1000);
        assert_eq!(next_sweep_batch(700, 1000, fast), 1000);
        assert_eq!(next_sweep_batch(300, 1000, steady), 300);
        assert_eq!(next_sweep_batch(i64::MAX / 2 + 1, i64::MAX, fast), i64::MAX);
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
