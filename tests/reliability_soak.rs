mod common;

// Reliability promise 9 of issue 5: soak with chaos, on both backends.
//
// A mixed workload of the game's flows (register, login, session lookups,
// loadout saves, battles = add_xp + grants in one unit of work, plain add_xp,
// grants, logouts, account deletions) runs on many tasks for a bounded time
// while faults are injected:
//
// * PostgreSQL (private throwaway cluster, tests/common/cluster.rs): every
//   backend of the database is terminated every few seconds, and the server
//   is restarted once (short run) or twice (long run, fast then immediate).
//   The workload runs in this process through one `Db` handle.
// * SQLite: the workload runs in a child process (this test binary re-run as
//   `soak_child`), which streams its log on stdout; the parent SIGKILLs it at
//   random moments and starts a new one on the same file, alternating
//   `synchronous=FULL` and `NORMAL`.
//
// The log holds, for every write, an intent line before the call and an ack
// line after it returned Ok. Each player is driven by one task only and is
// abandoned at its first failed write (PostgreSQL) or when its process is
// killed (SQLite), so a player has at most one write of unknown outcome, and
// that write is its last. The check replays each player's acknowledged writes
// into an expected state and compares it with the database (raw SQL, not the
// crate): the player's rows must equal exactly the acknowledged state, or
// exactly that state plus the one unknown write (a unit of work is all or
// nothing; every battle is tagged with a unique unlock flag, so its presence
// tells whether it committed). Then: the xp total equals the acknowledged
// deltas (plus the in-flight ones resolved as committed), no child row lacks
// its account, no session belongs to a deleted user, no account exists that
// the log does not know, and SQLite's integrity and foreign-key checks pass.
//
// `PERSIST_RELIABILITY_LONG=1` runs for minutes with more faults. Each test
// prints one `reliability soak ...` figures line on stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use common::cluster::Cluster;
use persist::{
    Config, Db, Durability, Error, Loadout, NewAccount, PieceAbilities, Progression, UserId,
};

const T0: i64 = 1_700_000_000;
const TTL: i64 = 86_400;
/// Tag flags (one per battle) live above this; ordinary grants below 64.
const TAG_BASE: i32 = 1_000_000;

fn long_run() -> bool {
    std::env::var("PERSIST_RELIABILITY_LONG").is_ok_and(|v| v == "1")
}

fn hash_for(name: &str) -> Vec<u8> {
    format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}").into_bytes()
}

fn digest_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// splitmix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------
// The log.

/// A write, as logged before it is attempted. Each is one atomic database
/// call (one statement or one unit of work).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum Op {
    /// Unit of work: account, progression (level 1, xp 0), empty loadout.
    Register { created_at: i64 },
    /// A session issued (login).
    SessionCreate { token: String, created_at: i64 },
    /// `last_login_at` stamped (login).
    TouchLogin { at: i64 },
    /// A session deleted (logout).
    Logout { token: String },
    /// The whole loadout saved: element, 4 army abilities, 6 piece
    /// abilities, 4 items.
    SaveLoadout { slots: [i32; 15], at: i64 },
    /// A plain `add_xp`.
    AddXp { delta: i64 },
    /// Unit of work: `add_xp(delta)`, `grant(tag)`, `grant_many(flags)`, and
    /// the level raised when xp crossed the next thousand.
    Battle {
        delta: i64,
        tag: i32,
        flags: Vec<i32>,
        at: i64,
    },
    /// `grant_many(flags)`.
    Grant { flags: Vec<i32>, at: i64 },
    /// The account deleted with everything of the user.
    Delete,
}

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Line {
    Intent { p: String, op: Op },
    Ack { p: String },
    Read,
    Error { kind: String },
    Violation { msg: String },
    Done,
}

/// What the parent knows of one player.
#[derive(Debug, Default)]
struct PlayerLog {
    acked: Vec<Op>,
    pending: Option<Op>,
}

#[derive(Default)]
struct Ledger {
    players: BTreeMap<String, PlayerLog>,
    acked_ops: u64,
    reads: u64,
    errors: BTreeMap<String, u64>,
    violations: Vec<String>,
    done: u64,
}

impl Ledger {
    fn violation(&mut self, msg: String) {
        if self.violations.len() < 1000 {
            self.violations.push(msg);
        }
    }

    fn feed(&mut self, line: Line) {
        match line {
            Line::Intent { p, op } => {
                let pl = self.players.entry(p.clone()).or_default();
                if let Some(prev) = pl.pending.replace(op) {
                    self.violation(format!(
                        "{p}: a write began while {prev:?} had not been resolved"
                    ));
                }
            }
            Line::Ack { p } => match self.players.get_mut(&p).and_then(|pl| {
                let op = pl.pending.take()?;
                pl.acked.push(op);
                Some(())
            }) {
                Some(()) => self.acked_ops += 1,
                None => self.violation(format!("{p}: ack without an intent")),
            },
            Line::Read => self.reads += 1,
            Line::Error { kind } => *self.errors.entry(kind).or_default() += 1,
            Line::Violation { msg } => self.violation(msg),
            Line::Done => self.done += 1,
        }
    }
}

