mod common;

// Model-based property test: random sequences of repository operations run
// against an in-memory model of the five tables (BTreeMaps, with the cascade
// on account deletion and uniqueness through `persist::canonical_key`) and
// against a real database; every result, normalised to a comparable form,
// must equal the model's, and so must the whole state at the end.
//
// One test per backend (`sqlite_matches_model`, `postgres_matches_model`),
// both driven by the same RNG seed, so both backends see the same sequences
// and, equalling the model, equal each other. The database is created and
// migrated once per test and its tables wiped between cases.
//
// `PROPTEST_CASES` (default 128) and `PROPTEST_RNG_SEED` (default fixed) override.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use common::raw::Raw;
use persist::{
    canonical_key, BattleEnd, Db, Entity, Error, Loadout, NewAccount, PieceAbilities, Progression,
    SessionId, UniqueKey, UserId, Violation,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

// ---------------------------------------------------------------------------
// The id/name space
// ---------------------------------------------------------------------------

/// Four emails, each with three spellings of one canonical key, and a fifth
/// group of invalid inputs.
const EMAILS: [[&str; 3]; 5] = [
    ["ada@example.com", "ADA@Example.com", "Ada@EXAMPLE.COM"],
    [
        "jos\u{e9}@example.com",
        "JOSE\u{301}@example.com",
        "Jose\u{301}@Example.com",
    ],
    [
        "stra\u{df}e@example.com",
        "STRASSE@example.com",
        "strasse@EXAMPLE.com",
    ],
    [
        "bob@example.com",
        "BOB@example.com",
        "\u{ff42}ob@example.com",
    ],
    ["", "x\0y@example.com", "x\ny@example.com"],
];

const USERNAMES: [[&str; 3]; 5] = [
    ["Ada", "ada", "ADA"],
    ["Jos\u{e9}", "JOSE\u{301}", "jose\u{301}"],
    ["stra\u{df}e", "STRASSE", "Strasse"],
    ["bob", "BOB", "\u{ff42}\u{ff4f}\u{ff42}"],
    ["", "a\0", "abcdefghijklmnopqrstuvwxyz0123456"],
];

/// Three valid bearer tokens and an invalid (empty) one.
const TOKENS: [&str; 4] = [
    "bearer-token-alpha-0001",
    "bearer-token-beta-00002",
    "bearer-token-gamma-0003",
    "",
];

const TS_MAX: i64 = 253_402_300_799;
const EMAIL_MAX: usize = 254;
const USERNAME_MAX: usize = 32;
/// Lookups by email/username cap their input at the key column's length.
const KEY_MAX: usize = 8192;

#[derive(Debug, Clone, Copy)]
struct Name(usize, usize);

/// A user reference: the n-th account created in this case (which may have
/// been deleted since, or not exist yet), an id no account has, or an
/// invalid id.
#[derive(Debug, Clone, Copy)]
enum U {
    Slot(usize),
    Missing,
    Bad(i64),
}

#[derive(Debug, Clone)]
enum Op {
    CreateAccount {
        email: Name,
        username: Name,
        hash: u8,
        at: i64,
    },
    DeleteAccount(U),
    GetAccount(U),
    FindByEmail(Name),
    FindByUsername(Name),
    UpdateEmail(U, Name),
    UpdateUsername(U, Name),
    TouchLogin(U, i64),
    CreateSession {
        tok: usize,
        u: U,
        created: i64,
        ttl: i64,
    },
    LookupSession(usize),
    DeleteSession(usize),
    DeleteAllSessions(U),
    ListSessions(U),
    RevokeSession(U, usize),
    SweepExpired {
        now: i64,
        batch: i64,
    },
    SaveLoadout {
        u: U,
        seed: i32,
        at: i64,
    },
    GetLoadout(U),
    DeleteLoadout(U),
    SetProgression {
        u: U,
        level: i32,
        xp: i64,
    },
    GetProgression(U),
    AddXp(U, i64),
    Grant(U, i32, i64),
    GrantMany(U, Vec<i32>, i64),
    Has(U, i32),
    ListUnlocks(U),
    Revoke(U, i32),
    /// The register flow as one unit of work: account + progression +
    /// default loadout, then commit or roll back.
    Register {
        email: Name,
        username: Name,
        commit: bool,
    },
    /// The end-of-battle flow as one unit of work: add_xp + grant_many, then
    /// commit or roll back. A failing step drops the unit.
    Battle {
        u: U,
        delta: i64,
        flags: Vec<i32>,
        commit: bool,
    },
    /// An exactly-once battle end (`battles.apply`) under one of three
    /// battle ids; repeats with the same or a different content.
    BattleOnce {
        u: U,
        battle: usize,
        delta: i64,
        flags: Vec<i32>,
        at: i64,
    },
}

/// The battle ids `Op::BattleOnce` uses.
const BATTLE_IDS: [&str; 3] = ["match-0001", "match-0002", "match-0003"];

fn name() -> impl Strategy<Value = Name> {
    (prop_oneof![20 => 0..4usize, 1 => Just(4usize)], 0..3usize).prop_map(|(i, v)| Name(i, v))
}

/// Mostly the first accounts of the case (which the sequence prefix creates).
fn user() -> impl Strategy<Value = U> {
    prop_oneof![
        8 => Just(U::Slot(0)),
        6 => Just(U::Slot(1)),
        3 => Just(U::Slot(2)),
        2 => (3..5usize).prop_map(U::Slot),
        1 => Just(U::Missing),
        1 => prop_oneof![Just(0i64), Just(-1i64)].prop_map(U::Bad),
    ]
}

fn ts() -> impl Strategy<Value = i64> {
    prop_oneof![40 => 0..1000i64, 1 => Just(-1i64), 1 => Just(TS_MAX + 1)]
}

fn token() -> impl Strategy<Value = usize> {
    prop_oneof![20 => 0..3usize, 1 => Just(3usize)]
}

fn flag() -> impl Strategy<Value = i32> {
    prop_oneof![20 => 0..5i32, 1 => Just(-1i32)]
}

fn hash() -> impl Strategy<Value = u8> {
    prop_oneof![20 => 1..=255u8, 1 => Just(0u8)]
}

fn delta() -> impl Strategy<Value = i64> {
    prop_oneof![
        12 => -60..100i64,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX - 10),
        1 => Just(-i64::MAX),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (name(), name(), hash(), ts()).prop_map(|(email, username, hash, at)| {
            Op::CreateAccount { email, username, hash, at }
        }),
        1 => user().prop_map(Op::DeleteAccount),
        1 => user().prop_map(Op::GetAccount),
        1 => name().prop_map(Op::FindByEmail),
        2 => name().prop_map(Op::FindByUsername),
        1 => (user(), name()).prop_map(|(u, n)| Op::UpdateEmail(u, n)),
        1 => (user(), name()).prop_map(|(u, n)| Op::UpdateUsername(u, n)),
        1 => (user(), ts()).prop_map(|(u, t)| Op::TouchLogin(u, t)),
        5 => (token(), user(), 0..10i64, prop_oneof![10 => 0..10i64, 1 => Just(-1i64)])
            .prop_map(|(tok, u, created, ttl)| Op::CreateSession { tok, u, created, ttl }),
        2 => token().prop_map(Op::LookupSession),
        1 => token().prop_map(Op::DeleteSession),
        1 => user().prop_map(Op::DeleteAllSessions),
        1 => user().prop_map(Op::ListSessions),
        1 => (user(), token()).prop_map(|(u, t)| Op::RevokeSession(u, t)),
        2 => (prop_oneof![10 => 0..20i64, 1 => Just(-1i64)], prop_oneof![10 => 1..4i64, 1 => Just(0i64)])
            .prop_map(|(now, batch)| Op::SweepExpired { now, batch }),
        2 => (user(), prop_oneof![10 => 0..100i32, 1 => Just(-1i32)], ts())
            .prop_map(|(u, seed, at)| Op::SaveLoadout { u, seed, at }),
        1 => user().prop_map(Op::GetLoadout),
        1 => user().prop_map(Op::DeleteLoadout),
        3 => (
            user(),
            prop_oneof![10 => 0..10i32, 1 => Just(-1i32)],
            prop_oneof![10 => 0..200i64, 1 => Just(i64::MAX - 20), 1 => Just(-1i64)],
        )
            .prop_map(|(u, level, xp)| Op::SetProgression { u, level, xp }),
        1 => user().prop_map(Op::GetProgression),
        5 => (user(), delta()).prop_map(|(u, d)| Op::AddXp(u, d)),
        3 => (user(), flag(), ts()).prop_map(|(u, f, t)| Op::Grant(u, f, t)),
        2 => (user(), proptest::collection::vec(flag(), 0..6), ts())
            .prop_map(|(u, f, t)| Op::GrantMany(u, f, t)),
        2 => (user(), flag()).prop_map(|(u, f)| Op::Has(u, f)),
        1 => user().prop_map(Op::ListUnlocks),
        1 => (user(), flag()).prop_map(|(u, f)| Op::Revoke(u, f)),
        2 => (name(), name(), prop::bool::weighted(0.7))
            .prop_map(|(email, username, commit)| Op::Register { email, username, commit }),
        3 => (user(), delta(), proptest::collection::vec(flag(), 0..4), prop::bool::weighted(0.7))
            .prop_map(|(u, delta, flags, commit)| Op::Battle { u, delta, flags, commit }),
        4 => (
            user(),
            0..3usize,
            prop_oneof![4 => Just(10i64), 1 => delta()],
            prop_oneof![4 => Just(vec![1, 2]), 1 => proptest::collection::vec(flag(), 0..3)],
            prop_oneof![4 => Just(100i64), 1 => ts()],
        )
            .prop_map(|(u, battle, delta, flags, at)| Op::BattleOnce { u, battle, delta, flags, at }),
    ]
}

