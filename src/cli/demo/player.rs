//! One synthetic player's scripted life (see the [workload docs](super::workload)).

use std::collections::BTreeSet;
use std::time::Instant;

use persist::{Db, Loadout, NewAccount, Progression, Result, Session, UserId};
use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};

#[path = "game.rs"]
mod game;

use super::retry::{again, delete, once};
use super::workload::{player_email, player_username, OpKind, Tally, SESSION_TTL, SIMULATED_START};

/// A session the player holds (it exists in the database).
struct Held {
    token: String,
    expires_at: i64,
}

/// One player's script state. Every choice comes from `rng`; nothing read
/// back from the database (user ids included) influences a choice.
struct Player<'a> {
    db: &'a Db,
    index: u32,
    rng: ChaCha8Rng,
    now: i64,
    name: String,
    email: String,
    hash: String,
    user: UserId,
    /// Sessions of this user in the database, oldest first; the last one is
    /// the client's current session while `kept` or inside a visit.
    held: Vec<Held>,
    /// The client kept its session at the end of the last visit (no logout).
    kept: bool,
    level: i32,
    xp: i64,
    flags: BTreeSet<i32>,
    loadout: Option<Loadout>,
    /// Battles played so far (names the next battle id).
    battles: u32,
    seed: u64,
    tally: Tally,
}

/// Plays player `index`'s whole life.
pub(super) async fn play(db: &Db, seed: u64, index: u32) -> Result<Tally> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index.into());
    let mut p = Player {
        db,
        index,
        rng,
        now: SIMULATED_START + i64::from(index),
        name: player_username(seed, index),
        email: player_email(seed, index),
        hash: String::new(),
        user: UserId(0),
        held: Vec::new(),
        kept: false,
        level: 1,
        xp: 0,
        flags: BTreeSet::new(),
        loadout: None,
        battles: 0,
        seed,
        tally: Tally::default(),
    };
    p.remove_earlier_run().await?;
    p.register().await?;
    let visits = 1 + p.below(3);
    for visit in 0..visits {
        if visit > 0 {
            // Away for an hour to three days: a kept session may expire.
            p.advance(3_600, 3 * 86_400);
        }
        p.visit().await?;
    }
    if p.below(10) == 0 {
        p.advance(60, 3_600);
        p.change_password().await?;
    }
    if p.below(20) == 0 {
        p.advance(60, 3_600);
        p.delete_account().await?;
    }
    Ok(p.tally)
}