/// Where the workload writes its log.
trait Log: Send + Sync {
    fn line(&self, l: Line);
}

/// In-process: straight into a ledger.
struct MemLog(Mutex<Ledger>);

impl Log for MemLog {
    fn line(&self, l: Line) {
        self.0.lock().unwrap().feed(l);
    }
}

/// Child process: one line per record on stdout, written and flushed before
/// the workload goes on (an intent is out before its call starts; an ack
/// only after the call returned Ok).
struct StdoutLog;

const PREFIX: &str = "SOAK\t";

impl Log for StdoutLog {
    fn line(&self, l: Line) {
        let mut s = String::with_capacity(128);
        s.push_str(PREFIX);
        s.push_str(&serde_json::to_string(&l).expect("serialise a log line"));
        s.push('\n');
        let mut out = std::io::stdout().lock();
        out.write_all(s.as_bytes()).expect("write the log");
        out.flush().expect("flush the log");
    }
}

// ---------------------------------------------------------------------------
// The expected state of a player, and the database's.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    exists: bool,
    last_login: Option<i64>,
    /// Hex SHA-256 digests of the live sessions' tokens.
    sessions: BTreeSet<String>,
    /// 15 slots then `updated_at`.
    loadout: Option<[i64; 16]>,
    progression: Option<(i32, i64)>,
    flags: BTreeSet<i32>,
}

fn level_for(xp: i64) -> i32 {
    i32::try_from(xp / 1000 + 1).expect("level fits")
}

fn loadout_row(slots: &[i32; 15], at: i64) -> [i64; 16] {
    let mut r = [0i64; 16];
    for (d, s) in r.iter_mut().zip(slots) {
        *d = i64::from(*s);
    }
    r[15] = at;
    r
}

impl State {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Register { created_at } => {
                *self = State {
                    exists: true,
                    loadout: Some(loadout_row(&[0; 15], *created_at)),
                    progression: Some((1, 0)),
                    ..State::default()
                };
            }
            Op::SessionCreate { token, .. } => {
                self.sessions.insert(digest_hex(token));
            }
            Op::TouchLogin { at } => self.last_login = Some(*at),
            Op::Logout { token } => {
                self.sessions.remove(&digest_hex(token));
            }
            Op::SaveLoadout { slots, at } => self.loadout = Some(loadout_row(slots, *at)),
            Op::AddXp { delta } => {
                if let Some((_, xp)) = &mut self.progression {
                    *xp += delta;
                }
            }
            Op::Battle {
                delta, tag, flags, ..
            } => {
                if let Some((level, xp)) = &mut self.progression {
                    *xp += delta;
                    *level = (*level).max(level_for(*xp));
                }
                self.flags.insert(*tag);
                self.flags.extend(flags.iter().copied());
            }
            Op::Grant { flags, .. } => self.flags.extend(flags.iter().copied()),
            Op::Delete => *self = State::default(),
        }
    }

    fn xp(&self) -> i64 {
        self.progression.map_or(0, |(_, xp)| xp)
    }
}

/// Every row of the database, by username, plus whole-database checks.
#[derive(Default)]
struct Snapshot {
    players: BTreeMap<String, State>,
    /// Digest of every session row.
    session_digests: BTreeSet<String>,
    /// (table, rows whose user_id has no account)
    orphans: Vec<(&'static str, i64)>,
    xp_total: i64,
    /// SQLite only: `integrity_check` result and foreign-key violations.
    integrity: Option<String>,
    fk_violations: i64,
}

const CHILD_TABLES: [&str; 4] = ["sessions", "army_loadouts", "progression", "user_unlocks"];
const LOADOUT_COLS: &str = "user_id, element_id, army_ability_1, army_ability_2, army_ability_3, \
    army_ability_4, ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, \
    ability_king, item_1, item_2, item_3, item_4, updated_at";

fn orphan_sql(table: &str) -> String {
    format!(
        "SELECT count(*) FROM {table} c WHERE NOT EXISTS \
         (SELECT 1 FROM accounts a WHERE a.user_id = c.user_id)"
    )
}

/// Rows keyed by user id, assembled into states keyed by username.
#[derive(Default)]
struct Rows {
    accounts: BTreeMap<i64, (String, Option<i64>)>,
    by_user: BTreeMap<i64, State>,
}

impl Rows {
    fn user(&mut self, uid: i64) -> &mut State {
        self.by_user.entry(uid).or_default()
    }