fn email_of(n: Name) -> &'static str {
    EMAILS[n.0][n.1]
}

fn username_of(n: Name) -> &'static str {
    USERNAMES[n.0][n.1]
}

/// The pass hash an op writes: `0` gives an empty (invalid) one.
fn hash_bytes(h: u8) -> Vec<u8> {
    if h == 0 {
        Vec::new()
    } else {
        let mut v = vec![h; usize::from(h % 5) + 1];
        v.push(0);
        v.push(0xff);
        v
    }
}

fn loadout_for(user: UserId, seed: i32, at: i64) -> Loadout {
    let s = seed.max(0);
    Loadout {
        user_id: user,
        element_id: seed,
        army_abilities: [s + 1, s + 2, 0, s + 4],
        piece_abilities: PieceAbilities::from_array([s + 5, 0, s + 7, s + 8, s + 9, s + 10]),
        items: [0, s + 12, s + 13, s + 14],
        updated_at: at,
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn sid(token: &str) -> SessionId {
    hex::encode(&digest(token)[..16]).parse().unwrap()
}

// ---------------------------------------------------------------------------
// Normalised results
// ---------------------------------------------------------------------------

/// Errors reduced to what both backends must agree on.
#[derive(Debug, Clone, PartialEq)]
enum E {
    NotFound(Entity),
    Conflict(UniqueKey),
    UnknownUser,
    Invalid(&'static str, Violation),
    Other(String),
}

impl From<Error> for E {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(x) => E::NotFound(x),
            Error::Conflict(k) => E::Conflict(k),
            Error::UnknownUser => E::UnknownUser,
            Error::InvalidInput { field, violation } => E::Invalid(field, violation),
            other => E::Other(format!("{other:?}")),
        }
    }
}

/// A user as the model sees it: the handle (creation order within a case);
/// `usize::MAX` for an id the test never created.
type H = usize;

#[derive(Debug, Clone, PartialEq)]
struct AccountOut {
    user: H,
    email: String,
    username: String,
    pass_hash: Vec<u8>,
    created_at: i64,
    last_login_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
struct SessionOut {
    id: SessionId,
    user: H,
    created_at: i64,
    expires_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
struct LoadoutOut {
    user: H,
    slots: [i32; 15],
    updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
enum Out {
    Unit,
    Bool(bool),
    Count(u64),
    Account(AccountOut),
    Session(SessionOut),
    Sessions(Vec<SessionOut>),
    Loadout(LoadoutOut),
    Prog(H, i32, i64),
    Flags(Vec<i32>),
    Unlocks(Vec<(i32, i64)>),
    /// The results of the two steps of a battle unit of work.
    Pair(Box<Out>, Box<Out>),
    /// A unit of work that was rolled back on purpose.
    RolledBack,
    /// A battle end: progression, newly granted flags, replayed.
    Battled(H, i32, i64, Vec<i32>, bool),
    Err(E),
}

fn slots(l: &Loadout) -> [i32; 15] {
    let mut s = [0; 15];
    s[0] = l.element_id;
    s[1..5].copy_from_slice(&l.army_abilities);
    s[5..11].copy_from_slice(&l.piece_abilities.to_array());
    s[11..15].copy_from_slice(&l.items);
    s
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct MAccount {
    email: String,
    email_key: String,
    username: String,
    username_key: String,
    pass_hash: Vec<u8>,
    created_at: i64,
    last_login_at: Option<i64>,
}

#[derive(Debug, Default, Clone)]
struct Model {
    created: usize,
    accounts: BTreeMap<H, MAccount>,
    /// digest -> (user, created_at, expires_at)
    sessions: BTreeMap<[u8; 32], (H, i64, i64)>,
    loadouts: BTreeMap<H, ([i32; 15], i64)>,
    progression: BTreeMap<H, (i32, i64)>,
    unlocks: BTreeMap<(H, i32), i64>,
    /// (user, battle) -> (delta, flags, at, level, xp, granted)
    battles: BTreeMap<(H, usize), MBattle>,
}

#[derive(Debug, Clone, PartialEq)]
struct MBattle {
    delta: i64,
    flags: Vec<i32>,
    at: i64,
    level: i32,
    xp: i64,
    granted: Vec<i32>,
}

type R = Result<Out, E>;

fn inv(field: &'static str, v: Violation) -> E {
    E::Invalid(field, v)
}

fn m_text(field: &'static str, s: &str, max: usize) -> Result<String, E> {
    if s.is_empty() {
        return Err(inv(field, Violation::Empty));
    }
    if s.contains('\0') {
        return Err(inv(field, Violation::Nul));
    }
    if s.chars().any(char::is_control) {
        return Err(inv(field, Violation::ControlCharacter));
    }
    if s.chars().count() > max {
        return Err(inv(field, Violation::TooLong { max }));
    }
    Ok(canonical_key(s))
}

fn m_ts(field: &'static str, t: i64) -> Result<(), E> {
    if (0..=TS_MAX).contains(&t) {
        Ok(())
    } else {
        Err(inv(
            field,
            Violation::OutOfRange {
                min: 0,
                max: TS_MAX,
            },
        ))
    }
}

fn m_nonneg(field: &'static str, v: i64) -> Result<(), E> {
    if v < 0 {
        Err(inv(field, Violation::Negative))
    } else {
        Ok(())
    }
}

fn m_token(t: &str) -> Result<[u8; 32], E> {
    if t.is_empty() {
        return Err(inv("token", Violation::Empty));
    }
    Ok(digest(t))
}

impl Model {
    /// The handle a user reference names, if it names an account ever
    /// created; `Err` for an invalid id.
    fn user(&self, u: U) -> Result<Option<H>, E> {
        match u {
            U::Bad(_) => Err(inv(
                "user_id",
                Violation::OutOfRange {
                    min: 1,
                    max: i64::MAX,
                },
            )),
            U::Missing => Ok(None),
            U::Slot(i) if i < self.created => Ok(Some(i)),
            U::Slot(_) => Ok(None),
        }
    }

    /// The handle if that account exists now.
    fn live(&self, u: Option<H>) -> Option<H> {
        u.filter(|h| self.accounts.contains_key(h))
    }

    fn account_out(&self, h: H) -> Out {
        let a = &self.accounts[&h];
        Out::Account(AccountOut {
            user: h,
            email: a.email.clone(),
            username: a.username.clone(),
            pass_hash: a.pass_hash.clone(),
            created_at: a.created_at,
            last_login_at: a.last_login_at,
        })
    }

    fn session_out(d: &[u8; 32], s: &(H, i64, i64)) -> SessionOut {
        SessionOut {
            id: hex::encode(&d[..16]).parse().unwrap(),
            user: s.0,
            created_at: s.1,
            expires_at: s.2,
        }
    }

    fn apply(&mut self, op: &Op) -> Out {
        match self.step(op) {
            Ok(o) => o,
            Err(e) => Out::Err(e),
        }
    }

    fn step(&mut self, op: &Op) -> R {
        match op {
            Op::CreateAccount {
                email,
                username,
                hash,
                at,
            } => {
                let ek = m_text("email", email_of(*email), EMAIL_MAX)?;
                let uk = m_text("username", username_of(*username), USERNAME_MAX)?;
                let hash = hash_bytes(*hash);
                if hash.is_empty() {
                    return Err(inv("pass_hash", Violation::Empty));
                }
                m_ts("created_at", *at)?;
                if self.accounts.values().any(|a| a.email_key == ek) {
                    return Err(E::Conflict(UniqueKey::Email));
                }
                if self.accounts.values().any(|a| a.username_key == uk) {
                    return Err(E::Conflict(UniqueKey::Username));
                }
                let h = self.created;
                self.created += 1;
                self.accounts.insert(
                    h,
                    MAccount {
                        email: email_of(*email).nfc().collect(),
                        email_key: ek,
                        username: username_of(*username).nfc().collect(),
                        username_key: uk,
                        pass_hash: hash,
                        created_at: *at,
                        last_login_at: None,
                    },
                );
                Ok(self.account_out(h))
            }
            Op::DeleteAccount(u) => {
                let h = self.user(*u)?;
                let h = self.live(h).ok_or(E::NotFound(Entity::Account))?;
                self.accounts.remove(&h);
                self.sessions.retain(|_, s| s.0 != h);
                self.loadouts.remove(&h);
                self.progression.remove(&h);
                self.unlocks.retain(|(uh, _), _| *uh != h);
                self.battles.retain(|(uh, _), _| *uh != h);
                Ok(Out::Unit)
            }
            Op::GetAccount(u) => {
                let h = self.user(*u)?;
                let h = self.live(h).ok_or(E::NotFound(Entity::Account))?;
                Ok(self.account_out(h))
            }
            Op::FindByEmail(n) => {
                let k = m_text("email", email_of(*n), KEY_MAX)?;
                let h = self
                    .accounts
                    .iter()
                    .find(|(_, a)| a.email_key == k)
                    .map(|(h, _)| *h)
                    .ok_or(E::NotFound(Entity::Account))?;
                Ok(self.account_out(h))
            }
            Op::FindByUsername(n) => {
                let k = m_text("username", username_of(*n), KEY_MAX)?;
                let h = self
                    .accounts
                    .iter()
                    .find(|(_, a)| a.username_key == k)
                    .map(|(h, _)| *h)
                    .ok_or(E::NotFound(Entity::Account))?;
                Ok(self.account_out(h))
            }
            Op::UpdateEmail(u, n) => {
                let h = self.user(*u)?;
                let k = m_text("email", email_of(*n), EMAIL_MAX)?;
                let h = self.live(h).ok_or(E::NotFound(Entity::Account))?;
                if self
                    .accounts
                    .iter()
                    .any(|(o, a)| *o != h && a.email_key == k)
                {
                    return Err(E::Conflict(UniqueKey::Email));
                }
                let a = self.accounts.get_mut(&h).unwrap();
                a.email = email_of(*n).nfc().collect();
                a.email_key = k;
                Ok(Out::Unit)
            }
            Op::UpdateUsername(u, n) => {
                let h = self.user(*u)?;
                let k = m_text("username", username_of(*n), USERNAME_MAX)?;
                let h = self.live(h).ok_or(E::NotFound(Entity::Account))?;
                if self
                    .accounts
                    .iter()
                    .any(|(o, a)| *o != h && a.username_key == k)
                {
                    return Err(E::Conflict(UniqueKey::Username));
                }
                let a = self.accounts.get_mut(&h).unwrap();
                a.username = username_of(*n).nfc().collect();
                a.username_key = k;
                Ok(Out::Unit)
            }
            Op::TouchLogin(u, at) => {
                let h = self.user(*u)?;
                m_ts("last_login_at", *at)?;
                let h = self.live(h).ok_or(E::NotFound(Entity::Account))?;
                self.accounts.get_mut(&h).unwrap().last_login_at = Some(*at);
                Ok(Out::Unit)
            }
            Op::CreateSession {
                tok,
                u,
                created,
                ttl,
            } => {
                let d = m_token(TOKENS[*tok])?;
                let h = self.user(*u)?;
                let expires = created + ttl;
                m_ts("created_at", *created)?;
                m_ts("expires_at", expires)?;
                if expires < *created {
                    return Err(inv(
                        "expires_at",
                        Violation::OutOfRange {
                            min: *created,
                            max: TS_MAX,
                        },
                    ));
                }
                if self.sessions.contains_key(&d) {
                    return Err(E::Conflict(UniqueKey::SessionToken));
                }
                let h = self.live(h).ok_or(E::UnknownUser)?;
                let s = (h, *created, expires);
                self.sessions.insert(d, s);
                Ok(Out::Session(Self::session_out(&d, &s)))
            }
            Op::LookupSession(tok) => {
                let d = m_token(TOKENS[*tok])?;
                let s = self.sessions.get(&d).ok_or(E::NotFound(Entity::Session))?;
                Ok(Out::Session(Self::session_out(&d, s)))
            }
            Op::DeleteSession(tok) => {
                let d = m_token(TOKENS[*tok])?;
                self.sessions
                    .remove(&d)
                    .ok_or(E::NotFound(Entity::Session))?;
                Ok(Out::Unit)
            }
            Op::DeleteAllSessions(u) => {
                let h = self.user(*u)?;
                let before = self.sessions.len();
                self.sessions.retain(|_, s| Some(s.0) != h);
                Ok(Out::Count((before - self.sessions.len()) as u64))
            }
            Op::ListSessions(u) => {
                let h = self.user(*u)?;
                let mut v: Vec<(i64, [u8; 32], SessionOut)> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| Some(s.0) == h)
                    .map(|(d, s)| (s.1, *d, Self::session_out(d, s)))
                    .collect();
                v.sort_by_key(|a| (a.0, a.1));
                Ok(Out::Sessions(v.into_iter().map(|x| x.2).collect()))
            }
            Op::RevokeSession(u, tok) => {
                let h = self.user(*u)?;
                let d = digest(TOKENS[*tok]);
                match self.sessions.get(&d) {
                    Some(s) if Some(s.0) == h => {
                        self.sessions.remove(&d);
                        Ok(Out::Unit)
                    }
                    _ => Err(E::NotFound(Entity::Session)),
                }
            }
            Op::SweepExpired { now, batch } => {
                m_ts("now", *now)?;
                if !(1..=100_000).contains(batch) {
                    return Err(inv(
                        "batch_size",
                        Violation::OutOfRange {
                            min: 1,
                            max: 100_000,
                        },
                    ));
                }
                let before = self.sessions.len();
                self.sessions.retain(|_, s| s.2 > *now);
                Ok(Out::Count((before - self.sessions.len()) as u64))
            }
            Op::SaveLoadout { u, seed, at } => {
                let h = self.user(*u)?;
                let l = loadout_for(UserId(1), *seed, *at);
                m_nonneg("element_id", l.element_id.into())?;
                m_ts("updated_at", *at)?;
                let h = self.live(h).ok_or(E::UnknownUser)?;
                self.loadouts.insert(h, (slots(&l), *at));
                Ok(Out::Unit)
            }
            Op::GetLoadout(u) => {
                let h = self.user(*u)?;
                let (s, at) = h
                    .and_then(|h| self.loadouts.get(&h))
                    .ok_or(E::NotFound(Entity::Loadout))?;
                Ok(Out::Loadout(LoadoutOut {
                    user: h.unwrap(),
                    slots: *s,
                    updated_at: *at,
                }))
            }
            Op::DeleteLoadout(u) => {
                let h = self.user(*u)?;
                h.and_then(|h| self.loadouts.remove(&h))
                    .ok_or(E::NotFound(Entity::Loadout))?;
                Ok(Out::Unit)
            }
            Op::SetProgression { u, level, xp } => {
                let h = self.user(*u)?;
                m_nonneg("level", (*level).into())?;
                m_nonneg("xp", *xp)?;
                let h = self.live(h).ok_or(E::UnknownUser)?;
                self.progression.insert(h, (*level, *xp));
                Ok(Out::Unit)
            }
            Op::GetProgression(u) => {
                let h = self.user(*u)?;
                let (l, x) = h
                    .and_then(|h| self.progression.get(&h))
                    .ok_or(E::NotFound(Entity::Progression))?;
                Ok(Out::Prog(h.unwrap(), *l, *x))
            }
            Op::AddXp(u, d) => {
                let h = self.user(*u)?;
                let h = h
                    .filter(|h| self.progression.contains_key(h))
                    .ok_or(E::NotFound(Entity::Progression))?;
                let (l, x) = self.progression[&h];
                match x.checked_add(*d) {
                    Some(n) if n >= 0 => {
                        self.progression.insert(h, (l, n));
                        Ok(Out::Prog(h, l, n))
                    }
                    _ if *d >= 0 => Err(inv("xp_delta", Violation::Overflow)),
                    _ => Err(inv("xp_delta", Violation::WouldBeNegative)),
                }
            }
            Op::Grant(u, f, at) => {
                let h = self.user(*u)?;
                m_nonneg("flag_id", (*f).into())?;
                m_ts("unlocked_at", *at)?;
                let h = self.live(h).ok_or(E::UnknownUser)?;
                if self.unlocks.contains_key(&(h, *f)) {
                    return Ok(Out::Bool(false));
                }
                self.unlocks.insert((h, *f), *at);
                Ok(Out::Bool(true))
            }
            Op::GrantMany(u, flags, at) => {
                let h = self.user(*u)?;
                for f in flags {
                    m_nonneg("flag_id", (*f).into())?;
                }
                m_ts("unlocked_at", *at)?;
                let set: BTreeSet<i32> = flags.iter().copied().collect();
                if set.is_empty() {
                    return Ok(Out::Flags(Vec::new()));
                }
                let h = self.live(h).ok_or(E::UnknownUser)?;
                let mut new = Vec::new();
                for f in set {
                    if let std::collections::btree_map::Entry::Vacant(e) =
                        self.unlocks.entry((h, f))
                    {
                        e.insert(*at);
                        new.push(f);
                    }
                }
                Ok(Out::Flags(new))
            }
            Op::Has(u, f) => {
                let h = self.user(*u)?;
                m_nonneg("flag_id", (*f).into())?;
                Ok(Out::Bool(
                    h.is_some_and(|h| self.unlocks.contains_key(&(h, *f))),
                ))
            }
            Op::ListUnlocks(u) => {
                let h = self.user(*u)?;
                Ok(Out::Unlocks(
                    self.unlocks
                        .iter()
                        .filter(|((uh, _), _)| Some(*uh) == h)
                        .map(|((_, f), at)| (*f, *at))
                        .collect(),
                ))
            }
            Op::Revoke(u, f) => {
                let h = self.user(*u)?;
                m_nonneg("flag_id", (*f).into())?;
                h.and_then(|h| self.unlocks.remove(&(h, *f)))
                    .ok_or(E::NotFound(Entity::Unlock))?;
                Ok(Out::Unit)
            }
            Op::Register {
                email,
                username,
                commit,
            } => self.register(*email, *username, *commit),
            Op::Battle {
                u,
                delta,
                flags,
                commit,
            } => self.battle(*u, *delta, flags, *commit),
            Op::BattleOnce {
                u,
                battle,
                delta,
                flags,
                at,
            } => self.battle_once(*u, *battle, *delta, flags, *at),
        }
    }

    fn battle_once(&mut self, u: U, battle: usize, delta: i64, flags: &[i32], at: i64) -> R {
        let h = self.user(u)?;
        m_ts("at", at)?;
        for f in flags {
            m_nonneg("flag_id", (*f).into())?;
        }
        let set: Vec<i32> = flags
            .iter()
            .copied()
            .collect::<BTreeSet<i32>>()
            .into_iter()
            .collect();
        let h = self.live(h).ok_or(E::UnknownUser)?;
        if let Some(b) = self.battles.get(&(h, battle)) {
            if (b.delta, &b.flags, b.at) != (delta, &set, at) {
                return Err(E::Conflict(UniqueKey::BattleId));
            }
            return Ok(Out::Battled(h, b.level, b.xp, b.granted.clone(), true));
        }
        let Out::Prog(_, level, xp) = self.step(&Op::AddXp(U::Slot(h), delta))? else {
            unreachable!("add_xp answers with a progression")
        };
        let mut granted = Vec::new();
        for f in &set {
            if let std::collections::btree_map::Entry::Vacant(e) = self.unlocks.entry((h, *f)) {
                e.insert(at);
                granted.push(*f);
            }
        }
        self.battles.insert(
            (h, battle),
            MBattle {
                delta,
                flags: set,
                at,
                level,
                xp,
                granted: granted.clone(),
            },
        );
        Ok(Out::Battled(h, level, xp, granted, false))
    }

    fn register(&mut self, email: Name, username: Name, commit: bool) -> R {
        let saved = self.clone();
        let created = self.step(&Op::CreateAccount {
            email,
            username,
            hash: 1,
            at: 1,
        })?;
        let h = self.created - 1;
        self.progression.insert(h, (1, 0));
        self.loadouts
            .insert(h, (slots(&Loadout::empty(UserId(1), 1)), 1));
        if !commit {
            // The handle is used up; the rolled-back account never existed.
            let created = self.created;
            *self = saved;
            self.created = created;
            return Ok(Out::RolledBack);
        }
        Ok(created)
    }

    fn battle(&mut self, u: U, delta: i64, flags: &[i32], commit: bool) -> R {
        let saved = self.clone();
        let xp = self.step(&Op::AddXp(u, delta))?;
        let granted = match self.step(&Op::GrantMany(u, flags.to_vec(), 500)) {
            Ok(o) => o,
            Err(e) => {
                *self = saved;
                return Err(e);
            }
        };
        if !commit {
            *self = saved;
            return Ok(Out::RolledBack);
        }
        Ok(Out::Pair(Box::new(xp), Box::new(granted)))
    }

    fn counts(&self) -> [i64; 6] {
        [
            self.accounts.len() as i64,
            self.sessions.len() as i64,
            self.loadouts.len() as i64,
            self.progression.len() as i64,
            self.unlocks.len() as i64,
            self.battles.len() as i64,
        ]
    }
}

// ---------------------------------------------------------------------------
// The backend under test
// ---------------------------------------------------------------------------

struct Backend<'a> {
    db: &'a Db,
    /// handle -> the id the database gave it
    ids: Vec<UserId>,
    rev: HashMap<i64, H>,
}

impl Backend<'_> {
    fn id(&self, u: U) -> UserId {
        match u {
            U::Bad(v) => UserId(v),
            U::Missing => UserId(2_000_000_000),
            U::Slot(i) => self
                .ids
                .get(i)
                .copied()
                .unwrap_or(UserId(1_000_000_000 + i as i64)),
        }
    }

    fn h(&self, id: UserId) -> H {
        self.rev.get(&id.0).copied().unwrap_or(usize::MAX)
    }

    fn account(&self, a: persist::Account) -> Out {
        Out::Account(AccountOut {
            user: self.h(a.user_id),
            email: a.email,
            username: a.username,
            pass_hash: a.pass_hash,
            created_at: a.created_at,
            last_login_at: a.last_login_at,
        })
    }

    fn session(&self, s: persist::Session) -> SessionOut {
        SessionOut {
            id: s.id,
            user: self.h(s.user_id),
            created_at: s.created_at,
            expires_at: s.expires_at,
        }
    }

    async fn apply(&mut self, op: &Op) -> Out {
        match self.step(op).await {
            Ok(o) => o,
            Err(e) => Out::Err(e.into()),
        }
    }

    async fn step(&mut self, op: &Op) -> Result<Out, Error> {
        let db = self.db;
        Ok(match op {
            Op::CreateAccount {
                email,
                username,
                hash,
                at,
            } => {
                let hash = hash_bytes(*hash);
                let a = db
                    .accounts()
                    .create(&NewAccount {
                        email: email_of(*email),
                        username: username_of(*username),
                        pass_hash: &hash,
                        created_at: *at,
                    })
                    .await?;
                self.rev.insert(a.user_id.0, self.ids.len());
                self.ids.push(a.user_id);
                self.account(a)
            }
            Op::DeleteAccount(u) => {
                db.accounts().delete(self.id(*u)).await?;
                Out::Unit
            }
            Op::GetAccount(u) => self.account(db.accounts().get(self.id(*u)).await?),
            Op::FindByEmail(n) => self.account(db.accounts().find_by_email(email_of(*n)).await?),
            Op::FindByUsername(n) => {
                self.account(db.accounts().find_by_username(username_of(*n)).await?)
            }
            Op::UpdateEmail(u, n) => {
                db.accounts()
                    .update_email(self.id(*u), email_of(*n))
                    .await?;
                Out::Unit
            }
            Op::UpdateUsername(u, n) => {
                db.accounts()
                    .update_username(self.id(*u), username_of(*n))
                    .await?;
                Out::Unit
            }
            Op::TouchLogin(u, at) => {
                db.accounts().update_last_login(self.id(*u), *at).await?;
                Out::Unit
            }
            Op::CreateSession {
                tok,
                u,
                created,
                ttl,
            } => {
                let s = db
                    .sessions()
                    .create(TOKENS[*tok], self.id(*u), *created, created + ttl)
                    .await?;
                Out::Session(self.session(s))
            }
            Op::LookupSession(tok) => {
                Out::Session(self.session(db.sessions().find_by_token(TOKENS[*tok]).await?))
            }
            Op::DeleteSession(tok) => {
                db.sessions().delete(TOKENS[*tok]).await?;
                Out::Unit
            }
            Op::DeleteAllSessions(u) => {
                Out::Count(db.sessions().delete_all_for_user(self.id(*u)).await?)
            }
            Op::ListSessions(u) => Out::Sessions(
                db.sessions()
                    .list_for_user(self.id(*u))
                    .await?
                    .into_iter()
                    .map(|s| self.session(s))
                    .collect(),
            ),
            Op::RevokeSession(u, tok) => {
                db.sessions().revoke(self.id(*u), sid(TOKENS[*tok])).await?;
                Out::Unit
            }
            Op::SweepExpired { now, batch } => {
                Out::Count(db.sessions().delete_expired(*now, *batch).await?)
            }
            Op::SaveLoadout { u, seed, at } => {
                db.loadouts()
                    .save(&loadout_for(self.id(*u), *seed, *at))
                    .await?;
                Out::Unit
            }
            Op::GetLoadout(u) => {
                let l = db.loadouts().get(self.id(*u)).await?;
                Out::Loadout(LoadoutOut {
                    user: self.h(l.user_id),
                    slots: slots(&l),
                    updated_at: l.updated_at,
                })
            }
            Op::DeleteLoadout(u) => {
                db.loadouts().delete(self.id(*u)).await?;
                Out::Unit
            }
            Op::SetProgression { u, level, xp } => {
                db.progression()
                    .set(&Progression {
                        user_id: self.id(*u),
                        level: *level,
                        xp: *xp,
                    })
                    .await?;
                Out::Unit
            }
            Op::GetProgression(u) => {
                let p = db.progression().get(self.id(*u)).await?;
                Out::Prog(self.h(p.user_id), p.level, p.xp)
            }
            Op::AddXp(u, d) => {
                let p = db.progression().add_xp(self.id(*u), *d).await?;
                Out::Prog(self.h(p.user_id), p.level, p.xp)
            }
            Op::Grant(u, f, at) => Out::Bool(db.unlocks().grant(self.id(*u), *f, *at).await?),
            Op::GrantMany(u, f, at) => {
                Out::Flags(db.unlocks().grant_many(self.id(*u), f, *at).await?)
            }
            Op::Has(u, f) => Out::Bool(db.unlocks().has(self.id(*u), *f).await?),
            Op::ListUnlocks(u) => Out::Unlocks(
                db.unlocks()
                    .list(self.id(*u))
                    .await?
                    .into_iter()
                    .map(|x| (x.flag_id, x.unlocked_at))
                    .collect(),
            ),
            Op::Revoke(u, f) => {
                db.unlocks().revoke(self.id(*u), *f).await?;
                Out::Unit
            }
            Op::BattleOnce {
                u,
                battle,
                delta,
                flags,
                at,
            } => {
                let r = db
                    .battles()
                    .apply(&BattleEnd {
                        user_id: self.id(*u),
                        battle_id: BATTLE_IDS[*battle],
                        xp: *delta,
                        flags,
                        at: *at,
                    })
                    .await?;
                let p = r.progression;
                Out::Battled(self.h(p.user_id), p.level, p.xp, r.granted, r.replayed)
            }
            Op::Register {
                email,
                username,
                commit,
            } => {
                let tx = db.begin().await?;
                let a = common::register_in(
                    &tx,
                    &NewAccount {
                        email: email_of(*email),
                        username: username_of(*username),
                        pass_hash: &hash_bytes(1),
                        created_at: 1,
                    },
                )
                .await?;
                if *commit {
                    tx.commit().await?;
                    self.rev.insert(a.user_id.0, self.ids.len());
                    self.ids.push(a.user_id);
                    self.account(a)
                } else {
                    tx.rollback().await?;
                    // The handle is used up; its id names no account (SQLite
                    // may give the same id to a later account, so it is not
                    // entered in the reverse map).
                    self.ids.push(UserId(1_500_000_000 + self.ids.len() as i64));
                    Out::RolledBack
                }
            }
            Op::Battle {
                u,
                delta,
                flags,
                commit,
            } => {
                let tx = db.begin().await?;
                let p = tx.progression().add_xp(self.id(*u), *delta).await?;
                let xp = Out::Prog(self.h(p.user_id), p.level, p.xp);
                let new = tx.unlocks().grant_many(self.id(*u), flags, 500).await?;
                if *commit {
                    tx.commit().await?;
                    Out::Pair(Box::new(xp), Box::new(Out::Flags(new)))
                } else {
                    tx.rollback().await?;
                    Out::RolledBack
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------
// Raw access: wipe between cases, count rows
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Running a sequence
// ---------------------------------------------------------------------------

struct Ops<'a>(&'a [Op]);

impl fmt::Display for Ops<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.0.iter().enumerate() {
            writeln!(f, "  {i:>3}: {op:?}")?;
        }
        Ok(())
    }
}

/// Every user-visible piece of state for every handle, through the API, for
/// the model and the backend alike.
async fn final_state(b: &mut Backend<'_>, created: usize) -> Vec<Out> {
    let mut out = Vec::new();
    for i in 0..created + 1 {
        let u = U::Slot(i);
        for op in [
            Op::GetAccount(u),
            Op::ListSessions(u),
            Op::GetLoadout(u),
            Op::GetProgression(u),
            Op::ListUnlocks(u),
        ] {
            out.push(b.apply(&op).await);
        }
    }
    for t in 0..3 {
        out.push(b.apply(&Op::LookupSession(t)).await);
    }
    out
}

fn model_final_state(m: &mut Model) -> Vec<Out> {
    let mut out = Vec::new();
    for i in 0..m.created + 1 {
        let u = U::Slot(i);
        for op in [
            Op::GetAccount(u),
            Op::ListSessions(u),
            Op::GetLoadout(u),
            Op::GetProgression(u),
            Op::ListUnlocks(u),
        ] {
            out.push(m.apply(&op));
        }
    }
    for t in 0..3 {
        out.push(m.apply(&Op::LookupSession(t)));
    }
    out
}

async fn run_sequence(
    backend: &str,
    t: &common::TestDb,
    raw: &Raw,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    raw.wipe().await;
    let mut model = Model::default();
    let mut b = Backend {
        db: &t.db,
        ids: Vec::new(),
        rev: HashMap::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        let want = model.apply(op);
        let got = b.apply(op).await;
        if got != want {
            return Err(TestCaseError::fail(format!(
                "{backend} diverged from the model at step {i}: {op:?}\n  model:   {want:?}\n  {backend}: {got:?}\nsequence:\n{}",
                Ops(ops)
            )));
        }
    }
    let want = model_final_state(&mut model);
    let got = final_state(&mut b, model.created).await;
    if got != want {
        return Err(TestCaseError::fail(format!(
            "{backend}: final state differs from the model\n  model:   {want:?}\n  {backend}: {got:?}\nsequence:\n{}",
            Ops(ops)
        )));
    }
    let (want, got) = (model.counts(), raw.counts().await);
    if got != want {
        return Err(TestCaseError::fail(format!(
            "{backend}: row counts {got:?}, model {want:?}\nsequence:\n{}",
            Ops(ops)
        )));
    }
    Ok(())
}

fn config() -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 128;
    }
    // The same sequences on both backends: a fixed seed unless overridden.
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x5e55_1015);
    }
    c.failure_persistence = None;
    c.max_shrink_iters = 400;
    c
}

/// 2 or 3 accounts, and progression rows for the first two, first (so most
/// operations have someone to act on), then 16 to 35 random operations.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    (
        2..=3usize,
        proptest::collection::vec(0..3usize, 3),
        proptest::collection::vec(0..100i64, 2),
        proptest::collection::vec(op(), 16..=35),
    )
        .prop_map(|(n, variants, xp, body)| {
            let mut v: Vec<Op> = (0..n)
                .map(|i| Op::CreateAccount {
                    email: Name(i, variants[i]),
                    username: Name(i, (variants[i] + 1) % 3),
                    hash: 1 + i as u8,
                    at: 100 + i as i64,
                })
                .collect();
            for (i, xp) in xp.into_iter().enumerate() {
                v.push(Op::SetProgression {
                    u: U::Slot(i),
                    level: i as i32,
                    xp,
                });
            }
            v.extend(body);
            v
        })
}

