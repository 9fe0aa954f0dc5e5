//! Promise 1 (issue 5): a process crash loses nothing acknowledged (SQLite),
//! at both durability levels.
//!
//! A child process (this test binary, re-executed to run `crash_child`)
//! writes through the public API: single writes (`add_xp`, `grant`, loadout
//! saves, session creates) and units of work (register = account +
//! progression + loadout; battle = `add_xp` + `grant_many`). Before each call
//! it prints the operation (`OP ...`), and after the call returned `Ok` it
//! prints `ACK ...` (flushed). The parent SIGKILLs it after a random delay,
//! reopens the file with the library, and checks:
//! - `PRAGMA integrity_check` is `ok` and `PRAGMA foreign_key_check` is empty
//!   (raw rusqlite connection);
//! - the database equals the model built from every acknowledged operation
//!   of every child so far, or that model plus the one operation that was in
//!   flight when the kill came (whole, never half): so every acknowledged
//!   write is present, nothing unacknowledged beyond that one operation
//!   appears, and no unit of work is half-visible (every account has its
//!   progression and loadout rows, xp is the sum of acknowledged deltas or
//!   that plus the in-flight one, a battle's flags land with its xp);
//! - the acknowledged writes of the loop read back through the library.
//!
//! The same file is used across all loops of one durability level, so each
//! child also runs on a database recovered from the previous kill.
//!
//! Short setting (CI): 20 kills per level; `PERSIST_RELIABILITY_LONG=1`: 200.

mod common;
#[path = "reliability_support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use persist::{Config, Db, Durability, Loadout, NewAccount, Progression};
use sha2::{Digest, Sha256};
use support::{integrity_check, killed_by_sigkill, say, scale, spawn_self, Bound, Rng};

const CHILD_ENV: &str = "PERSIST_CRASH_CHILD";
const GEN_ENV: &str = "PERSIST_CRASH_GEN";
const SEED_ENV: &str = "PERSIST_CRASH_SEED";
const USERS_ENV: &str = "PERSIST_CRASH_USERS";

const HASH: &[u8] = b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
const T0: i64 = 1_700_000_000;
/// A child never runs longer than this, even if nobody kills it.
const CHILD_MAX: Duration = Duration::from_secs(30);
/// Operations per child at most (keeps flag ids unique and in range).
const SEQ_MAX: u64 = 40_000;

// ---------------------------------------------------------------------------
// Operations and the state they produce

#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// Unit of work: account + progression (level 1, xp 0) + loadout.
    Register { username: String, at: i64 },
    /// Unit of work: `add_xp` + `grant_many`.
    Battle {
        user: i64,
        delta: i64,
        flags: Vec<i32>,
        at: i64,
    },
    /// Single write: `add_xp`.
    Xp { user: i64, delta: i64 },
    /// Single write: `grant`.
    Grant { user: i64, flag: i32, at: i64 },
    /// Single write: loadout save.
    Save { user: i64, element: i32, at: i64 },
    /// Single write: session create.
    Session { user: i64, token: String },
}

impl Op {
    fn line(&self, seq: u64) -> String {
        match self {
            Op::Register { username, at } => format!("OP {seq} reg {username} {at}"),
            Op::Battle {
                user,
                delta,
                flags,
                at,
            } => {
                let f: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
                format!("OP {seq} bat {user} {delta} {} {at}", f.join(","))
            }
            Op::Xp { user, delta } => format!("OP {seq} xp {user} {delta}"),
            Op::Grant { user, flag, at } => format!("OP {seq} grant {user} {flag} {at}"),
            Op::Save { user, element, at } => format!("OP {seq} save {user} {element} {at}"),
            Op::Session { user, token } => format!("OP {seq} ses {user} {token}"),
        }
    }