    fn into_snapshot(mut self, snap: &mut Snapshot) {
        for (uid, (name, last_login)) in std::mem::take(&mut self.accounts) {
            let mut st = self.by_user.remove(&uid).unwrap_or_default();
            st.exists = true;
            st.last_login = last_login;
            snap.players.insert(name, st);
        }
    }
}

async fn pg_snapshot(c: &tokio_postgres::Client) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut rows = Rows::default();
    for r in c
        .query("SELECT user_id, username, last_login_at FROM accounts", &[])
        .await
        .unwrap()
    {
        rows.accounts.insert(r.get(0), (r.get(1), r.get(2)));
    }
    for r in c
        .query("SELECT user_id, token FROM sessions", &[])
        .await
        .unwrap()
    {
        let d = hex::encode(r.get::<_, Vec<u8>>(1));
        snap.session_digests.insert(d.clone());
        rows.user(r.get(0)).sessions.insert(d);
    }
    for r in c
        .query(&format!("SELECT {LOADOUT_COLS} FROM army_loadouts"), &[])
        .await
        .unwrap()
    {
        let mut l = [0i64; 16];
        for (i, v) in l.iter_mut().enumerate().take(15) {
            *v = i64::from(r.get::<_, i32>(i + 1));
        }
        l[15] = r.get(16);
        rows.user(r.get(0)).loadout = Some(l);
    }
    for r in c
        .query("SELECT user_id, level, xp FROM progression", &[])
        .await
        .unwrap()
    {
        let (level, xp): (i32, i64) = (r.get(1), r.get(2));
        snap.xp_total += xp;
        rows.user(r.get(0)).progression = Some((level, xp));
    }
    for r in c
        .query("SELECT user_id, flag_id FROM user_unlocks", &[])
        .await
        .unwrap()
    {
        rows.user(r.get(0)).flags.insert(r.get(1));
    }
    for t in CHILD_TABLES {
        let n: i64 = c.query_one(&orphan_sql(t), &[]).await.unwrap().get(0);
        snap.orphans.push((t, n));
    }
    rows.into_snapshot(&mut snap);
    snap
}

fn sqlite_snapshot(path: &std::path::Path) -> Snapshot {
    let c = rusqlite::Connection::open(path).expect("open the SQLite file");
    let mut snap = Snapshot::default();
    let mut rows = Rows::default();
    let mut st = c
        .prepare("SELECT user_id, username, last_login_at FROM accounts")
        .unwrap();
    let mut q = st.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        rows.accounts
            .insert(r.get(0).unwrap(), (r.get(1).unwrap(), r.get(2).unwrap()));
    }
    drop(q);
    drop(st);
    let mut st = c.prepare("SELECT user_id, token FROM sessions").unwrap();
    let mut q = st.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let d = hex::encode(r.get::<_, Vec<u8>>(1).unwrap());
        snap.session_digests.insert(d.clone());
        rows.user(r.get(0).unwrap()).sessions.insert(d);
    }
    drop(q);
    drop(st);
    let mut st = c
        .prepare(&format!("SELECT {LOADOUT_COLS} FROM army_loadouts"))
        .unwrap();
    let mut q = st.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let mut l = [0i64; 16];
        for (i, v) in l.iter_mut().enumerate() {
            *v = r.get(i + 1).unwrap();
        }
        rows.user(r.get(0).unwrap()).loadout = Some(l);
    }
    drop(q);
    drop(st);
    let mut st = c
        .prepare("SELECT user_id, level, xp FROM progression")
        .unwrap();
    let mut q = st.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let (level, xp): (i32, i64) = (r.get(1).unwrap(), r.get(2).unwrap());
        snap.xp_total += xp;
        rows.user(r.get(0).unwrap()).progression = Some((level, xp));
    }
    drop(q);
    drop(st);
    let mut st = c
        .prepare("SELECT user_id, flag_id FROM user_unlocks")
        .unwrap();
    let mut q = st.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        rows.user(r.get(0).unwrap()).flags.insert(r.get(1).unwrap());
    }
    drop(q);
    drop(st);
    for t in CHILD_TABLES {
        let n: i64 = c.query_row(&orphan_sql(t), [], |r| r.get(0)).unwrap();
        snap.orphans.push((t, n));
    }
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    snap.integrity = Some(integrity);
    snap.fk_violations = c
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    rows.into_snapshot(&mut snap);
    snap
}

/// The invariant check of the whole run.
#[derive(Default, Debug)]
struct Verdict {
    players: u64,
    in_flight: u64,
    in_flight_committed: u64,
    in_flight_not_committed: u64,
    /// The in-flight write had no visible effect either way.
    in_flight_no_op: u64,
    acked_xp: i64,
    /// Net xp of the in-flight writes that committed.
    in_flight_xp: i64,
    db_xp: i64,
    deleted: u64,
    violations: Vec<String>,
}