impl Player<'_> {
    /// A uniform-enough number in `0..n` from the player's stream (Lemire's
    /// multiply-shift; only ChaCha8's output, which is portable, is used).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.rng.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn below_i32(&mut self, n: u32) -> i32 {
        i32::try_from(self.below(n.into())).unwrap_or(0)
    }

    fn advance(&mut self, min: i64, max: i64) {
        let span = u64::try_from(max - min + 1).unwrap_or(1);
        self.now += min + i64::try_from(self.below(span)).unwrap_or(0);
    }

    fn random_b64(&mut self, n: usize) -> String {
        let mut bytes = vec![0u8; n];
        self.rng.fill_bytes(&mut bytes);
        base64url(&bytes)
    }

    /// An argon2id-shaped encoded hash (what the auth layer would store).
    fn new_hash(&mut self) -> String {
        let salt = self.random_b64(16);
        let hash = self.random_b64(32);
        format!("$argon2id$v=19$m=19456,t=2,p=1${salt}${hash}")
    }

    fn check(&mut self, ok: bool, what: &str) {
        self.tally.checks += 1;
        if !ok {
            self.tally.failed += 1;
            if self.tally.first_failure.is_none() {
                self.tally.first_failure = Some(format!("player {}: {what}", self.index));
            }
        }
    }

    fn record(&mut self, kind: OpKind, started: Instant, calls: u64) {
        self.tally.count[kind.index()] += 1;
        self.tally.busy[kind.index()] += started.elapsed();
        self.tally.calls += calls;
    }

    /// Deletes this player's account if an earlier run with the same seed
    /// left it (same demo username and demo email).
    async fn remove_earlier_run(&mut self) -> Result<()> {
        let db = self.db;
        self.tally.calls += 1;
        let name = &self.name;
        let found = again(&mut self.tally.retries, move || async move {
            db.accounts().find_by_username(name).await
        })
        .await;
        match found {
            Ok(a) if a.email == self.email => {
                self.tally.calls += 1;
                delete(&mut self.tally.retries, move || async move {
                    db.accounts().delete(a.user_id).await
                })
                .await?;
                self.tally.removed += 1;
                Ok(())
            }
            // Not a demo account: registering will report the conflict.
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn register(&mut self) -> Result<()> {
        self.hash = self.new_hash();
        let started = Instant::now();
        let (db, now, level, xp) = (self.db, self.now, self.level, self.xp);
        let new = NewAccount {
            email: &self.email,
            username: &self.name,
            pass_hash: self.hash.as_bytes(),
            created_at: now,
        };
        // One unit of work; when its commit is in doubt, the account is
        // looked up by name: found with this email, it was committed.
        self.user = once(
            &mut self.tally.retries,
            move || async move {
                let tx = db.begin().await?;
                let user = tx.accounts().create(&new).await?.user_id;
                let p = Progression {
                    user_id: user,
                    level,
                    xp,
                };
                tx.progression().set(&p).await?;
                tx.loadouts().save(&Loadout::empty(user, now)).await?;
                tx.commit().await?;
                Ok(user)
            },
            move || async move {
                match db.accounts().find_by_username(new.username).await {
                    Ok(a) if a.email == new.email => Ok(Some(a.user_id)),
                    Ok(_) => Ok(None),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            },
        )
        .await?;
        self.loadout = Some(Loadout::empty(self.user, now));
        self.issue_session().await?;
        self.record(OpKind::Register, started, 4);
        Ok(())
    }

    async fn issue_session(&mut self) -> Result<()> {
        let token = self.random_b64(32);
        let expires_at = self.now + SESSION_TTL;
        let (db, user, now, t) = (self.db, self.user, self.now, token.as_str());
        // In doubt, the token tells: found, the session was created.
        let s = once(
            &mut self.tally.retries,
            move || async move { db.sessions().create(t, user, now, expires_at).await },
            move || async move {
                match db.sessions().find_by_token(t).await {
                    Ok(s) => Ok(Some(s)),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            },
        )
        .await?;
        let ok = s.user_id == self.user && s.expires_at == expires_at;
        self.check(ok, "created session differs from the request");
        self.held.push(Held { token, expires_at });
        Ok(())
    }

    /// One visit; the current session is always the last held one.
    async fn visit(&mut self) -> Result<()> {
        // The client first tries the session it kept, if any.
        let kept = std::mem::take(&mut self.kept);
        let resumed = match self.held.last().filter(|_| kept) {
            Some(h) => {
                let (token, expires_at) = (h.token.clone(), h.expires_at);
                let s = self.lookup(&token).await?;
                let found = s.is_some_and(|s| s.user_id == self.user && s.expires_at == expires_at);
                self.check(found, "kept session not found as issued");
                found && expires_at > self.now
            }
            None => false,
        };
        if !resumed {
            if self.below(10) == 0 {
                self.failed_login().await?;
            }
            self.login().await?;
        }
        for _ in 0..2 + self.below(5) {
            self.advance(1, 30);
            self.request().await?;
        }
        if self.below(2) == 0 {
            self.advance(5, 120);
            self.loadout_screen().await?;
        }
        for _ in 0..self.below(4) {
            self.advance(60, 600);
            self.request().await?;
            self.battle().await?;
        }
        if self.below(4) == 0 {
            self.advance(1, 30);
            self.profile_screen().await?;
        }
        if self.below(5) != 0 {
            self.advance(1, 60);
            self.logout().await?;
        } else {
            self.kept = true;
        }
        Ok(())
    }

    /// A session lookup by token; `None` when there is none.
    async fn lookup(&mut self, token: &str) -> Result<Option<Session>> {
        let started = Instant::now();
        let db = self.db;
        let out = again(&mut self.tally.retries, move || async move {
            match db.sessions().find_by_token(token).await {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        self.record(OpKind::SessionLookup, started, 1);
        Ok(out)
    }

    /// An authenticated request with the current session: it must be found
    /// as issued. A session that expired during the visit (the simulated
    /// clock passed `expires_at`) is refused, and the client logs in again.
    async fn request(&mut self) -> Result<()> {
        let Some(h) = self.held.last() else {
            self.check(false, "request without a session");
            return Ok(());
        };
        let (token, expires_at) = (h.token.clone(), h.expires_at);
        let s = self.lookup(&token).await?;
        let ok = s.is_some_and(|s| s.user_id == self.user && s.expires_at == expires_at);
        self.check(ok, "current session not found as issued");
        if expires_at <= self.now {
            self.login().await?;
        }
        Ok(())
    }

    async fn failed_login(&mut self) -> Result<()> {
        let typed = self.new_hash();
        let started = Instant::now();
        let (db, name) = (self.db, &self.name);
        let account = again(&mut self.tally.retries, move || async move {
            db.accounts().find_by_username(name).await
        })
        .await?;
        self.record(OpKind::LoginFailed, started, 1);
        self.check(
            account.user_id == self.user && account.pass_hash != typed.as_bytes(),
            "wrong password accepted",
        );
        self.advance(2, 20);
        Ok(())
    }

    async fn login(&mut self) -> Result<()> {
        let how = self.below(4);
        let started = Instant::now();
        let (db, user, now) = (self.db, self.user, self.now);
        let (email, name) = (&self.email, &self.name);
        let account = again(&mut self.tally.retries, move || async move {
            match how {
                0 => db.accounts().find_by_email(email).await,
                1 => db.accounts().find_by_email(&email.to_uppercase()).await,
                2 => db.accounts().find_by_username(name).await,
                _ => db.accounts().find_by_username(&name.to_uppercase()).await,
            }
        })
        .await?;
        let ok = account.user_id == self.user && account.pass_hash == self.hash.as_bytes();
        self.check(ok, "login found another account or a stale hash");
        // Setting a value: sending it again changes nothing.
        again(&mut self.tally.retries, move || async move {
            db.accounts().update_last_login(user, now).await
        })
        .await?;
        self.issue_session().await?;
        self.record(OpKind::Login, started, 3);
        Ok(())
    }

    async fn logout(&mut self) -> Result<()> {
        let Some(h) = self.held.pop() else {
            return Ok(());
        };
        let started = Instant::now();
        let (db, t) = (self.db, h.token.as_str());
        delete(&mut self.tally.retries, move || async move {
            db.sessions().delete(t).await
        })
        .await?;
        self.record(OpKind::Logout, started, 1);
        let gone = self.lookup(&h.token).await?.is_none();
        self.check(gone, "session still found after logout");
        Ok(())
    }

    async fn change_password(&mut self) -> Result<()> {
        let hash = self.new_hash();
        let started = Instant::now();
        let (db, user, new) = (self.db, self.user, hash.as_bytes());
        // In doubt, the stored hash tells whether the unit of work
        // committed (then how many sessions it revoked is not known, but
        // none may be left).
        let revoked = once(
            &mut self.tally.retries,
            move || async move {
                let tx = db.begin().await?;
                tx.accounts().update_pass_hash(user, new).await?;
                let n = tx.sessions().delete_all_for_user(user).await?;
                tx.commit().await?;
                Ok(Some(n))
            },
            move || async move {
                let a = db.accounts().get(user).await?;
                Ok((a.pass_hash == new).then_some(None))
            },
        )
        .await?;
        self.record(OpKind::PasswordChange, started, 2);
        let expected = u64::try_from(self.held.len()).unwrap_or(u64::MAX);
        match revoked {
            Some(n) => self.check(n == expected, "password change revoked another count"),
            None => {
                let left = again(&mut self.tally.retries, move || async move {
                    db.sessions().list_for_user(user).await
                })
                .await?;
                self.check(left.is_empty(), "sessions left after a password change");
            }
        }
        self.held.clear();
        self.hash = hash;
        Ok(())
    }

    async fn delete_account(&mut self) -> Result<()> {
        let started = Instant::now();
        let (db, user) = (self.db, self.user);
        delete(&mut self.tally.retries, move || async move {
            db.accounts().delete(user).await
        })
        .await?;
        let gone = again(&mut self.tally.retries, move || async move {
            match db.progression().get(user).await {
                Ok(_) => Ok(false),
                Err(e) if e.is_not_found() => Ok(true),
                Err(e) => Err(e),
            }
        })
        .await?;
        self.record(OpKind::AccountDelete, started, 2);
        self.check(gone, "progression left after account deletion");
        self.held.clear();
        Ok(())
    }
}

/// Base64url without padding (RFC 4648 §5), as the auth layer encodes tokens.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[sextet as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use persist::{DatabaseSize, Error, Violation};

    use super::super::workload::*;
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(b"fooba"), "Zm9vYmE");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(&[0u8; 32]).len(), 43);
    }

    #[test]
    fn names_are_distinct_and_within_caps() {
        let longest = player_username(u64::MAX, MAX_PLAYERS - 1);
        assert_eq!(longest, "demo-ffffffffffffffff-999999");
        assert!(longest.chars().count() <= 32);
        assert_eq!(player_username(42, 7), "demo-2a-0007");
        assert_eq!(player_email(42, 7), "demo-2a-0007@demo.invalid");
        assert_ne!(player_username(1, 10), player_username(0x11, 0));
    }

    #[test]
    fn options_are_validated() {
        let ok = DemoOptions::default();
        assert!(ok.validate().is_ok());
        for bad in [
            DemoOptions { players: 0, ..ok },
            DemoOptions {
                players: MAX_PLAYERS + 1,
                ..ok
            },
            DemoOptions { tasks: 0, ..ok },
            DemoOptions {
                tasks: MAX_TASKS + 1,
                ..ok
            },
        ] {
            assert!(matches!(
                bad.validate(),
                Err(Error::InvalidInput {
                    violation: Violation::OutOfRange { .. },
                    ..
                })
            ));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_run_passes_every_check() {
        let db = persist::open(&persist::Config::from_url("sqlite::memory:").unwrap())
            .await
            .unwrap();
        let mut seen = Vec::new();
        let report = run(
            &db,
            &DemoOptions {
                players: 500,
                seed: 3,
                tasks: 3,
            },
            |p| seen.push(p.players_done),
        )
        .await
        .unwrap();
        assert_eq!(seen, (1..=500).collect::<Vec<_>>());
        assert_eq!(report.failed_checks, 0, "{:?}", report.first_failure);
        assert!(report.checks > 0);
        assert_eq!(report.stats(OpKind::Register).unwrap().count, 500);
        for kind in OpKind::ALL {
            assert!(report.stats(kind).unwrap().count > 0, "{kind}");
        }
        assert_eq!(report.size, DatabaseSize::InMemory);
        assert_eq!(report.earlier_players_removed, 0);
        db.close().await;
    }

    #[test]
    fn options_debug_holds_nothing_secret() {
        let options = DemoOptions {
            players: 5,
            seed: 7,
            tasks: 2,
        };
        assert_eq!(
            format!("{options:?}"),
            "DemoOptions { players: 5, seed: 7, tasks: 2 }"
        );
    }
}