    fn parse(line: &str) -> Option<(u64, Op)> {
        let mut w = line.strip_prefix("OP ")?.split(' ');
        let seq: u64 = w.next()?.parse().ok()?;
        let kind = w.next()?;
        let mut num = || -> Option<i64> { w.next()?.parse().ok() };
        let op = match kind {
            "reg" => {
                let mut w2 = line.split(' ').skip(3);
                Op::Register {
                    username: w2.next()?.to_string(),
                    at: w2.next()?.parse().ok()?,
                }
            }
            "bat" => {
                let user = num()?;
                let delta = num()?;
                let mut w2 = line.split(' ').skip(5);
                let flags = w2
                    .next()?
                    .split(',')
                    .map(|f| f.parse().ok())
                    .collect::<Option<Vec<i32>>>()?;
                let at = w2.next()?.parse().ok()?;
                Op::Battle {
                    user,
                    delta,
                    flags,
                    at,
                }
            }
            "xp" => Op::Xp {
                user: num()?,
                delta: num()?,
            },
            "grant" => Op::Grant {
                user: num()?,
                flag: i32::try_from(num()?).ok()?,
                at: num()?,
            },
            "save" => Op::Save {
                user: num()?,
                element: i32::try_from(num()?).ok()?,
                at: num()?,
            },
            "ses" => {
                let user = num()?;
                let token = line.split(' ').nth(4)?.to_string();
                Op::Session { user, token }
            }
            _ => return None,
        };
        Some((seq, op))
    }

    fn is_unit(&self) -> bool {
        matches!(self, Op::Register { .. } | Op::Battle { .. })
    }
}

/// What the database holds (the columns the operations write).
#[derive(Debug, Clone, Default, PartialEq)]
struct State {
    /// user_id -> username
    accounts: BTreeMap<i64, String>,
    /// user_id -> (level, xp)
    progression: BTreeMap<i64, (i32, i64)>,
    /// user_id -> (element_id, updated_at)
    loadouts: BTreeMap<i64, (i32, i64)>,
    /// (user_id, flag_id) -> unlocked_at
    unlocks: BTreeMap<(i64, i32), i64>,
    /// token digest -> user_id
    sessions: BTreeMap<[u8; 32], i64>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl State {
    /// Applies `op`; `user_id` is the id a registration got. Returns false
    /// when the operation cannot apply to this state (which the child would
    /// have seen as an error).
    fn apply(&mut self, op: &Op, user_id: Option<i64>) -> bool {
        match op {
            Op::Register { username, at } => {
                let Some(id) = user_id else { return false };
                if self.accounts.contains_key(&id) {
                    return false;
                }
                self.accounts.insert(id, username.clone());
                self.progression.insert(id, (1, 0));
                self.loadouts.insert(id, (1, *at));
            }
            Op::Battle {
                user,
                delta,
                flags,
                at,
            } => {
                let Some(p) = self.progression.get_mut(user) else {
                    return false;
                };
                p.1 += delta;
                for f in flags {
                    self.unlocks.entry((*user, *f)).or_insert(*at);
                }
            }
            Op::Xp { user, delta } => {
                let Some(p) = self.progression.get_mut(user) else {
                    return false;
                };
                p.1 += delta;
            }
            Op::Grant { user, flag, at } => {
                if !self.accounts.contains_key(user) {
                    return false;
                }
                self.unlocks.entry((*user, *flag)).or_insert(*at);
            }
            Op::Save { user, element, at } => {
                if !self.accounts.contains_key(user) {
                    return false;
                }
                self.loadouts.insert(*user, (*element, *at));
            }
            Op::Session { user, token } => {
                if !self.accounts.contains_key(user) {
                    return false;
                }
                self.sessions.insert(digest(token), *user);
            }
        }
        true
    }

    fn read(c: &rusqlite::Connection) -> State {
        fn rows<T>(
            c: &rusqlite::Connection,
            sql: &str,
            f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
        ) -> Vec<T> {
            let mut st = c.prepare(sql).expect(sql);
            st.query_map([], f)
                .expect(sql)
                .collect::<rusqlite::Result<Vec<T>>>()
                .expect(sql)
        }
        State {
            accounts: rows(c, "SELECT user_id, username FROM accounts", |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .into_iter()
            .collect(),
            progression: rows(c, "SELECT user_id, level, xp FROM progression", |r| {
                Ok((r.get(0)?, (r.get(1)?, r.get(2)?)))
            })
            .into_iter()
            .collect(),
            loadouts: rows(
                c,
                "SELECT user_id, element_id, updated_at FROM army_loadouts",
                |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))),
            )
            .into_iter()
            .collect(),
            unlocks: rows(
                c,
                "SELECT user_id, flag_id, unlocked_at FROM user_unlocks",
                |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)),
            )
            .into_iter()
            .collect(),
            sessions: rows(c, "SELECT token, user_id FROM sessions", |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?))
            })
            .into_iter()
            .map(|(t, u)| (t.try_into().expect("32-byte digest"), u))
            .collect(),
        }
    }

    /// A short description of how `self` (the database) differs from `want`.
    fn diff(&self, want: &State) -> String {
        fn side<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
            name: &str,
            got: &BTreeMap<K, V>,
            want: &BTreeMap<K, V>,
            out: &mut Vec<String>,
        ) {
            for (k, v) in want {
                match got.get(k) {
                    None => out.push(format!("{name} {k:?}: missing (want {v:?})")),
                    Some(g) if g != v => out.push(format!("{name} {k:?}: {g:?}, want {v:?}")),
                    _ => {}
                }
            }
            for (k, v) in got {
                if !want.contains_key(k) {
                    out.push(format!("{name} {k:?}: unexpected {v:?}"));
                }
            }
        }
        let mut out = Vec::new();
        side("account", &self.accounts, &want.accounts, &mut out);
        side(
            "progression",
            &self.progression,
            &want.progression,
            &mut out,
        );
        side("loadout", &self.loadouts, &want.loadouts, &mut out);
        side("session", &self.sessions, &want.sessions, &mut out);
        side("unlock", &self.unlocks, &want.unlocks, &mut out);
        out.truncate(12);
        out.join("; ")
    }
}