fn verify(ledger: &Ledger, snap: &Snapshot) -> Verdict {
    let mut v = Verdict {
        db_xp: snap.xp_total,
        ..Verdict::default()
    };
    let mut expected_xp = 0i64;
    for (name, pl) in &ledger.players {
        v.players += 1;
        let mut acked = State::default();
        for op in &pl.acked {
            acked.apply(op);
        }
        v.acked_xp += acked.xp();
        let actual = snap.players.get(name).cloned().unwrap_or_default();
        let resolved = match &pl.pending {
            None => {
                if actual != acked {
                    v.violations.push(format!(
                        "{name}: database {actual:?} differs from the acknowledged {acked:?}"
                    ));
                }
                acked
            }
            Some(op) => {
                v.in_flight += 1;
                let mut alt = acked.clone();
                alt.apply(op);
                if alt == acked && actual == acked {
                    v.in_flight_no_op += 1;
                } else if actual == alt {
                    v.in_flight_committed += 1;
                } else if actual == acked {
                    v.in_flight_not_committed += 1;
                } else {
                    v.violations.push(format!(
                        "{name}: database {actual:?} is neither the acknowledged {acked:?} \
                         nor that plus the in-flight {op:?}"
                    ));
                }
                actual.clone()
            }
        };
        expected_xp += resolved.xp();
        // No session of a deleted user: none of the tokens ever issued to a
        // player whose account is gone may still be a session.
        if !actual.exists {
            if pl.acked.iter().any(|o| matches!(o, Op::Register { .. })) {
                v.deleted += 1;
            }
            for op in pl.acked.iter().chain(pl.pending.iter()) {
                if let Op::SessionCreate { token, .. } = op {
                    if snap.session_digests.contains(&digest_hex(token)) {
                        v.violations
                            .push(format!("{name}: a session of the deleted user remains"));
                    }
                }
            }
        }
    }
    v.in_flight_xp = expected_xp - v.acked_xp;
    if expected_xp != snap.xp_total {
        v.violations.push(format!(
            "xp total {} in the database, {} from acknowledged (and resolved in-flight) deltas",
            snap.xp_total, expected_xp
        ));
    }
    for name in snap.players.keys() {
        if !ledger.players.contains_key(name) {
            v.violations.push(format!(
                "account {name} exists but no write of it was logged"
            ));
        }
    }
    for (t, n) in &snap.orphans {
        if *n != 0 {
            v.violations
                .push(format!("{n} orphaned rows in {t} (no account)"));
        }
    }
    if let Some(i) = &snap.integrity {
        if i != "ok" {
            v.violations.push(format!("integrity_check: {i}"));
        }
    }
    if snap.fk_violations != 0 {
        v.violations
            .push(format!("{} foreign-key violations", snap.fk_violations));
    }
    v
}

// ---------------------------------------------------------------------------
// The workload.

struct Ctx {
    db: Db,
    log: Arc<dyn Log>,
    /// PostgreSQL under faults: `Unavailable` and `Timeout` are expected.
    faults_expected: bool,
    stop: Arc<AtomicBool>,
    deadline: Instant,
    prefix: String,
    seed: u64,
}

impl Ctx {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    fn expected(&self, e: &Error) -> bool {
        self.faults_expected && matches!(e, Error::Unavailable { .. } | Error::Timeout { .. })
    }
}

/// One player's life, driven by one task.
struct Player<'a> {
    ctx: &'a Ctx,
    name: String,
    email: String,
    uid: UserId,
    rng: Rng,
    clock: i64,
    seq: u64,
    sessions: Vec<String>,
    slots: [i32; 15],
    loadout_at: i64,
    xp: i64,
    level: i32,
    flags: BTreeSet<i32>,
}