/// Random operation sequences on `backend` give what the in-memory model
/// gives.
fn matches_model(backend: common::Backend) {
    let name = backend.name();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (t, raw) = rt.block_on(async {
        let t = backend.fresh().await;
        let raw = Raw::open(&t.db).await;
        (t, raw)
    });
    let mut runner = TestRunner::new(config());
    let result = runner.run(&ops(), |ops| {
        rt.block_on(run_sequence(name, &t, &raw, &ops))
    });
    rt.block_on(async {
        drop(raw);
        t.close().await;
    });
    if let Err(e) = result {
        panic!("{name} does not match the model: {e}");
    }
}

both_backends! {
    blocking matches_model,
}

/// The model itself: a hand-written sequence with known results, so a model
/// bug cannot make both backends "agree" with a wrong expectation unnoticed.
#[test]
fn model_sanity() {
    let mut m = Model::default();
    let n = |i, v| Name(i, v);
    let create = |e, u| Op::CreateAccount {
        email: e,
        username: u,
        hash: 3,
        at: 10,
    };
    assert!(matches!(m.apply(&create(n(0, 0), n(0, 0))), Out::Account(a) if a.user == 0));
    assert_eq!(
        m.apply(&create(n(0, 1), n(1, 0))),
        Out::Err(E::Conflict(UniqueKey::Email))
    );
    assert_eq!(
        m.apply(&create(n(1, 0), n(0, 2))),
        Out::Err(E::Conflict(UniqueKey::Username))
    );
    assert_eq!(
        m.apply(&create(n(4, 0), n(0, 2))),
        Out::Err(E::Invalid("email", Violation::Empty))
    );
    assert_eq!(
        m.apply(&create(n(1, 0), n(4, 2))),
        Out::Err(E::Invalid("username", Violation::TooLong { max: 32 }))
    );
    assert!(matches!(m.apply(&Op::FindByUsername(n(0, 2))), Out::Account(a) if a.user == 0));
    assert!(matches!(m.apply(&Op::FindByEmail(n(0, 2))), Out::Account(a) if a.user == 0));
    assert!(matches!(m.apply(&create(n(2, 1), n(2, 2))), Out::Account(a) if a.user == 1));
    assert!(matches!(m.apply(&Op::FindByUsername(n(2, 0))), Out::Account(a) if a.user == 1));
    assert_eq!(
        m.apply(&Op::AddXp(U::Slot(0), 5)),
        Out::Err(E::NotFound(Entity::Progression))
    );
    assert_eq!(
        m.apply(&Op::SetProgression {
            u: U::Slot(0),
            level: 1,
            xp: i64::MAX - 20
        }),
        Out::Unit
    );
    assert_eq!(
        m.apply(&Op::AddXp(U::Slot(0), i64::MAX)),
        Out::Err(E::Invalid("xp_delta", Violation::Overflow))
    );
    assert_eq!(
        m.apply(&Op::AddXp(U::Slot(0), i64::MIN)),
        Out::Err(E::Invalid("xp_delta", Violation::WouldBeNegative))
    );
    assert_eq!(
        m.apply(&Op::AddXp(U::Slot(0), 20)),
        Out::Prog(0, 1, i64::MAX)
    );
    assert!(matches!(
        m.apply(&Op::CreateSession {
            tok: 0,
            u: U::Slot(0),
            created: 5,
            ttl: 5
        }),
        Out::Session(_)
    ));
    assert_eq!(
        m.apply(&Op::CreateSession {
            tok: 0,
            u: U::Missing,
            created: 5,
            ttl: 5
        }),
        Out::Err(E::Conflict(UniqueKey::SessionToken))
    );
    assert_eq!(
        m.apply(&Op::CreateSession {
            tok: 1,
            u: U::Missing,
            created: 5,
            ttl: 5
        }),
        Out::Err(E::UnknownUser)
    );
    assert_eq!(
        m.apply(&Op::GrantMany(U::Slot(0), vec![3, 1, 3], 7)),
        Out::Flags(vec![1, 3])
    );
    assert_eq!(
        m.apply(&Op::GrantMany(U::Missing, vec![], 7)),
        Out::Flags(vec![])
    );
    assert_eq!(m.apply(&Op::Grant(U::Slot(0), 1, 9)), Out::Bool(false));
    assert_eq!(m.apply(&Op::DeleteAccount(U::Slot(0))), Out::Unit);
    assert_eq!(m.counts(), [1, 0, 0, 0, 0, 0]);
    assert_eq!(
        m.apply(&Op::Grant(U::Slot(0), 1, 9)),
        Out::Err(E::UnknownUser)
    );
    assert_eq!(
        m.apply(&Op::SweepExpired { now: 10, batch: 1 }),
        Out::Count(0)
    );
}