// ---------------------------------------------------------------------------
// The child: writes until killed

/// Runs only as a child of the crash tests (`PERSIST_CRASH_CHILD` set to the
/// database URL).
#[test]
#[ignore = "child-process entry point: the crash_loses_nothing_acknowledged_* tests run it"]
fn crash_child() {
    let url = common::child_env(CHILD_ENV);
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let generation: u64 = var(GEN_ENV).parse().expect("generation");
    let seed: u64 = var(SEED_ENV).parse().expect("seed");
    let users: Vec<i64> = var(USERS_ENV)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("user id"))
        .collect();
    support::runtime().block_on(child_loop(&url, generation, seed, users));
}

async fn child_loop(url: &str, generation: u64, seed: u64, mut users: Vec<i64>) {
    let config = Config::from_url(url).expect("child URL");
    let db = persist::open(&config).await.expect("child open");
    say("READY");
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    for seq in 1..SEQ_MAX {
        if start.elapsed() > CHILD_MAX {
            break;
        }
        let at = T0 + i64::try_from(seq).unwrap();
        let flag_base = i32::try_from((generation * SEQ_MAX + seq) * 4).expect("flag id");
        let pick = rng.below(100);
        let op = if users.is_empty() || pick < 20 {
            Op::Register {
                username: format!("g{generation}s{seq}"),
                at,
            }
        } else {
            let user = users[rng.below(users.len() as u64) as usize];
            let delta = i64::try_from(rng.range(1, 1000)).unwrap();
            match pick {
                20..=49 => Op::Battle {
                    user,
                    delta,
                    flags: (0..3).map(|i| flag_base + i).collect(),
                    at,
                },
                50..=64 => Op::Xp { user, delta },
                65..=74 => Op::Grant {
                    user,
                    flag: flag_base,
                    at,
                },
                75..=89 => Op::Save {
                    user,
                    element: i32::try_from(seq).unwrap(),
                    at,
                },
                _ => Op::Session {
                    user,
                    token: format!("tok-{generation}-{seq}-{}", rng.next_u64()),
                },
            }
        };
        say(&op.line(seq));
        match run_op(&db, &op).await {
            Ok(Some(id)) => {
                users.push(id);
                say(&format!("ACK {seq} {id}"));
            }
            Ok(None) => say(&format!("ACK {seq}")),
            Err(e) => {
                say(&format!("ERR {seq} {e:?}"));
                panic!("child operation {seq} failed: {e:?}");
            }
        }
    }
    // Not killed in time: the parent treats a child that exits as a failure.
    std::process::exit(4);
}