impl Player<'_> {
    fn tick(&mut self) -> i64 {
        self.clock += 1 + self.rng.below(60) as i64;
        self.clock
    }

    fn violation(&self, msg: String) {
        self.ctx.log.line(Line::Violation {
            msg: format!("{}: {msg}", self.name),
        });
    }

    fn intent(&self, op: Op) {
        self.ctx.log.line(Line::Intent {
            p: self.name.clone(),
            op,
        });
    }

    /// Outcome of a write: ack it, or log the error (a violation unless it
    /// is an expected fault). `None` means the player is abandoned.
    fn done<T>(&self, r: persist::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.ctx.log.line(Line::Ack {
                    p: self.name.clone(),
                });
                Some(v)
            }
            Err(e) => {
                self.fail(&e, "write");
                None
            }
        }
    }

    fn fail(&self, e: &Error, what: &str) {
        self.ctx.log.line(Line::Error {
            kind: e.kind().to_string(),
        });
        if !self.ctx.expected(e) {
            self.violation(format!("{what} failed: {e:?}"));
        }
    }

    /// Outcome of a read: `None` when it failed (the player goes on).
    fn read<T>(&self, r: persist::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.ctx.log.line(Line::Read);
                Some(v)
            }
            Err(e) => {
                self.fail(&e, "read");
                None
            }
        }
    }

    /// A read that must miss (`NotFound`).
    fn read_gone<T: std::fmt::Debug>(&self, what: &str, r: persist::Result<T>) {
        match r {
            Err(Error::NotFound(_)) => self.ctx.log.line(Line::Read),
            Err(e) => self.fail(&e, what),
            Ok(v) => self.violation(format!("{what} still found: {v:?}")),
        }
    }

    async fn register(&mut self) -> Option<()> {
        let at = self.tick();
        self.intent(Op::Register { created_at: at });
        let db = &self.ctx.db;
        let hash = hash_for(&self.name);
        let r = async {
            let a = common::register(
                db,
                &NewAccount {
                    email: &self.email,
                    username: &self.name,
                    pass_hash: &hash,
                    created_at: at,
                },
            )
            .await?;
            Ok(a.user_id)
        }
        .await;
        self.uid = self.done(r)?;
        self.level = 1;
        self.loadout_at = at;
        Some(())
    }

    /// Login: the account found by username (any case) or email, the hash
    /// compared, `last_login_at` stamped, a session issued.
    async fn login(&mut self) -> Option<()> {
        let db = &self.ctx.db;
        let found = if self.rng.below(2) == 0 {
            db.accounts()
                .find_by_username(&self.name.to_uppercase())
                .await
        } else {
            db.accounts().find_by_email(&self.email).await
        };
        if let Some(a) = self.read(found) {
            if a.user_id != self.uid || a.pass_hash != hash_for(&self.name) {
                self.violation("login found another account or hash".into());
            }
        }
        let at = self.tick();
        self.intent(Op::TouchLogin { at });
        let r = db.accounts().update_last_login(self.uid, at).await;
        self.done(r)?;
        self.seq += 1;
        let token = format!(
            "tk-{}-{}-{:016x}",
            self.name,
            self.seq,
            self.rng.next() ^ self.ctx.seed
        );
        self.intent(Op::SessionCreate {
            token: token.clone(),
            created_at: at,
        });
        let r = db.sessions().create(&token, self.uid, at, at + TTL).await;
        let s = self.done(r)?;
        if s.expires_at != at + TTL || s.user_id != self.uid {
            self.violation(format!("session issued as {s:?}"));
        }
        self.sessions.push(token);
        Some(())
    }

    async fn lookup(&mut self) -> Option<()> {
        if self.sessions.is_empty() {
            return self.login().await;
        }
        let token = &self.sessions[self.rng.below(self.sessions.len() as u64) as usize];
        let r = self.ctx.db.sessions().find_by_token(token).await;
        if let Some(s) = self.read(r) {
            if s.user_id != self.uid || s.expires_at != s.created_at + TTL {
                self.violation(format!("session lookup answered {s:?}"));
            }
        }
        Some(())
    }

    async fn logout(&mut self) -> Option<()> {
        if self.sessions.is_empty() {
            return self.login().await;
        }
        let token = self
            .sessions
            .remove(self.rng.below(self.sessions.len() as u64) as usize);
        self.intent(Op::Logout {
            token: token.clone(),
        });
        let r = self.ctx.db.sessions().delete(&token).await;
        self.done(r)?;
        let r = self.ctx.db.sessions().find_by_token(&token).await;
        self.read_gone("session after logout", r);
        Some(())
    }

    async fn save_loadout(&mut self) -> Option<()> {
        let db = &self.ctx.db;
        let r = db.loadouts().get(self.uid).await;
        if let Some(l) = self.read(r) {
            let mut slots = [0i32; 15];
            slots[0] = l.element_id;
            slots[1..5].copy_from_slice(&l.army_abilities);
            slots[5..11].copy_from_slice(&l.piece_abilities.to_array());
            slots[11..15].copy_from_slice(&l.items);
            if slots != self.slots || l.updated_at != self.loadout_at {
                self.violation(format!("loadout read back as {l:?}"));
            }
        }
        let mut slots = [0i32; 15];
        for s in &mut slots {
            *s = self.rng.below(40) as i32;
        }
        let at = self.tick();
        self.intent(Op::SaveLoadout { slots, at });
        let mut pieces = [0i32; 6];
        pieces.copy_from_slice(&slots[5..11]);
        let l = Loadout {
            user_id: self.uid,
            element_id: slots[0],
            army_abilities: slots[1..5].try_into().unwrap(),
            piece_abilities: PieceAbilities::from_array(pieces),
            items: slots[11..15].try_into().unwrap(),
            updated_at: at,
        };
        let r = db.loadouts().save(&l).await;
        self.done(r)?;
        self.slots = slots;
        self.loadout_at = at;
        Some(())
    }

    async fn battle(&mut self) -> Option<()> {
        let delta = 1 + self.rng.below(400) as i64;
        self.seq += 1;
        let tag = TAG_BASE + i32::try_from(self.seq).unwrap();
        let n = self.rng.below(3);
        let flags: Vec<i32> = (0..n).map(|_| self.rng.below(64) as i32).collect();
        let at = self.tick();
        self.intent(Op::Battle {
            delta,
            tag,
            flags: flags.clone(),
            at,
        });
        let db = &self.ctx.db;
        let uid = self.uid;
        let r = async {
            let tx = db.begin().await?;
            let p = tx.progression().add_xp(uid, delta).await?;
            tx.unlocks().grant(uid, tag, at).await?;
            let new = tx.unlocks().grant_many(uid, &flags, at).await?;
            let level = level_for(p.xp);
            if level > p.level {
                tx.progression()
                    .set(&Progression {
                        user_id: uid,
                        level,
                        xp: p.xp,
                    })
                    .await?;
            }
            tx.commit().await?;
            Ok((p, new))
        }
        .await;
        let (p, new) = self.done(r)?;
        if p.xp != self.xp + delta {
            self.violation(format!(
                "battle add_xp gave {}, expected {}",
                p.xp,
                self.xp + delta
            ));
        }
        let mut want_new: Vec<i32> = flags
            .iter()
            .copied()
            .filter(|f| !self.flags.contains(f))
            .collect();
        want_new.sort_unstable();
        want_new.dedup();
        if new != want_new {
            self.violation(format!(
                "grant_many reported {new:?}, expected {want_new:?}"
            ));
        }
        self.xp += delta;
        self.level = self.level.max(level_for(self.xp));
        self.flags.insert(tag);
        self.flags.extend(flags);
        Some(())
    }

    async fn add_xp(&mut self) -> Option<()> {
        let delta = 1 + self.rng.below(50) as i64;
        self.intent(Op::AddXp { delta });
        let r = self.ctx.db.progression().add_xp(self.uid, delta).await;
        let p = self.done(r)?;
        if p.xp != self.xp + delta || p.level != self.level {
            self.violation(format!(
                "add_xp gave {:?}, expected level {} xp {}",
                p,
                self.level,
                self.xp + delta
            ));
        }
        self.xp += delta;
        Some(())
    }

    async fn grant(&mut self) -> Option<()> {
        let n = 1 + self.rng.below(3);
        let flags: Vec<i32> = (0..n).map(|_| self.rng.below(64) as i32).collect();
        let at = self.tick();
        self.intent(Op::Grant {
            flags: flags.clone(),
            at,
        });
        let r = self.ctx.db.unlocks().grant_many(self.uid, &flags, at).await;
        let new = self.done(r)?;
        let mut want: Vec<i32> = flags
            .iter()
            .copied()
            .filter(|f| !self.flags.contains(f))
            .collect();
        want.sort_unstable();
        want.dedup();
        if new != want {
            self.violation(format!("grant_many reported {new:?}, expected {want:?}"));
        }
        self.flags.extend(flags);
        Some(())
    }

    async fn delete(&mut self) -> Option<()> {
        self.intent(Op::Delete);
        let r = self.ctx.db.accounts().delete(self.uid).await;
        self.done(r)?;
        for t in self.sessions.clone() {
            let r = self.ctx.db.sessions().find_by_token(&t).await;
            self.read_gone("session of a deleted account", r);
        }
        let r = self.ctx.db.progression().get(self.uid).await;
        self.read_gone("progression of a deleted account", r);
        Some(())
    }

    /// The whole life: register, log in, a few visits' worth of requests,
    /// maybe an account deletion.
    async fn live(&mut self) -> Option<()> {
        self.register().await?;
        self.login().await?;
        let steps = 4 + self.rng.below(16);
        for _ in 0..steps {
            if self.ctx.stopped() {
                return Some(());
            }
            match self.rng.below(100) {
                0..=34 => self.lookup().await?,
                35..=49 => self.save_loadout().await?,
                50..=64 => self.battle().await?,
                65..=71 => self.add_xp().await?,
                72..=79 => self.grant().await?,
                80..=89 => self.logout().await?,
                _ => self.login().await?,
            }
        }
        if !self.ctx.stopped() && self.rng.below(100) < 15 {
            self.delete().await?;
        }
        Some(())
    }
}

async fn run_task(ctx: Arc<Ctx>, task: usize) {
    let mut n = 0u64;
    while !ctx.stopped() {
        let name = format!("{}t{task}p{n}", ctx.prefix);
        let mut p = Player {
            ctx: &ctx,
            email: format!("{name}@soak.invalid"),
            uid: UserId(0),
            rng: Rng::new(ctx.seed ^ ((task as u64) << 40) ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D)),
            clock: T0 + (n as i64) * 100_000,
            seq: 0,
            sessions: Vec::new(),
            slots: [0; 15],
            loadout_at: 0,
            xp: 0,
            level: 0,
            flags: BTreeSet::new(),
            name,
        };
        n += 1;
        if p.live().await.is_none() {
            // Abandoned after a failed write: back off a little (the server
            // may be down) and start a new player.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn run_workload(ctx: Arc<Ctx>, tasks: usize) {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        set.spawn(run_task(ctx.clone(), t));
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            ctx.log.line(Line::Violation {
                msg: format!("a workload task panicked: {e}"),
            });
        }
    }
}

fn figures(
    backend: &str,
    seconds: u64,
    ledger: &Ledger,
    faults: &str,
    fault_count: u64,
    v: &Verdict,
    violations: usize,
) {
    let errors = ledger
        .errors
        .iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    eprintln!(
        "reliability soak backend={backend} seconds={seconds} ops={} (acked writes={}, reads={}) \
         faults={fault_count} ({faults}) errors={} players={} deleted={} in_flight={} \
         (committed={}, not_committed={}, no_op={}) xp: acked={} + in_flight_committed={} = db={} \
         violations={violations}",
        ledger.acked_ops + ledger.reads,
        ledger.acked_ops,
        ledger.reads,
        if errors.is_empty() { "none" } else { &errors },
        v.players,
        v.deleted,
        v.in_flight,
        v.in_flight_committed,
        v.in_flight_not_committed,
        v.in_flight_no_op,
        v.acked_xp,
        v.in_flight_xp,
        v.db_xp,
    );
}