/// Runs one operation; a registration returns the new user id.
async fn run_op(db: &Db, op: &Op) -> persist::Result<Option<i64>> {
    match op {
        Op::Register { username, at } => {
            let email = format!("{username}@crash.invalid");
            let tx = db.begin().await?;
            let a = tx
                .accounts()
                .create(&NewAccount {
                    email: &email,
                    username,
                    pass_hash: HASH,
                    created_at: *at,
                })
                .await?;
            tx.progression()
                .set(&Progression {
                    user_id: a.user_id,
                    level: 1,
                    xp: 0,
                })
                .await?;
            tx.loadouts()
                .save(&Loadout {
                    element_id: 1,
                    ..Loadout::empty(a.user_id, *at)
                })
                .await?;
            tx.commit().await?;
            Ok(Some(a.user_id.0))
        }
        Op::Battle {
            user,
            delta,
            flags,
            at,
        } => {
            let tx = db.begin().await?;
            tx.progression()
                .add_xp(persist::UserId(*user), *delta)
                .await?;
            tx.unlocks()
                .grant_many(persist::UserId(*user), flags, *at)
                .await?;
            tx.commit().await?;
            Ok(None)
        }
        Op::Xp { user, delta } => {
            db.progression()
                .add_xp(persist::UserId(*user), *delta)
                .await?;
            Ok(None)
        }
        Op::Grant { user, flag, at } => {
            db.unlocks()
                .grant(persist::UserId(*user), *flag, *at)
                .await?;
            Ok(None)
        }
        Op::Save { user, element, at } => {
            db.loadouts()
                .save(&Loadout {
                    element_id: *element,
                    ..Loadout::empty(persist::UserId(*user), *at)
                })
                .await?;
            Ok(None)
        }
        Op::Session { user, token } => {
            db.sessions()
                .create(token, persist::UserId(*user), T0, T0 + 3600)
                .await?;
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------
// The parent: kill, reopen, check

#[derive(Default)]
struct Figures {
    kills: usize,
    acked_writes: usize,
    acked_units: usize,
    inflight_landed: usize,
    inflight_absent: usize,
    killed_before_ready: usize,
    violations: usize,
}

/// What one child reported: acknowledged operations in order, and the one
/// in flight (announced, not acknowledged) if any.
struct Report {
    acked: Vec<(u64, Op, Option<i64>)>,
    in_flight: Option<Op>,
}

fn parse_report(lines: &[String]) -> Report {
    let mut ops: BTreeMap<u64, Op> = BTreeMap::new();
    let mut acks: BTreeMap<u64, Option<i64>> = BTreeMap::new();
    for l in lines {
        if l.starts_with("OP ") {
            let (seq, op) = Op::parse(l).unwrap_or_else(|| panic!("bad line {l:?}"));
            ops.insert(seq, op);
        } else if let Some(rest) = l.strip_prefix("ACK ") {
            let mut w = rest.split(' ');
            let seq: u64 = w.next().unwrap().parse().unwrap();
            let id = w.next().map(|s| s.parse::<i64>().unwrap());
            acks.insert(seq, id);
        } else if l.starts_with("ERR ") {
            panic!("child reported an error: {l}");
        }
    }
    let mut acked = Vec::new();
    let mut in_flight = None;
    let last = ops.keys().next_back().copied();
    for (seq, op) in ops {
        match acks.remove(&seq) {
            Some(id) => acked.push((seq, op, id)),
            None => {
                // The child runs one operation at a time: only the last one
                // can be unacknowledged.
                assert_eq!(Some(seq), last, "operation {seq} never acknowledged");
                in_flight = Some(op);
            }
        }
    }
    assert!(acks.is_empty(), "ACK without OP: {acks:?}");
    Report { acked, in_flight }
}

fn crash_loop(durability: Durability) {
    let level = match durability {
        Durability::Full => "full",
        Durability::Normal => "normal",
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.db");
    let url = match durability {
        Durability::Full => format!("sqlite://{}?synchronous=full", path.display()),
        Durability::Normal => format!("sqlite://{}?synchronous=normal", path.display()),
    };
    let config = Config::from_url(&url).unwrap();
    assert_eq!(config.durability(), durability);
    let rt = support::runtime();
    rt.block_on(async {
        let db = persist::open(&config).await.unwrap();
        db.migrate().await.unwrap();
        db.close().await;
    });

    let seed = Rng::seed_from_clock();
    let mut rng = Rng::new(seed);
    let mut bound = Bound::new(
        scale(20, 200),
        scale(Duration::from_secs(12), Duration::from_secs(300)),
    );
    let mut model = State::default();
    let mut f = Figures::default();
    let mut failures: Vec<String> = Vec::new();

    while bound.next() {
        let generation = bound.done() as u64;
        let sample: Vec<String> = {
            let ids: Vec<i64> = model.accounts.keys().copied().collect();
            (0..ids.len().min(24))
                .map(|_| ids[rng.below(ids.len() as u64) as usize].to_string())
                .collect()
        };
        let mut child = spawn_self(
            "crash_child",
            &[
                (CHILD_ENV, url.clone()),
                (GEN_ENV, generation.to_string()),
                (SEED_ENV, rng.next_u64().to_string()),
                (USERS_ENV, sample.join(",")),
            ],
        );
        // Mostly: kill while it writes. Sometimes: kill while it starts
        // (process start, open, WAL recovery).
        if rng.chance(15) {
            f.killed_before_ready += 1;
            std::thread::sleep(Duration::from_millis(rng.range(0, 40)));
        } else {
            if !child.wait_for_line(Duration::from_secs(20), |l| l == "READY") {
                let st = child.kill();
                let err = child.stderr_text();
                panic!(
                    "child never became ready ({st}); stdout {:?}; stderr {err}",
                    child.seen
                );
            }
            std::thread::sleep(Duration::from_millis(rng.range(0, 150)));
        }
        let status = child.kill();
        assert!(
            killed_by_sigkill(&status),
            "child ended by itself ({status}) instead of being killed; stderr: {}",
            child.stderr_text()
        );
        f.kills += 1;
        let report = parse_report(&child.seen);

        for (_, op, id) in &report.acked {
            assert!(
                model.apply(op, *id),
                "acknowledged {op:?} cannot apply to the model"
            );
            f.acked_writes += 1;
            if op.is_unit() {
                f.acked_units += 1;
            }
        }

        // Reopen with the library, then check the file raw.
        let problem = rt.block_on(async {
            let db = persist::open(&config)
                .await
                .unwrap_or_else(|e| panic!("reopen after kill {}: {e}", f.kills));
            db.ping().await.unwrap();
            let problem = check_through_library(&db, &report, &model).await;
            db.close().await;
            problem
        });
        let mut loop_problems: Vec<String> = problem.into_iter().collect();
        let ic = integrity_check(&path);
        if ic != ["ok"] {
            loop_problems.push(format!("integrity_check: {ic:?}"));
        }
        let raw = rusqlite::Connection::open(&path).unwrap();
        let fk = support::foreign_key_violations(&raw);
        if !fk.is_empty() {
            loop_problems.push(format!("foreign_key_check: {fk:?}"));
        }
        let got = State::read(&raw);
        drop(raw);
        if got == model {
            if report.in_flight.is_some() {
                f.inflight_absent += 1;
            }
        } else {
            let landed = report.in_flight.as_ref().and_then(|op| {
                let mut with = model.clone();
                let id = match op {
                    Op::Register { username, .. } => got
                        .accounts
                        .iter()
                        .find(|(_, u)| *u == username)
                        .map(|(id, _)| *id),
                    _ => None,
                };
                (with.apply(op, id) && with == got).then_some(with)
            });
            match landed {
                Some(with) => {
                    model = with;
                    f.inflight_landed += 1;
                }
                None => loop_problems.push(format!(
                    "database is neither the acknowledged state nor that plus the \
                     in-flight {:?}: {}",
                    report.in_flight,
                    got.diff(&model)
                )),
            }
        }
        if !loop_problems.is_empty() {
            f.violations += 1;
            failures.push(format!("kill {}: {}", f.kills, loop_problems.join(" | ")));
            // Keep going from what the database holds, so one problem is
            // not reported again by every later loop.
            model = State::read(&rusqlite::Connection::open(&path).unwrap());
        }
    }

    eprintln!(
        "reliability crash durability={level} loops={} kills={} acked_writes={} \
         acked_units={} inflight_landed={} inflight_absent={} killed_before_ready={} \
         accounts={} elapsed_s={:.1} seed={seed} violations={}",
        bound.done(),
        f.kills,
        f.acked_writes,
        f.acked_units,
        f.inflight_landed,
        f.inflight_absent,
        f.killed_before_ready,
        model.accounts.len(),
        bound.elapsed().as_secs_f64(),
        f.violations
    );
    if f.violations > 0 {
        // Keep the file for a post-mortem.
        let kept = dir.keep();
        panic!(
            "{} violation(s); database kept in {}:\n{}",
            f.violations,
            kept.display(),
            failures.join("\n")
        );
    }
    assert!(
        f.acked_writes > 0 && f.acked_units > 0,
        "the children acknowledged nothing: the test proved nothing"
    );
}

/// Acknowledged writes of a loop read back through the public API (the
/// latest ones; the raw comparison covers every row).
const LIBRARY_CHECKS: usize = 200;

/// Reads the loop's latest acknowledged writes back through the public API.
async fn check_through_library(db: &Db, report: &Report, model: &State) -> Option<String> {
    let skip = report.acked.len().saturating_sub(LIBRARY_CHECKS);
    for (seq, op, id) in report.acked.iter().skip(skip) {
        let user = match op {
            Op::Register { .. } => id.expect("registration id"),
            Op::Battle { user, .. }
            | Op::Xp { user, .. }
            | Op::Grant { user, .. }
            | Op::Save { user, .. }
            | Op::Session { user, .. } => *user,
        };
        let uid = persist::UserId(user);
        let res: persist::Result<bool> = async {
            Ok(match op {
                Op::Register { username, .. } => {
                    db.accounts().find_by_username(username).await?.user_id == uid
                        && db.progression().get(uid).await?.level == 1
                        && db.loadouts().get(uid).await.is_ok()
                }
                Op::Battle { flags, .. } => {
                    let have: BTreeSet<i32> = db
                        .unlocks()
                        .list(uid)
                        .await?
                        .iter()
                        .map(|u| u.flag_id)
                        .collect();
                    flags.iter().all(|f| have.contains(f))
                        && db.progression().get(uid).await?.xp >= model.progression[&user].1
                }
                Op::Xp { .. } => db.progression().get(uid).await?.xp >= model.progression[&user].1,
                Op::Grant { flag, .. } => db.unlocks().has(uid, *flag).await?,
                Op::Save { .. } => {
                    // A later save (acknowledged, or the one in flight) may
                    // have replaced it.
                    let element = db.loadouts().get(uid).await?.element_id;
                    element == model.loadouts[&user].0
                        || matches!(&report.in_flight,
                            Some(Op::Save { user: u, element: e, .. }) if *u == user && *e == element)
                }
                Op::Session { token, .. } => {
                    db.sessions().find_by_token(token).await?.user_id == uid
                }
            })
        }
        .await;
        match res {
            Ok(true) => {}
            Ok(false) => return Some(format!("acknowledged op {seq} {op:?} not read back")),
            Err(e) => return Some(format!("acknowledged op {seq} {op:?}: {e:?}")),
        }
    }
    None
}

#[test]
fn crash_loses_nothing_acknowledged_synchronous_full() {
    crash_loop(Durability::Full);
}

#[test]
fn crash_loses_nothing_acknowledged_synchronous_normal() {
    crash_loop(Durability::Normal);
}

#[test]
fn protocol_lines_round_trip() {
    let ops = [
        Op::Register {
            username: "g1s1".into(),
            at: T0,
        },
        Op::Battle {
            user: 3,
            delta: 17,
            flags: vec![4, 5, 6],
            at: T0 + 1,
        },
        Op::Xp { user: 3, delta: 9 },
        Op::Grant {
            user: 3,
            flag: 8,
            at: T0,
        },
        Op::Save {
            user: 3,
            element: 2,
            at: T0,
        },
        Op::Session {
            user: 3,
            token: "tok-1-2-3".into(),
        },
    ];
    for (i, op) in ops.iter().enumerate() {
        let line = op.line(i as u64 + 1);
        assert_eq!(Op::parse(&line), Some((i as u64 + 1, op.clone())), "{line}");
    }
}