fn report(all: &[String]) {
    for m in all.iter().take(20) {
        eprintln!("violation: {m}");
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL: backend kills and restarts on a private cluster.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_postgres_with_backend_kills_and_restarts() {
    let long = long_run();
    let seconds: u64 = if long { 180 } else { 15 };
    let kill_every = Duration::from_millis(if long { 3000 } else { 2000 });
    let restarts: &[&str] = if long {
        &["fast", "immediate"]
    } else {
        &["immediate"]
    };
    let tasks = 8;

    let cluster = Arc::new(Cluster::start());
    let url = cluster.create_database("soak").await;
    let config = Config::from_url(&url)
        .unwrap()
        .with_pool_size(6)
        .with_connect_timeout(Duration::from_secs(1))
        .with_acquire_timeout(Duration::from_secs(2))
        .with_statement_timeout(Some(Duration::from_secs(5)));
    let db = persist::open(&config).await.expect("open");
    db.migrate().await.expect("migrate");

    let log = Arc::new(MemLog(Mutex::new(Ledger::default())));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let ctx = Arc::new(Ctx {
        db: db.clone(),
        log: log.clone(),
        faults_expected: true,
        stop: stop.clone(),
        deadline,
        prefix: "pg".into(),
        seed: 0x5eed_0009,
    });
    let workload = tokio::spawn(run_workload(ctx, tasks));

    // Faults: a restart at evenly spaced points, backend kills in between.
    let kills = AtomicU64::new(0);
    let mut killed_backends = 0i64;
    let mut done_restarts = Vec::new();
    let mut next_restart = 0usize;
    let restart_at = |i: usize| {
        start + Duration::from_secs(seconds) * (i as u32 + 1) / (restarts.len() as u32 + 1)
    };
    loop {
        tokio::time::sleep(kill_every).await;
        if Instant::now() + Duration::from_millis(500) >= deadline {
            break;
        }
        if next_restart < restarts.len() && Instant::now() >= restart_at(next_restart) {
            let mode = restarts[next_restart];
            let c = cluster.clone();
            tokio::task::spawn_blocking(move || c.restart(mode))
                .await
                .expect("restart");
            done_restarts.push(mode);
            next_restart += 1;
            continue;
        }
        match cluster.try_connect("soak").await {
            Ok(admin) => {
                let n: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) \
                         FROM pg_stat_activity WHERE datname = current_database() \
                         AND pid <> pg_backend_pid()) t",
                        &[],
                    )
                    .await
                    .expect("pg_terminate_backend")
                    .get(0);
                killed_backends += n;
                kills.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("admin connection to the private cluster: {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    workload.await.expect("workload");
    let elapsed = start.elapsed().as_secs();

    // After the faults, the same handle answers again (bounded wait).
    let recovered = {
        let t = Instant::now();
        loop {
            if db.ping().await.is_ok() {
                break true;
            }
            if t.elapsed() > Duration::from_secs(30) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let admin = cluster.connect("soak").await;
    let snap = pg_snapshot(&admin).await;
    let ledger = std::mem::take(&mut *log.0.lock().unwrap());
    let mut verdict = verify(&ledger, &snap);
    let mut all = ledger.violations.clone();
    all.append(&mut verdict.violations);
    if !recovered {
        all.push("the handle did not answer within 30 s after the last fault".into());
    }
    let kills = kills.load(Ordering::Relaxed);
    let faults = format!(
        "backend kills={kills} backends_killed={killed_backends}, restarts={} [{}]",
        done_restarts.len(),
        done_restarts.join(",")
    );
    figures(
        "postgres",
        elapsed,
        &ledger,
        &faults,
        kills + done_restarts.len() as u64,
        &verdict,
        all.len(),
    );
    report(&all);
    db.close().await;
    drop(admin);
    drop(cluster);
    assert!(all.is_empty(), "{} violations", all.len());
    assert_eq!(done_restarts.len(), restarts.len(), "restarts not all done");
    assert!(kills > 0 && killed_backends > 0, "no backend was killed");
    assert!(ledger.acked_ops > 0 && verdict.players > 0);
}

// ---------------------------------------------------------------------------
// SQLite: the workload in a child process, SIGKILLed and restarted.

const CHILD_ENV: &str = "PERSIST_SOAK_CHILD";

/// Kills and reaps the child on every path out of the test.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child: runs the workload against the SQLite file named in the
/// environment and streams its log on stdout. Run only by
/// `soak_sqlite_with_child_kills`.
#[test]
#[ignore = "child-process entry point: soak_sqlite_with_child_kills runs it"]
fn soak_child() {
    let path = common::child_env(CHILD_ENV);
    let env = |k: &str| -> u64 {
        std::env::var(k)
            .unwrap_or_else(|_| panic!("{k} unset"))
            .parse()
            .unwrap_or_else(|_| panic!("{k} is not a number"))
    };
    let generation = env("PERSIST_SOAK_GENERATION");
    let millis = env("PERSIST_SOAK_MILLIS");
    let seed = env("PERSIST_SOAK_SEED");
    let tasks = env("PERSIST_SOAK_TASKS") as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let durability = if generation % 2 == 0 {
            Durability::Full
        } else {
            Durability::Normal
        };
        let config = Config::from_url(&format!("sqlite://{path}"))
            .expect("url")
            .with_durability(durability);
        let db = persist::open(&config).await.expect("open in the child");
        let log: Arc<dyn Log> = Arc::new(StdoutLog);
        let ctx = Arc::new(Ctx {
            db: db.clone(),
            log: log.clone(),
            faults_expected: false,
            stop: Arc::new(AtomicBool::new(false)),
            deadline: Instant::now() + Duration::from_millis(millis),
            prefix: format!("g{generation}"),
            seed: seed ^ generation.wrapping_mul(0x9E37_79B9),
        });
        run_workload(ctx, tasks).await;
        db.close().await;
        log.line(Line::Done);
    });
}

/// Spawns generation `generation` of the child; a thread feeds its log into
/// the ledger.
fn spawn_child(
    path: &std::path::Path,
    generation: u64,
    millis: u64,
    ledger: &Arc<Mutex<Ledger>>,
) -> (ChildGuard, std::thread::JoinHandle<()>) {
    // `/proc/self/exe` still runs this binary when a concurrent build has
    // replaced the file `current_exe()` names.
    let exe = match std::path::Path::new("/proc/self/exe") {
        p if p.exists() => p.to_path_buf(),
        _ => std::env::current_exe().expect("current exe"),
    };
    let mut child = Command::new(exe)
        .args(common::child_test_args("soak_child"))
        .env(CHILD_ENV, path)
        .env("PERSIST_SOAK_GENERATION", generation.to_string())
        .env("PERSIST_SOAK_MILLIS", millis.to_string())
        .env("PERSIST_SOAK_SEED", "9")
        .env("PERSIST_SOAK_TASKS", "8")
        .env_remove("PERSIST_RELIABILITY_LONG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the soak child");
    let stdout = child.stdout.take().expect("child stdout");
    let ledger = ledger.clone();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = String::new();
        loop {
            buf.clear();
            match r.read_line(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A line cut by the kill is not a record.
            let Some(rest) = buf.strip_prefix(PREFIX) else {
                continue;
            };
            let Some(json) = rest.strip_suffix('\n') else {
                continue;
            };
            let mut l = ledger.lock().unwrap();
            match serde_json::from_str::<Line>(json) {
                Ok(line) => l.feed(line),
                Err(e) => l.violation(format!("unreadable log line {json:?}: {e}")),
            }
        }
    });
    (ChildGuard(Some(child)), reader)
}

#[test]
fn soak_sqlite_with_child_kills() {
    let long = long_run();
    let seconds: u64 = if long { 180 } else { 15 };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("soak.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = persist::open(&Config::from_url(&format!("sqlite://{}", path.display())).unwrap())
            .await
            .expect("open");
        db.migrate().await.expect("migrate");
        db.close().await;
    });

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = Rng::new(0xC0FFEE);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut kills = 0u64;
    let mut generations = 0u64;
    let mut clean_exits = 0u64;
    let mut harness_violations = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Each child lives 0.5-3.5 s before it is killed; the last one gets
        // the remaining time and ends by itself.
        let life = Duration::from_millis(500 + rng.below(3000));
        let last = left <= life + Duration::from_millis(500);
        let run_for = if last {
            left.max(Duration::from_secs(1))
        } else {
            life * 10
        };
        let (mut guard, reader) =
            spawn_child(&path, generations, run_for.as_millis() as u64, &ledger);
        generations += 1;
        if last {
            let limit = Instant::now() + run_for + Duration::from_secs(60);
            let status = loop {
                let child = guard.0.as_mut().expect("child");
                if let Some(s) = child.try_wait().expect("wait for the child") {
                    break Some(s);
                }
                if Instant::now() > limit {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            match status {
                Some(s) if s.success() => clean_exits += 1,
                Some(s) => harness_violations.push(format!("the last child exited with {s}")),
                None => harness_violations.push("the last child did not finish".into()),
            }
            guard.0 = None;
            reader.join().expect("reader");
            break;
        }
        std::thread::sleep(life);
        // A child must still be working when it is killed.
        if let Some(s) = guard.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            harness_violations.push(format!("child {generations} ended by itself with {s}"));
        }
        // SIGKILL at a random moment of the workload.
        guard.kill();
        kills += 1;
        reader.join().expect("reader");
    }
    let elapsed = start.elapsed().as_secs();

    let snap = sqlite_snapshot(&path);
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let mut verdict = verify(&ledger, &snap);
    let mut all = ledger.violations.clone();
    all.append(&mut verdict.violations);
    all.append(&mut harness_violations);
    if ledger.done != clean_exits {
        all.push(format!(
            "{} children ended cleanly but {} reported done",
            clean_exits, ledger.done
        ));
    }
    // Reopened through the crate, the file serves the acknowledged data.
    rt.block_on(async {
        let db = persist::open(&Config::from_url(&format!("sqlite://{}", path.display())).unwrap())
            .await
            .expect("reopen");
        db.ping().await.expect("ping after the soak");
        db.close().await;
    });
    let faults = format!("child kills={kills}, generations={generations}");
    figures(
        "sqlite",
        elapsed,
        &ledger,
        &faults,
        kills,
        &verdict,
        all.len(),
    );
    report(&all);
    assert!(all.is_empty(), "{} violations", all.len());
    assert!(kills > 0, "no child was killed");
    assert!(ledger.acked_ops > 0 && verdict.players > 0);
}
