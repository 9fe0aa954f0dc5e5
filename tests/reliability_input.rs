//! Issue 5, promise 7: hostile input never panics and never diverges.
//!
//! `hostile_input_same_outcome_on_both_backends` opens one migrated SQLite
//! file and one PostgreSQL database and runs, on both at once, the same
//! generated inputs through every repository operation: proptest sequences of
//! one to six operations (arbitrary Unicode with NUL, controls, combining
//! marks, RTL and surrogate-adjacent characters, confusables, full-width
//! forms, ligatures, ß/ẞ, Turkish i, high-expansion characters, strings at
//! and beyond every cap; i64/i32 extremes for ids, counters, deltas, flags and
//! slots; timestamps at the edges; tokens of every length; hash bytes with
//! 0x00/0xFF), then exhaustive sweeps (every token length 0..=600, every
//! numeric edge in every numeric argument, a table of confusable names with
//! their expected collisions). Each case starts from the same fixture rows.
//! For every operation:
//! - both backends return the same normalised outcome (typed error: variant +
//!   field + violation, `NotFound(entity)`, `Conflict(key)`, `UnknownUser`; or
//!   the same values, user ids compared by creation order);
//! - an input that breaks a rule of D-010/D-012 gets exactly the
//!   `InvalidInput { field, violation }` those rules name (an oracle here);
//! - no `Error::Sqlite`, `Error::Postgres`, `Error::Constraint` or other
//!   untyped error escapes (that would be validation missing something);
//! - every successful write reads back byte-exact (get, find by email,
//!   username and token);
//!
//! and after every case both databases hold identical rows (accounts
//! byte-exact with `*_key = canonical_key(display form)`, the same row
//! counts, the same per-user state through the API). A panic anywhere in the
//! process (a panic hook counts them) fails the test.
//!
//! Pure tests: canonical-key properties (idempotent, ASCII-case-insensitive,
//! equal across NFC/NFD/NFKC/NFKD, NFC output) and `SessionId` parsing.
//! `fuzz_smoke_*`: a seeded stable-Rust mutation loop over the bodies of the
//! cargo-fuzz targets (`fuzz/src/lib.rs`, included below), so the default
//! run exercises them without nightly; `scripts/fuzz` runs the real
//! libFuzzer targets for a bounded time.
//!
//! `PERSIST_RELIABILITY_LONG=1` multiplies every case count by 20;
//! `PERSIST_RELIABILITY_SEED=<u64>` changes the seed (fixed by default).
//! Figures go to stderr: `reliability input cases=N operations=M
//! divergences=0 panics=0`.

mod common;

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz_targets;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use common::raw::Raw;
use persist::{
    canonical_key, Account, Db, Entity, Error, Loadout, NewAccount, PieceAbilities, Progression,
    Session, SessionId, UniqueKey, Unlock, UserId, Violation,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngSeed, TestCaseError, TestRunner};
use sha2::{Digest, Sha256};
use unicode_normalization::{is_nfc, UnicodeNormalization};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

// ---------------------------------------------------------------------------
// The rules under test (D-007, D-010, D-012, D-022, D-027)
// ---------------------------------------------------------------------------

const TS_MAX: i64 = 253_402_300_799;
const EMAIL_MAX: usize = 254;
const USERNAME_MAX: usize = 32;
const KEY_MAX: usize = 8192;
const HASH_MAX: usize = 512;
const TOKEN_MAX: usize = 512;
/// Shortest token a session is created with (characters).
const TOKEN_MIN: usize = 22;
const BATCH_MAX: i64 = 100_000;
/// Ids no account of a case can have (ids start at 1 and cases are small).
const MISSING_BASE: i64 = 1 << 41;

// ---------------------------------------------------------------------------
// Figures, run length, seed, panic counting
// ---------------------------------------------------------------------------

static CASES: AtomicU64 = AtomicU64::new(0);
static OPERATIONS: AtomicU64 = AtomicU64::new(0);
static DIVERGENCES: AtomicU64 = AtomicU64::new(0);
static PANICS: AtomicU64 = AtomicU64::new(0);
/// Outcomes of the operations under test by kind: ok, invalid_input,
/// not_found, conflict, unknown_user.
static OUTCOMES: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
const OUTCOME_NAMES: [&str; 5] = [
    "ok",
    "invalid_input",
    "not_found",
    "conflict",
    "unknown_user",
];

fn long_run() -> bool {
    std::env::var("PERSIST_RELIABILITY_LONG").is_ok_and(|v| v == "1")
}

/// `n`, or 20 times `n` in the long run.
fn scaled(n: u32) -> u32 {
    if long_run() {
        n * 20
    } else {
        n
    }
}

fn seed() -> u64 {
    std::env::var("PERSIST_RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0005_0007)
}

/// Counts every panic of the process (any thread, spawned tasks included),
/// then lets the default hook print it.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            previous(info);
        }));
    });
}

fn prop_config(cases: u32, salt: u64) -> PropConfig {
    let mut c = PropConfig::with_cases(cases);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed().to_le_bytes());
    key[8..16].copy_from_slice(&salt.to_le_bytes());
    c.rng_seed = RngSeed::Fixed(u64::from_le_bytes(
        Sha256::digest(key)[..8].try_into().expect("8 bytes"),
    ));
    c.failure_persistence = None;
    c.max_shrink_iters = 200;
    c
}

// ---------------------------------------------------------------------------
// Hostile values
// ---------------------------------------------------------------------------

/// Lookalikes and case/normalisation traps: Cyrillic and Greek letters that
/// look Latin, Turkish dotted/dotless i, ß/ẞ/ſ, Kelvin/Ångström signs, µ/μ,
/// ǅ, ligatures, full-width and mathematical letters, circled digits.
#[rustfmt::skip]
const CONFUSABLES: &[char] = &[
    'a', 'A', 'e', 'o', 'i', 'I', 's', 'k',
    '\u{430}', '\u{410}', '\u{435}', '\u{43e}', '\u{440}', '\u{441}', '\u{445}', '\u{3bf}',
    '\u{391}', '\u{131}', '\u{130}', '\u{df}', '\u{1e9e}', '\u{17f}', '\u{212a}', '\u{212b}',
    '\u{c5}', '\u{b5}', '\u{3bc}', '\u{1c5}', '\u{fb01}', '\u{fb00}', '\u{fb03}', '\u{fb06}',
    '\u{ff21}', '\u{ff41}', '\u{ff20}', '\u{ff0e}', '\u{ff5a}', '\u{2460}', '\u{1d400}', '\u{1d504}',
    '\u{210c}', '\u{3c2}', '\u{3a3}',
];

/// Characters whose canonical key is much longer than themselves (up to 18
/// characters for U+FDFA).
#[rustfmt::skip]
const EXPANDERS: &[char] = &[
    '\u{fdfa}', '\u{fdfb}', '\u{3300}', '\u{3302}', '\u{3307}', '\u{3315}', '\u{3316}', '\u{3317}',
    '\u{3319}', '\u{331a}', '\u{3320}', '\u{332b}', '\u{332e}', '\u{3342}', '\u{3357}', '\u{33ff}',
    '\u{33c7}', '\u{2474}', '\u{2487}', '\u{1f110}', '\u{1c4}', '\u{1c7}', '\u{fb03}', '\u{390}',
    '\u{3b0}', '\u{149}', '\u{1e9e}', '\u{fdf2}', '\u{fc5e}', '\u{2121}', '\u{3250}', '\u{32cc}',
];

/// Bidi controls and RTL letters, invisible and separator characters, and
/// characters next to the surrogate block and at the ends of the planes.
#[rustfmt::skip]
const SPECIALS: &[char] = &[
    '\u{5d0}', '\u{627}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
    '\u{61c}', '\u{d7ff}', '\u{e000}', '\u{f8ff}', '\u{fffd}', '\u{fffe}', '\u{ffff}', '\u{10000}',
    '\u{10ffff}', '\u{feff}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{2028}', '\u{2029}', '\u{a0}',
    '\u{3000}', '\u{115f}', '\u{3164}', '\u{1f600}', '\u{1f469}', '\u{1f3fd}', '\u{e0041}',
];

fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        30 => prop::char::range('a', 'z'),
        8 => prop::char::range('A', 'Z'),
        4 => prop::char::range('0', '9'),
        5 => prop::sample::select(&b"@.+-_ '\"\\%/"[..]).prop_map(char::from),
        3 => prop::char::range('\0', '\u{1f}'),
        1 => Just('\u{7f}'),
        2 => prop::char::range('\u{80}', '\u{9f}'),
        4 => prop::char::range('\u{300}', '\u{36f}'),
        4 => prop::sample::select(CONFUSABLES),
        3 => prop::sample::select(SPECIALS),
        2 => prop::sample::select(EXPANDERS),
        3 => any::<char>(),
    ]
}

/// Lengths at, around and beyond every text cap.
const NEAR_CAPS: &[usize] = &[
    1, 2, 31, 32, 33, 253, 254, 255, 256, 300, 511, 512, 513, 8191, 8192, 8193, 9000,
];

/// Exactly `len` characters, cycling `unit`.
fn cycled(unit: &[char], len: usize) -> String {
    unit.iter().copied().cycle().take(len).collect()
}

/// Tiny deterministic generator for long filler (splitmix64).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hostile_string() -> BoxedStrategy<String> {
    prop_oneof![
        10 => prop::collection::vec(hostile_char(), 0..24)
            .prop_map(|v| v.into_iter().collect()),
        3 => (prop::sample::select(NEAR_CAPS), prop::collection::vec(hostile_char(), 1..5))
            .prop_map(|(len, unit)| cycled(&unit, len)),
        1 => (prop::sample::select(NEAR_CAPS), any::<u64>()).prop_map(|(len, mut s)| {
            (0..len)
                .map(|_| EXPANDERS[(splitmix(&mut s) % EXPANDERS.len() as u64) as usize])
                .collect()
        }),
    ]
    .boxed()
}

const TS_EDGES: &[i64] = &[i64::MIN, -1, 0, 1, TS_MAX - 1, TS_MAX, TS_MAX + 1, i64::MAX];

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0..=TS_MAX,
        4 => 0..5_000i64,
        3 => prop::sample::select(TS_EDGES),
        1 => any::<i64>(),
    ]
}

/// Ids that no account has or that are invalid, never a real id.
const ID_EDGES: &[i64] = &[
    i64::MIN,
    i64::MIN + 1,
    -1,
    0,
    i32::MAX as i64,
    i32::MAX as i64 + 1,
    u32::MAX as i64 + 1,
    (1 << 53) + 1,
    i64::MAX - 1,
    i64::MAX,
];

const I32_EDGES: &[i32] = &[i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX - 1, i32::MAX];

const I64_EDGES: &[i64] = &[
    i64::MIN,
    i64::MIN + 1,
    -i64::MAX,
    i32::MIN as i64 - 1,
    -1,
    0,
    1,
    i32::MAX as i64 + 1,
    TS_MAX + 1,
    i64::MAX - 1,
    i64::MAX,
];

fn i32_value() -> impl Strategy<Value = i32> {
    prop_oneof![12 => 0..50i32, 2 => prop::sample::select(I32_EDGES), 1 => any::<i32>()]
}

fn i64_value() -> impl Strategy<Value = i64> {
    prop_oneof![6 => 0..1_000i64, 3 => prop::sample::select(I64_EDGES), 1 => any::<i64>()]
}

fn delta() -> impl Strategy<Value = i64> {
    prop_oneof![6 => -200..200i64, 3 => prop::sample::select(I64_EDGES), 1 => any::<i64>()]
}

fn batch() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 1..4i64,
        1 => prop::sample::select(&[i64::MIN, -1, 0, 1, BATCH_MAX, BATCH_MAX + 1, i64::MAX][..]),
    ]
}

fn hash() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..64),
        2 => (prop::sample::select(&[0usize, 1, 2, 511, 512, 513, 600][..]),
              prop::sample::select(&[0x00u8, 0xff, 0x24][..]))
            .prop_map(|(n, b)| vec![b; n]),
        1 => (prop::sample::select(&[511usize, 512, 513][..]), any::<u64>()).prop_map(|(n, mut s)| {
            (0..n).map(|_| splitmix(&mut s) as u8).collect()
        }),
    ]
}

/// Tokens whose byte length sits on the 512-byte cap with multi-byte
/// characters, and other oddities.
fn boundary_tokens() -> Vec<String> {
    vec![
        "\u{e9}".repeat(256),
        format!("{}a", "\u{e9}".repeat(256)),
        format!("{}ab", "\u{20ac}".repeat(170)),
        format!("{}abc", "\u{20ac}".repeat(170)),
        "\u{1f600}".repeat(128),
        format!("{}a", "\u{1f600}".repeat(128)),
        "\0".into(),
        "\0".repeat(512),
        " ".into(),
        "\u{feff}".into(),
        "\u{fffd}".repeat(170),
        "a\u{301}".into(),
        "\u{e1}".into(),
    ]
}

fn hostile_token() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (0..=600usize, any::<u64>()).prop_map(|(n, mut s)| ascii_token(n, &mut s)),
        3 => hostile_string(),
        1 => prop::sample::select(boundary_tokens()),
    ]
    .boxed()
}

/// `n` bytes of base64url-like text.
fn ascii_token(n: usize, s: &mut u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..n)
        .map(|_| char::from(ALPHABET[(splitmix(s) % 64) as usize]))
        .collect()
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// A user argument: the n-th account of the case (0 and 1 are the fixtures;
/// one not created yet is an id nobody has), or a raw hostile id that no
/// account can have.
#[derive(Debug, Clone, Copy)]
enum U {
    Slot(usize),
    Raw(i64),
}

/// Which existing text a variant is made from.
#[derive(Debug, Clone, Copy)]
enum Ref {
    Email(usize),
    Username(usize),
    /// The email of the last `Create` / `UpdateEmail` of the case.
    LastEmail,
    /// The username of the last `Create` / `UpdateUsername` of the case.
    LastUsername,
}

/// How a variant is made.
#[derive(Debug, Clone, Copy)]
enum Transform {
    Same,
    Upper,
    Lower,
    SwapAsciiCase,
    Nfd,
    Nfc,
    Nfkc,
    Nfkd,
    FullWidth,
    Cyrillic,
    Turkish,
    SharpS,
    Ligature,
    MathBold,
    AppendCombining,
    TrailingSpace,
    ZeroWidth,
    PadTo(usize),
}

#[derive(Debug, Clone)]
enum Text {
    Fresh(String),
    Variant(Ref, Transform),
}

#[derive(Debug, Clone)]
enum Tok {
    Fixture(usize),
    /// The token of the last `CreateSession` of the case.
    Last,
    Fresh(String),
}

#[derive(Debug, Clone)]
enum Sid {
    /// The public id of a token, lower- or upper-case hex.
    Of(Tok, bool),
    Raw(String),
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        email: Text,
        username: Text,
        hash: Vec<u8>,
        at: i64,
    },
    Get(U),
    FindByEmail(Text),
    FindByUsername(Text),
    UpdateEmail(U, Text),
    UpdateUsername(U, Text),
    UpdatePassHash(U, Vec<u8>),
    UpdateLastLogin(U, i64),
    Delete(U),
    CreateSession {
        token: Tok,
        u: U,
        created: i64,
        expires: i64,
    },
    FindByToken(Tok),
    DeleteSession(Tok),
    Revoke(U, Sid),
    DeleteExpired {
        now: i64,
        batch: i64,
    },
    SaveLoadout {
        u: U,
        /// element, 4 army abilities, 6 piece abilities, 4 items.
        slots: [i32; 15],
        at: i64,
    },
    GetLoadout(U),
    SetProgression {
        u: U,
        level: i32,
        xp: i64,
    },
    AddXp(U, i64),
    Grant(U, i32, i64),
    GrantMany(U, Vec<i32>, i64),
    Has(U, i32),
    ListUnlocks(U),
    RevokeUnlock(U, i32),
}

fn user() -> impl Strategy<Value = U> {
    prop_oneof![
        6 => Just(U::Slot(0)),
        4 => Just(U::Slot(1)),
        3 => (2..5usize).prop_map(U::Slot),
        1 => prop::sample::select(ID_EDGES).prop_map(U::Raw),
        1 => (MISSING_BASE..=i64::MAX).prop_map(U::Raw),
        1 => (i64::MIN..=0i64).prop_map(U::Raw),
    ]
}

fn transform() -> impl Strategy<Value = Transform> {
    use Transform::*;
    prop_oneof![
        prop::sample::select(vec![
            Same,
            Upper,
            Lower,
            SwapAsciiCase,
            Nfd,
            Nfc,
            Nfkc,
            Nfkd,
            FullWidth,
            Cyrillic,
            Turkish,
            SharpS,
            Ligature,
            MathBold,
            AppendCombining,
            TrailingSpace,
            ZeroWidth,
        ]),
        prop::sample::select(&[31usize, 32, 33, 253, 254, 255, 8192, 8193][..]).prop_map(PadTo),
    ]
}

fn text_ref() -> impl Strategy<Value = Ref> {
    prop_oneof![
        (0..2usize).prop_map(Ref::Email),
        (0..2usize).prop_map(Ref::Username),
        Just(Ref::LastEmail),
        Just(Ref::LastUsername),
    ]
}

fn text() -> impl Strategy<Value = Text> {
    prop_oneof![
        5 => hostile_string().prop_map(Text::Fresh),
        4 => (text_ref(), transform()).prop_map(|(r, t)| Text::Variant(r, t)),
    ]
}

fn tok() -> impl Strategy<Value = Tok> {
    prop_oneof![
        2 => (0..2usize).prop_map(Tok::Fixture),
        3 => Just(Tok::Last),
        5 => hostile_token().prop_map(Tok::Fresh),
    ]
}

fn sid() -> impl Strategy<Value = Sid> {
    prop_oneof![
        4 => (tok(), any::<bool>()).prop_map(|(t, upper)| Sid::Of(t, upper)),
        1 => "[0-9a-fA-F]{0,40}".prop_map(Sid::Raw),
        1 => "[0-9a-f]{31}[g-z\u{e9}]".prop_map(Sid::Raw),
        1 => hostile_string().prop_map(Sid::Raw),
        1 => Just(Sid::Raw("\u{e9}".repeat(16))),
    ]
}

fn op() -> BoxedStrategy<Op> {
    prop_oneof![
        6 => (text(), text(), hash(), timestamp())
            .prop_map(|(email, username, hash, at)| Op::Create { email, username, hash, at }),
        1 => user().prop_map(Op::Get),
        3 => text().prop_map(Op::FindByEmail),
        3 => text().prop_map(Op::FindByUsername),
        2 => (user(), text()).prop_map(|(u, t)| Op::UpdateEmail(u, t)),
        2 => (user(), text()).prop_map(|(u, t)| Op::UpdateUsername(u, t)),
        1 => (user(), hash()).prop_map(|(u, h)| Op::UpdatePassHash(u, h)),
        1 => (user(), timestamp()).prop_map(|(u, t)| Op::UpdateLastLogin(u, t)),
        1 => user().prop_map(Op::Delete),
        4 => (tok(), user(), timestamp(), timestamp()).prop_map(|(token, u, created, expires)| {
            Op::CreateSession { token, u, created, expires }
        }),
        2 => tok().prop_map(Op::FindByToken),
        1 => tok().prop_map(Op::DeleteSession),
        2 => (user(), sid()).prop_map(|(u, s)| Op::Revoke(u, s)),
        1 => (timestamp(), batch()).prop_map(|(now, batch)| Op::DeleteExpired { now, batch }),
        2 => (user(), prop::array::uniform15(i32_value()), timestamp())
            .prop_map(|(u, slots, at)| Op::SaveLoadout { u, slots, at }),
        1 => user().prop_map(Op::GetLoadout),
        2 => (user(), i32_value(), i64_value())
            .prop_map(|(u, level, xp)| Op::SetProgression { u, level, xp }),
        2 => (user(), delta()).prop_map(|(u, d)| Op::AddXp(u, d)),
        2 => (user(), i32_value(), timestamp()).prop_map(|(u, f, t)| Op::Grant(u, f, t)),
        2 => (user(), prop::collection::vec(i32_value(), 0..6), timestamp())
            .prop_map(|(u, f, t)| Op::GrantMany(u, f, t)),
        1 => (user(), i32_value()).prop_map(|(u, f)| Op::Has(u, f)),
        1 => user().prop_map(Op::ListUnlocks),
        1 => (user(), i32_value()).prop_map(|(u, f)| Op::RevokeUnlock(u, f)),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// Fixtures and the per-case text context (identical for both backends)
// ---------------------------------------------------------------------------

const FIXTURE_EMAILS: [&str; 2] = ["fixture.zero@example.com", "Strasse.Fiona@Example.org"];
const FIXTURE_USERNAMES: [&str; 2] = ["FixtureZero", "Stra\u{df}e_Fiona"];
const FIXTURE_TOKENS: [&str; 2] = ["fixture-bearer-token-0", "fixture-bearer-token-1"];

/// Texts and tokens earlier operations of the case used, to build variants.
#[derive(Default)]
struct Ctx {
    last_email: Option<String>,
    last_username: Option<String>,
    last_token: Option<String>,
}

fn apply_transform(s: &str, t: Transform) -> String {
    use Transform::*;
    match t {
        Same => s.to_string(),
        Upper => s.to_uppercase(),
        Lower => s.to_lowercase(),
        SwapAsciiCase => s
            .chars()
            .map(|c| {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect(),
        Nfd => s.nfd().collect(),
        Nfc => s.nfc().collect(),
        Nfkc => s.nfkc().collect(),
        Nfkd => s.nfkd().collect(),
        FullWidth => s
            .chars()
            .map(|c| match c {
                '!'..='~' => char::from_u32(u32::from(c) - 0x21 + 0xff01).unwrap_or(c),
                _ => c,
            })
            .collect(),
        Cyrillic => s
            .chars()
            .map(|c| match c {
                'a' => '\u{430}',
                'e' => '\u{435}',
                'o' => '\u{43e}',
                'p' => '\u{440}',
                'c' => '\u{441}',
                _ => c,
            })
            .collect(),
        Turkish => s
            .chars()
            .map(|c| match c {
                'i' => '\u{130}',
                'I' => '\u{131}',
                _ => c,
            })
            .collect(),
        SharpS => s
            .replace('\u{df}', "SS")
            .replace("ss", "\u{df}")
            .replace("Ss", "\u{1e9e}"),
        Ligature => s.replace("fi", "\u{fb01}").replace("Fi", "\u{fb01}"),
        MathBold => s
            .chars()
            .map(|c| match c {
                'A'..='Z' => char::from_u32(u32::from(c) - 0x41 + 0x1d400).unwrap_or(c),
                'a'..='z' => char::from_u32(u32::from(c) - 0x61 + 0x1d41a).unwrap_or(c),
                _ => c,
            })
            .collect(),
        AppendCombining => format!("{s}\u{301}"),
        TrailingSpace => format!("{s} "),
        ZeroWidth => {
            let mut chars = s.chars();
            let first: String = chars.next().into_iter().collect();
            format!("{first}\u{200b}{}", chars.as_str())
        }
        PadTo(n) => {
            let mut out: String = s.chars().take(n).collect();
            let have = out.chars().count();
            out.extend(std::iter::repeat_n('x', n.saturating_sub(have)));
            out
        }
    }
}

impl Ctx {
    fn text(&self, t: &Text) -> String {
        match t {
            Text::Fresh(s) => s.clone(),
            Text::Variant(r, tr) => {
                let base = match r {
                    Ref::Email(i) => FIXTURE_EMAILS[*i],
                    Ref::Username(i) => FIXTURE_USERNAMES[*i],
                    Ref::LastEmail => self.last_email.as_deref().unwrap_or(FIXTURE_EMAILS[0]),
                    Ref::LastUsername => self
                        .last_username
                        .as_deref()
                        .unwrap_or(FIXTURE_USERNAMES[0]),
                };
                apply_transform(base, *tr)
            }
        }
    }

    fn token(&self, t: &Tok) -> String {
        match t {
            Tok::Fixture(i) => FIXTURE_TOKENS[*i].to_string(),
            Tok::Last => self
                .last_token
                .clone()
                .unwrap_or_else(|| FIXTURE_TOKENS[0].to_string()),
            Tok::Fresh(s) => s.clone(),
        }
    }

    fn sid(&self, s: &Sid) -> String {
        match s {
            Sid::Of(t, upper) => {
                let hex = hex::encode(&Sha256::digest(self.token(t).as_bytes())[..16]);
                if *upper {
                    hex.to_ascii_uppercase()
                } else {
                    hex
                }
            }
            Sid::Raw(s) => s.clone(),
        }
    }

    /// Remembers the texts an operation used (whatever its outcome).
    fn observe(&mut self, op: &Op) {
        match op {
            Op::Create {
                email, username, ..
            } => {
                self.last_email = Some(self.text(email));
                self.last_username = Some(self.text(username));
            }
            Op::UpdateEmail(_, t) => self.last_email = Some(self.text(t)),
            Op::UpdateUsername(_, t) => self.last_username = Some(self.text(t)),
            Op::CreateSession { token, .. } => self.last_token = Some(self.token(token)),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// The oracle: which InvalidInput each rule gives, in the order checked
// ---------------------------------------------------------------------------

type Check = Result<(), (&'static str, Violation)>;

fn rule_text(field: &'static str, s: &str, max: usize) -> Check {
    if s.is_empty() {
        return Err((field, Violation::Empty));
    }
    if s.contains('\0') {
        return Err((field, Violation::Nul));
    }
    if s.chars().any(char::is_control) {
        return Err((field, Violation::ControlCharacter));
    }
    if s.chars().count() > max {
        return Err((field, Violation::TooLong { max }));
    }
    if canonical_key(s).is_empty() {
        return Err((field, Violation::Empty));
    }
    Ok(())
}

/// The text rules of a stored email or username (create, update): no
/// invisible character, the cap counted on the NFC form it is stored in.
fn rule_stored(field: &'static str, s: &str, max: usize) -> Check {
    if s.is_empty() {
        return Err((field, Violation::Empty));
    }
    if s.contains('\0') {
        return Err((field, Violation::Nul));
    }
    if s.chars().any(char::is_control) {
        return Err((field, Violation::ControlCharacter));
    }
    let invisible = |c: char| {
        !matches!(c, '\u{200c}' | '\u{200d}')
            && (c.general_category() == GeneralCategory::Format
                || canonical_key(&format!("x{c}")) == canonical_key("x"))
    };
    if s.chars().any(invisible) {
        return Err((field, Violation::InvisibleCharacter));
    }
    if nfc(s).chars().count() > max {
        return Err((field, Violation::TooLong { max }));
    }
    if canonical_key(s).is_empty() {
        return Err((field, Violation::Empty));
    }
    Ok(())
}

/// The NFC form, the form emails and usernames are stored in.
fn nfc(s: &str) -> String {
    s.nfc().collect()
}

fn rule_bytes(field: &'static str, b: &[u8], max: usize) -> Check {
    if b.is_empty() {
        return Err((field, Violation::Empty));
    }
    if b.len() > max {
        return Err((field, Violation::TooLong { max }));
    }
    Ok(())
}

fn rule_ts(field: &'static str, t: i64) -> Check {
    if !(0..=TS_MAX).contains(&t) {
        return Err((
            field,
            Violation::OutOfRange {
                min: 0,
                max: TS_MAX,
            },
        ));
    }
    Ok(())
}

fn rule_user(id: i64) -> Check {
    if id < 1 {
        return Err((
            "user_id",
            Violation::OutOfRange {
                min: 1,
                max: i64::MAX,
            },
        ));
    }
    Ok(())
}

fn rule_non_negative(field: &'static str, v: i64) -> Check {
    if v < 0 {
        return Err((field, Violation::Negative));
    }
    Ok(())
}

fn rule_token(t: &str) -> Check {
    if t.is_empty() {
        return Err(("token", Violation::Empty));
    }
    if t.len() > TOKEN_MAX {
        return Err(("token", Violation::TooLong { max: TOKEN_MAX }));
    }
    Ok(())
}

fn rule_session_id(s: &str) -> Check {
    if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err((
            "session_id",
            Violation::Malformed("expected 32 hex characters"),
        ))
    }
}

/// The id an argument stands for; slots of accounts not created (yet) are
/// ids nobody has, so any valid slot id is >= 1.
fn oracle_id(u: U) -> i64 {
    match u {
        U::Slot(_) => 1,
        U::Raw(v) => v,
    }
}

/// The `InvalidInput` the rules require for `op`, if any.
fn expected_invalid(op: &Op, ctx: &Ctx) -> Check {
    match op {
        Op::Create {
            email,
            username,
            hash,
            at,
        } => {
            rule_stored("email", &ctx.text(email), EMAIL_MAX)?;
            rule_stored("username", &ctx.text(username), USERNAME_MAX)?;
            rule_bytes("pass_hash", hash, HASH_MAX)?;
            rule_ts("created_at", *at)
        }
        Op::Get(u) | Op::Delete(u) | Op::GetLoadout(u) | Op::ListUnlocks(u) => {
            rule_user(oracle_id(*u))
        }
        Op::FindByEmail(t) => rule_text("email", &ctx.text(t), KEY_MAX),
        Op::FindByUsername(t) => rule_text("username", &ctx.text(t), KEY_MAX),
        Op::UpdateEmail(u, t) => {
            rule_user(oracle_id(*u))?;
            rule_stored("email", &ctx.text(t), EMAIL_MAX)
        }
        Op::UpdateUsername(u, t) => {
            rule_user(oracle_id(*u))?;
            rule_stored("username", &ctx.text(t), USERNAME_MAX)
        }
        Op::UpdatePassHash(u, h) => {
            rule_user(oracle_id(*u))?;
            rule_bytes("pass_hash", h, HASH_MAX)
        }
        Op::UpdateLastLogin(u, t) => {
            rule_user(oracle_id(*u))?;
            rule_ts("last_login_at", *t)
        }
        Op::CreateSession {
            token,
            u,
            created,
            expires,
        } => {
            rule_token(&ctx.token(token))?;
            if ctx.token(token).chars().count() < TOKEN_MIN {
                return Err(("token", Violation::TooShort { min: TOKEN_MIN }));
            }
            rule_user(oracle_id(*u))?;
            rule_ts("created_at", *created)?;
            rule_ts("expires_at", *expires)?;
            if expires < created {
                return Err((
                    "expires_at",
                    Violation::OutOfRange {
                        min: *created,
                        max: TS_MAX,
                    },
                ));
            }
            Ok(())
        }
        Op::FindByToken(t) | Op::DeleteSession(t) => rule_token(&ctx.token(t)),
        Op::Revoke(u, s) => {
            rule_session_id(&ctx.sid(s))?;
            rule_user(oracle_id(*u))
        }
        Op::DeleteExpired { now, batch } => {
            rule_ts("now", *now)?;
            if !(1..=BATCH_MAX).contains(batch) {
                return Err((
                    "batch_size",
                    Violation::OutOfRange {
                        min: 1,
                        max: BATCH_MAX,
                    },
                ));
            }
            Ok(())
        }
        Op::SaveLoadout { u, slots, at } => {
            rule_user(oracle_id(*u))?;
            rule_non_negative("element_id", slots[0].into())?;
            for s in &slots[1..5] {
                rule_non_negative("army_abilities", (*s).into())?;
            }
            for s in &slots[5..11] {
                rule_non_negative("piece_abilities", (*s).into())?;
            }
            for s in &slots[11..15] {
                rule_non_negative("items", (*s).into())?;
            }
            rule_ts("updated_at", *at)
        }
        Op::SetProgression { u, level, xp } => {
            rule_user(oracle_id(*u))?;
            rule_non_negative("level", (*level).into())?;
            rule_non_negative("xp", *xp)
        }
        Op::AddXp(u, _) => rule_user(oracle_id(*u)),
        Op::Grant(u, f, t) => {
            rule_user(oracle_id(*u))?;
            rule_non_negative("flag_id", (*f).into())?;
            rule_ts("unlocked_at", *t)
        }
        Op::GrantMany(u, flags, t) => {
            rule_user(oracle_id(*u))?;
            for f in flags {
                rule_non_negative("flag_id", (*f).into())?;
            }
            rule_ts("unlocked_at", *t)
        }
        Op::Has(u, f) | Op::RevokeUnlock(u, f) => {
            rule_user(oracle_id(*u))?;
            rule_non_negative("flag_id", (*f).into())
        }
    }
}

// ---------------------------------------------------------------------------
// Normalised outcomes
// ---------------------------------------------------------------------------

/// A user id as the n-th account of the case, or the raw id given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Uid {
    Slot(usize),
    Raw(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum E {
    Invalid(&'static str, Violation),
    NotFound(Entity),
    Conflict(UniqueKey),
    UnknownUser,
    /// Anything else: never allowed (validation missed something).
    Untyped(String),
}

impl From<Error> for E {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput { field, violation } => E::Invalid(field, violation),
            Error::NotFound(x) => E::NotFound(x),
            Error::Conflict(k) => E::Conflict(k),
            Error::UnknownUser => E::UnknownUser,
            other => E::Untyped(format!("{}: {other} ({other:?})", other.kind())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AccountOut {
    user: Uid,
    email: String,
    username: String,
    pass_hash: Vec<u8>,
    created_at: i64,
    last_login_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Unit,
    Bool(bool),
    Count(u64),
    Flags(Vec<i32>),
    Account(AccountOut),
    Session(String, Uid, i64, i64),
    Sessions(Vec<(String, Uid, i64, i64)>),
    Loadout(Uid, [i32; 15], i64),
    Prog(Uid, i32, i64),
    Unlocks(Vec<Unlock>),
    Err(E),
}

impl Out {
    fn untyped(&self) -> Option<&str> {
        match self {
            Out::Err(E::Untyped(m)) => Some(m),
            _ => None,
        }
    }
}

fn slots_of(l: &Loadout) -> [i32; 15] {
    let mut s = [0; 15];
    s[0] = l.element_id;
    s[1..5].copy_from_slice(&l.army_abilities);
    s[5..11].copy_from_slice(&l.piece_abilities.to_array());
    s[11..15].copy_from_slice(&l.items);
    s
}

fn loadout_of(user: UserId, slots: &[i32; 15], at: i64) -> Loadout {
    let mut army = [0; 4];
    army.copy_from_slice(&slots[1..5]);
    let mut piece = [0; 6];
    piece.copy_from_slice(&slots[5..11]);
    let mut items = [0; 4];
    items.copy_from_slice(&slots[11..15]);
    Loadout {
        user_id: user,
        element_id: slots[0],
        army_abilities: army,
        piece_abilities: PieceAbilities::from_array(piece),
        items,
        updated_at: at,
    }
}

// ---------------------------------------------------------------------------
// One backend
// ---------------------------------------------------------------------------

/// Counts a repository call and awaits it.
macro_rules! call {
    ($e:expr) => {{
        OPERATIONS.fetch_add(1, Ordering::Relaxed);
        $e.await
    }};
}

/// Fails the case (a round trip that is not exact).
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

struct Side<'a> {
    db: &'a Db,
    /// Account ids in creation order: index = slot.
    ids: Vec<UserId>,
}

impl Side<'_> {
    fn id(&self, u: U) -> UserId {
        match u {
            U::Slot(i) => self
                .ids
                .get(i)
                .copied()
                .unwrap_or(UserId(MISSING_BASE + i as i64)),
            U::Raw(v) => UserId(v),
        }
    }

    fn uid(&self, id: UserId) -> Uid {
        match self.ids.iter().position(|x| *x == id) {
            Some(i) => Uid::Slot(i),
            None => Uid::Raw(id.0),
        }
    }

    fn account(&self, a: &Account) -> AccountOut {
        AccountOut {
            user: self.uid(a.user_id),
            email: a.email.clone(),
            username: a.username.clone(),
            pass_hash: a.pass_hash.clone(),
            created_at: a.created_at,
            last_login_at: a.last_login_at,
        }
    }

    fn session(&self, s: &Session) -> (String, Uid, i64, i64) {
        (
            s.id.to_string(),
            self.uid(s.user_id),
            s.created_at,
            s.expires_at,
        )
    }

    /// Creates the fixture rows of every case (through the API).
    async fn fixtures(&mut self) {
        for i in 0..2 {
            let a = self
                .db
                .accounts()
                .create(&NewAccount {
                    email: FIXTURE_EMAILS[i],
                    username: FIXTURE_USERNAMES[i],
                    pass_hash: format!("$argon2id$fixture{i}").as_bytes(),
                    created_at: 1_000,
                })
                .await
                .expect("fixture account");
            self.ids.push(a.user_id);
            self.db
                .sessions()
                .create(
                    FIXTURE_TOKENS[i],
                    a.user_id,
                    1_000,
                    2_000 + 1_000 * i as i64,
                )
                .await
                .expect("fixture session");
            self.db
                .progression()
                .set(&Progression {
                    user_id: a.user_id,
                    level: 1 - i as i32,
                    xp: 100 - 100 * i as i64,
                })
                .await
                .expect("fixture progression");
        }
        self.db
            .loadouts()
            .save(&Loadout::empty(self.ids[0], 1_000))
            .await
            .expect("fixture loadout");
        self.db
            .unlocks()
            .grant(self.ids[0], 1, 1_000)
            .await
            .expect("fixture unlock");
    }

    /// Runs one operation, with the read-backs of a successful write.
    /// `Err` is a round trip that is not exact.
    async fn apply(&mut self, op: &Op, ctx: &Ctx) -> Result<Out, String> {
        let db = self.db;
        Ok(match op {
            Op::Create {
                email,
                username,
                hash,
                at,
            } => {
                let (email, username) = (ctx.text(email), ctx.text(username));
                let new = NewAccount {
                    email: &email,
                    username: &username,
                    pass_hash: hash,
                    created_at: *at,
                };
                match call!(db.accounts().create(&new)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(a) => {
                        self.ids.push(a.user_id);
                        ensure!(
                            a.email == nfc(&email)
                                && a.username == nfc(&username)
                                && a.pass_hash == *hash
                                && a.created_at == *at
                                && a.last_login_at.is_none(),
                            "create returned {a:?} for {new:?}"
                        );
                        self.read_back_account(&a, &email, &username).await?;
                        Out::Account(self.account(&a))
                    }
                }
            }
            Op::Get(u) => match call!(db.accounts().get(self.id(*u))) {
                Ok(a) => Out::Account(self.account(&a)),
                Err(e) => Out::Err(e.into()),
            },
            Op::FindByEmail(t) => match call!(db.accounts().find_by_email(&ctx.text(t))) {
                Ok(a) => Out::Account(self.account(&a)),
                Err(e) => Out::Err(e.into()),
            },
            Op::FindByUsername(t) => match call!(db.accounts().find_by_username(&ctx.text(t))) {
                Ok(a) => Out::Account(self.account(&a)),
                Err(e) => Out::Err(e.into()),
            },
            Op::UpdateEmail(u, t) => {
                let (id, email) = (self.id(*u), ctx.text(t));
                match call!(db.accounts().update_email(id, &email)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(()) => {
                        let a = call!(db.accounts().get(id)).map_err(|e| e.to_string())?;
                        ensure!(a.email == nfc(&email), "update_email stored {:?}", a.email);
                        let f = call!(db.accounts().find_by_email(&email));
                        ensure!(
                            f.as_ref().map(|f| f.user_id).ok() == Some(id),
                            "find_by_email after update_email: {f:?}"
                        );
                        Out::Unit
                    }
                }
            }
            Op::UpdateUsername(u, t) => {
                let (id, name) = (self.id(*u), ctx.text(t));
                match call!(db.accounts().update_username(id, &name)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(()) => {
                        let a = call!(db.accounts().get(id)).map_err(|e| e.to_string())?;
                        ensure!(
                            a.username == nfc(&name),
                            "update_username stored {:?}",
                            a.username
                        );
                        let f = call!(db.accounts().find_by_username(&name));
                        ensure!(
                            f.as_ref().map(|f| f.user_id).ok() == Some(id),
                            "find_by_username after update_username: {f:?}"
                        );
                        Out::Unit
                    }
                }
            }
            Op::UpdatePassHash(u, h) => {
                let id = self.id(*u);
                match call!(db.accounts().update_pass_hash(id, h)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(()) => {
                        let a = call!(db.accounts().get(id)).map_err(|e| e.to_string())?;
                        ensure!(a.pass_hash == *h, "update_pass_hash stored another hash");
                        Out::Unit
                    }
                }
            }
            Op::UpdateLastLogin(u, t) => {
                let id = self.id(*u);
                match call!(db.accounts().update_last_login(id, *t)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(()) => {
                        let a = call!(db.accounts().get(id)).map_err(|e| e.to_string())?;
                        ensure!(a.last_login_at == Some(*t), "last_login_at {a:?}");
                        Out::Unit
                    }
                }
            }
            Op::Delete(u) => match call!(db.accounts().delete(self.id(*u))) {
                Ok(()) => Out::Unit,
                Err(e) => Out::Err(e.into()),
            },
            Op::CreateSession {
                token,
                u,
                created,
                expires,
            } => {
                let (token, id) = (ctx.token(token), self.id(*u));
                match call!(db.sessions().create(&token, id, *created, *expires)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(s) => {
                        let digest = Sha256::digest(token.as_bytes());
                        ensure!(
                            s.id.as_bytes()[..] == digest[..16]
                                && s.user_id == id
                                && s.created_at == *created
                                && s.expires_at == *expires,
                            "sessions.create returned {s:?}"
                        );
                        let found = call!(db.sessions().find_by_token(&token));
                        ensure!(found.as_ref().ok() == Some(&s), "find_by_token: {found:?}");
                        Out::Session(self.session(&s).0, self.uid(id), *created, *expires)
                    }
                }
            }
            Op::FindByToken(t) => match call!(db.sessions().find_by_token(&ctx.token(t))) {
                Ok(s) => {
                    let (id, u, c, x) = self.session(&s);
                    Out::Session(id, u, c, x)
                }
                Err(e) => Out::Err(e.into()),
            },
            Op::DeleteSession(t) => match call!(db.sessions().delete(&ctx.token(t))) {
                Ok(()) => Out::Unit,
                Err(e) => Out::Err(e.into()),
            },
            Op::Revoke(u, s) => match SessionId::from_str(&ctx.sid(s)) {
                Err(e) => Out::Err(e.into()),
                Ok(sid) => match call!(db.sessions().revoke(self.id(*u), sid)) {
                    Ok(()) => Out::Unit,
                    Err(e) => Out::Err(e.into()),
                },
            },
            Op::DeleteExpired { now, batch } => {
                match call!(db.sessions().delete_expired(*now, *batch)) {
                    Ok(n) => Out::Count(n),
                    Err(e) => Out::Err(e.into()),
                }
            }
            Op::SaveLoadout { u, slots, at } => {
                let l = loadout_of(self.id(*u), slots, *at);
                match call!(db.loadouts().save(&l)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(()) => {
                        let got = call!(db.loadouts().get(l.user_id));
                        ensure!(got.as_ref().ok() == Some(&l), "loadout read back {got:?}");
                        Out::Unit
                    }
                }
            }
            Op::GetLoadout(u) => match call!(db.loadouts().get(self.id(*u))) {
                Ok(l) => Out::Loadout(self.uid(l.user_id), slots_of(&l), l.updated_at),
                Err(e) => Out::Err(e.into()),
            },
            Op::SetProgression { u, level, xp } => {
                let p = Progression {
                    user_id: self.id(*u),
                    level: *level,
                    xp: *xp,
                };
                match call!(db.progression().set(&p)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(()) => {
                        let got = call!(db.progression().get(p.user_id));
                        ensure!(
                            got.as_ref().ok() == Some(&p),
                            "progression read back {got:?}"
                        );
                        Out::Unit
                    }
                }
            }
            Op::AddXp(u, d) => {
                let id = self.id(*u);
                match call!(db.progression().add_xp(id, *d)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(p) => {
                        let got = call!(db.progression().get(id));
                        ensure!(got.as_ref().ok() == Some(&p), "add_xp read back {got:?}");
                        Out::Prog(self.uid(p.user_id), p.level, p.xp)
                    }
                }
            }
            Op::Grant(u, f, t) => {
                let id = self.id(*u);
                match call!(db.unlocks().grant(id, *f, *t)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(new) => {
                        let has = call!(db.unlocks().has(id, *f));
                        ensure!(matches!(has, Ok(true)), "has after grant: {has:?}");
                        Out::Bool(new)
                    }
                }
            }
            Op::GrantMany(u, flags, t) => {
                let id = self.id(*u);
                match call!(db.unlocks().grant_many(id, flags, *t)) {
                    Err(e) => Out::Err(e.into()),
                    Ok(new) => {
                        let mut asked = flags.clone();
                        asked.sort_unstable();
                        asked.dedup();
                        ensure!(
                            new.windows(2).all(|w| w[0] < w[1])
                                && new.iter().all(|f| asked.binary_search(f).is_ok()),
                            "grant_many returned {new:?} for {flags:?}"
                        );
                        if !asked.is_empty() {
                            let held = call!(db.unlocks().list(id)).map_err(|e| e.to_string())?;
                            for f in &asked {
                                ensure!(
                                    held.iter().any(|u| u.flag_id == *f),
                                    "flag {f} not held after grant_many"
                                );
                            }
                            for f in &new {
                                ensure!(
                                    held.iter().any(|u| u.flag_id == *f && u.unlocked_at == *t),
                                    "new flag {f} not stamped {t}"
                                );
                            }
                        }
                        Out::Flags(new)
                    }
                }
            }
            Op::Has(u, f) => match call!(db.unlocks().has(self.id(*u), *f)) {
                Ok(b) => Out::Bool(b),
                Err(e) => Out::Err(e.into()),
            },
            Op::ListUnlocks(u) => match call!(db.unlocks().list(self.id(*u))) {
                Ok(v) => Out::Unlocks(v),
                Err(e) => Out::Err(e.into()),
            },
            Op::RevokeUnlock(u, f) => match call!(db.unlocks().revoke(self.id(*u), *f)) {
                Ok(()) => Out::Unit,
                Err(e) => Out::Err(e.into()),
            },
        })
    }

    async fn read_back_account(
        &self,
        a: &Account,
        email: &str,
        username: &str,
    ) -> Result<(), String> {
        let db = self.db;
        let got = call!(db.accounts().get(a.user_id));
        ensure!(got.as_ref().ok() == Some(a), "get after create: {got:?}");
        let by_email = call!(db.accounts().find_by_email(email));
        ensure!(
            by_email.as_ref().ok() == Some(a),
            "find_by_email after create: {by_email:?}"
        );
        let by_name = call!(db.accounts().find_by_username(username));
        ensure!(
            by_name.as_ref().ok() == Some(a),
            "find_by_username after create: {by_name:?}"
        );
        Ok(())
    }

    /// Everything a caller can see of the case's users, through the API.
    async fn state(&self, slots: usize) -> Vec<Out> {
        let db = self.db;
        let mut out = Vec::new();
        for i in 0..slots {
            let id = self.id(U::Slot(i));
            out.push(match call!(db.accounts().get(id)) {
                Ok(a) => Out::Account(self.account(&a)),
                Err(e) => Out::Err(e.into()),
            });
            out.push(match call!(db.sessions().list_for_user(id)) {
                Ok(v) => Out::Sessions(v.iter().map(|s| self.session(s)).collect()),
                Err(e) => Out::Err(e.into()),
            });
            out.push(match call!(db.loadouts().get(id)) {
                Ok(l) => Out::Loadout(self.uid(l.user_id), slots_of(&l), l.updated_at),
                Err(e) => Out::Err(e.into()),
            });
            out.push(match call!(db.progression().get(id)) {
                Ok(p) => Out::Prog(self.uid(p.user_id), p.level, p.xp),
                Err(e) => Out::Err(e.into()),
            });
            out.push(match call!(db.unlocks().list(id)) {
                Ok(v) => Out::Unlocks(v),
                Err(e) => Out::Err(e.into()),
            });
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Raw access: wipe, rows, counts
// ---------------------------------------------------------------------------

/// One `accounts` row without its id: email, email_key, username,
/// username_key, pass_hash, created_at, last_login_at.
type AccountRow = (String, String, String, String, Vec<u8>, i64, Option<i64>);

const ACCOUNT_COLUMNS: &str =
    "SELECT email, email_key, username, username_key, pass_hash, created_at, last_login_at \
     FROM accounts";

/// The `accounts` rows, as stored.
impl Raw {
    async fn accounts(&self) -> Vec<AccountRow> {
        let mut rows: Vec<AccountRow> = match self {
            Raw::Sqlite(c) => {
                let mut st = c.prepare(ACCOUNT_COLUMNS).expect("prepare");
                st.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .expect("query")
                .collect::<rusqlite::Result<_>>()
                .expect("rows")
            }
            Raw::Postgres(c) => c
                .query(ACCOUNT_COLUMNS, &[])
                .await
                .expect("query")
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                        r.get(6),
                    )
                })
                .collect(),
        };
        rows.sort();
        rows
    }
}

// ---------------------------------------------------------------------------
// Both backends
// ---------------------------------------------------------------------------

struct Pair {
    rt: tokio::runtime::Runtime,
    lite: common::TestDb,
    pg: common::TestDb,
    raw_lite: Raw,
    raw_pg: Raw,
}

impl Pair {
    fn open() -> Pair {
        count_panics();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (lite, pg, raw_lite, raw_pg) = rt.block_on(async {
            // Input handling does not depend on the durability level; NORMAL
            // keeps thousands of cases fast.
            let (url, dir) = common::sqlite_url();
            let url = format!("{url}?synchronous=normal");
            let lite = common::TestDb {
                db: common::open_migrated(&url).await,
                url,
                place: common::Place::Sqlite(dir),
            };
            // Likewise on PostgreSQL: no WAL flush per commit, set before
            // the pool connects.
            let place = common::PgDatabase::create().await;
            let (admin, conn) = tokio_postgres::connect(&place.url, tokio_postgres::NoTls)
                .await
                .expect("admin connection");
            tokio::spawn(conn);
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE \"{}\" SET synchronous_commit = off",
                    place.name
                ))
                .await
                .expect("synchronous_commit");
            drop(admin);
            let pg = common::TestDb {
                db: common::open_migrated(&place.url).await,
                url: place.url.clone(),
                place: common::Place::Postgres(place),
            };
            let (raw_lite, raw_pg) = (Raw::open(&lite.db).await, Raw::open(&pg.db).await);
            (lite, pg, raw_lite, raw_pg)
        });
        Pair {
            rt,
            lite,
            pg,
            raw_lite,
            raw_pg,
        }
    }

    fn close(self) {
        let Pair {
            rt,
            lite,
            pg,
            raw_lite,
            raw_pg,
        } = self;
        rt.block_on(async {
            drop((raw_lite, raw_pg));
            lite.close().await;
            pg.close().await;
        });
    }

    /// Runs one case on both backends; returns the (equal) outcomes.
    async fn run_case(&self, ops: &[Op]) -> Result<Vec<Out>, String> {
        CASES.fetch_add(1, Ordering::Relaxed);
        tokio::join!(self.raw_lite.wipe(), self.raw_pg.wipe());
        let mut lite = Side {
            db: &self.lite.db,
            ids: Vec::new(),
        };
        let mut pg = Side {
            db: &self.pg.db,
            ids: Vec::new(),
        };
        tokio::join!(lite.fixtures(), pg.fixtures());
        let mut ctx = Ctx::default();
        let mut outs = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            let (a, b) = tokio::join!(lite.apply(op, &ctx), pg.apply(op, &ctx));
            let at = format!("step {step} {op:?}");
            let a = a.map_err(|m| format!("sqlite round trip at {at}: {m}"))?;
            let b = b.map_err(|m| format!("postgres round trip at {at}: {m}"))?;
            if let Some(m) = a.untyped().or(b.untyped()) {
                return Err(format!("untyped error at {at}: {m}"));
            }
            if a != b {
                DIVERGENCES.fetch_add(1, Ordering::Relaxed);
                return Err(format!(
                    "backends diverge at {at}:\n  sqlite:   {a:?}\n  postgres: {b:?}"
                ));
            }
            match expected_invalid(op, &ctx) {
                Err((field, violation)) => {
                    let want = Out::Err(E::Invalid(field, violation));
                    if a != want {
                        return Err(format!("at {at}: expected {want:?}, got {a:?}"));
                    }
                }
                Ok(()) => {
                    // Only add_xp may still refuse a valid input (the result
                    // would leave 0..=i64::MAX).
                    let allowed = matches!(
                        (&a, op),
                        (
                            Out::Err(E::Invalid(
                                "xp_delta",
                                Violation::Overflow | Violation::WouldBeNegative
                            )),
                            Op::AddXp(..)
                        )
                    );
                    if matches!(a, Out::Err(E::Invalid(..))) && !allowed {
                        return Err(format!("at {at}: valid input refused: {a:?}"));
                    }
                }
            }
            let kind = match &a {
                Out::Err(E::Invalid(..)) => 1,
                Out::Err(E::NotFound(_)) => 2,
                Out::Err(E::Conflict(_)) => 3,
                Out::Err(E::UnknownUser) => 4,
                _ => 0,
            };
            OUTCOMES[kind].fetch_add(1, Ordering::Relaxed);
            ctx.observe(op);
            outs.push(a);
        }
        // The end state: through the API, and raw rows.
        let slots = lite.ids.len().max(pg.ids.len());
        let (a, b) = tokio::join!(lite.state(slots), pg.state(slots));
        if a != b {
            DIVERGENCES.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "end states diverge:\n  sqlite:   {a:?}\n  postgres: {b:?}"
            ));
        }
        let (a, b) = tokio::join!(self.raw_lite.accounts(), self.raw_pg.accounts());
        if a != b {
            DIVERGENCES.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "accounts rows diverge:\n  sqlite:   {a:?}\n  postgres: {b:?}"
            ));
        }
        for (email, email_key, username, username_key, ..) in &a {
            if *email_key != canonical_key(email) || *username_key != canonical_key(username) {
                return Err(format!("stored keys are not canonical_key: {email:?}"));
            }
        }
        let (a, b) = tokio::join!(self.raw_lite.counts(), self.raw_pg.counts());
        if a != b {
            DIVERGENCES.fetch_add(1, Ordering::Relaxed);
            return Err(format!("row counts diverge: sqlite {a:?}, postgres {b:?}"));
        }
        Ok(outs)
    }

    /// Runs a deterministic case; panics with the message on failure.
    fn case(&self, ops: &[Op]) -> Vec<Out> {
        self.rt
            .block_on(self.run_case(ops))
            .unwrap_or_else(|m| panic!("{m}\nsequence: {ops:#?}"))
    }
}

// ---------------------------------------------------------------------------
// Deterministic sweeps
// ---------------------------------------------------------------------------

/// Every token length 0..=600 (ASCII), and the multi-byte tokens around the
/// 512-byte cap: create, look up, revoke by public id, delete.
fn token_sweep(pair: &Pair) {
    let mut s = seed();
    let mut tokens: Vec<String> = (0..=600).map(|n| ascii_token(n, &mut s)).collect();
    tokens.extend(boundary_tokens());
    for chunk in tokens.chunks(25) {
        let mut ops = Vec::new();
        for (i, t) in chunk.iter().enumerate() {
            let tok = Tok::Fresh(t.clone());
            ops.push(Op::CreateSession {
                token: tok.clone(),
                u: U::Slot(i % 2),
                created: 10,
                expires: 20,
            });
            ops.push(Op::FindByToken(tok.clone()));
            match i % 3 {
                0 => ops.push(Op::Revoke(U::Slot(i % 2), Sid::Of(tok.clone(), i % 2 == 0))),
                1 => ops.push(Op::DeleteSession(tok.clone())),
                _ => ops.push(Op::Revoke(U::Slot(1 - i % 2), Sid::Of(tok.clone(), false))),
            }
            ops.push(Op::FindByToken(tok));
        }
        pair.case(&ops);
    }
}

/// Every numeric edge in every numeric argument.
fn numeric_sweep(pair: &Pair) {
    let mut i64s: Vec<i64> = I64_EDGES.to_vec();
    i64s.extend(TS_EDGES);
    i64s.extend(ID_EDGES);
    i64s.sort_unstable();
    i64s.dedup();
    for (n, &v) in i64s.iter().enumerate() {
        let tok = Tok::Fresh(format!("edge-{n}"));
        pair.case(&[
            Op::Get(U::Raw(v)),
            Op::Delete(U::Raw(v)),
            Op::GetLoadout(U::Raw(v)),
            Op::UpdateLastLogin(U::Slot(0), v),
            Op::UpdateLastLogin(U::Raw(v), 5),
            Op::UpdatePassHash(U::Raw(v), vec![0xff; 3]),
            Op::Create {
                email: Text::Fresh(format!("edge{n}@example.com")),
                username: Text::Fresh(format!("edge{n}")),
                hash: vec![0x00, 0xff],
                at: v,
            },
            Op::CreateSession {
                token: tok.clone(),
                u: U::Slot(0),
                created: v,
                expires: v,
            },
            Op::CreateSession {
                token: tok.clone(),
                u: U::Slot(1),
                created: 0,
                expires: v,
            },
            Op::CreateSession {
                token: Tok::Fresh(format!("edge-raw-{n}")),
                u: U::Raw(v),
                created: 0,
                expires: 1,
            },
            Op::Revoke(U::Raw(v), Sid::Of(tok.clone(), false)),
            Op::DeleteExpired { now: v, batch: 1 },
            Op::DeleteExpired {
                now: 2_500,
                batch: v,
            },
            Op::SetProgression {
                u: U::Slot(1),
                level: 0,
                xp: v,
            },
            Op::AddXp(U::Slot(1), v),
            Op::AddXp(U::Slot(0), v),
            Op::AddXp(U::Raw(v), 1),
            Op::Grant(U::Slot(0), 3, v),
            Op::Grant(U::Raw(v), 3, 5),
            Op::GrantMany(U::Slot(1), vec![4, 5, 4], v),
            Op::GrantMany(U::Raw(v), vec![], 5),
            Op::Has(U::Raw(v), 1),
            Op::ListUnlocks(U::Raw(v)),
            Op::RevokeUnlock(U::Raw(v), 1),
            Op::SaveLoadout {
                u: U::Slot(1),
                slots: [7; 15],
                at: v,
            },
            Op::SaveLoadout {
                u: U::Raw(v),
                slots: [0; 15],
                at: 5,
            },
        ]);
    }
    // xp at the top of its range, then every way out of it.
    pair.case(&[
        Op::SetProgression {
            u: U::Slot(0),
            level: i32::MAX,
            xp: i64::MAX - 5,
        },
        Op::AddXp(U::Slot(0), 5),
        Op::AddXp(U::Slot(0), 1),
        Op::AddXp(U::Slot(0), i64::MAX),
        Op::AddXp(U::Slot(0), i64::MIN),
        Op::AddXp(U::Slot(0), -i64::MAX),
        Op::AddXp(U::Slot(0), -1),
        Op::AddXp(U::Slot(0), 0),
        Op::AddXp(U::Slot(0), i64::MAX),
        Op::AddXp(U::Slot(0), 1),
    ]);
    for &f in I32_EDGES {
        let mut ops = vec![
            Op::Grant(U::Slot(0), f, 7),
            Op::Has(U::Slot(0), f),
            Op::GrantMany(U::Slot(1), vec![f, 0, f], 7),
            Op::ListUnlocks(U::Slot(1)),
            Op::RevokeUnlock(U::Slot(0), f),
            Op::SetProgression {
                u: U::Slot(1),
                level: f,
                xp: 1,
            },
        ];
        for pos in 0..15 {
            let mut slots = [1; 15];
            slots[pos] = f;
            ops.push(Op::SaveLoadout {
                u: U::Slot(0),
                slots,
                at: 9,
            });
            ops.push(Op::GetLoadout(U::Slot(0)));
        }
        pair.case(&ops);
    }
}

/// Names that must (or must not) collide with a first name, per D-008.
const CONFUSABLE_PAIRS: &[(&str, &str, bool)] = &[
    ("alice", "ALICE", true),
    ("alice", "\u{430}lice", false),  // Cyrillic а
    ("alice", "\u{ff41}lice", true),  // full-width ａ
    ("alice", "\u{1d41a}lice", true), // mathematical bold a
    ("alice", "al\u{200d}ice", true), // joiners are dropped from the key
    ("alice", "alice ", false),
    ("alice", "a\u{200c}lice", true),
    ("strasse", "stra\u{df}e", true),
    ("strasse", "STRA\u{1e9e}E", true),
    ("strasse", "STRASSE", true),
    ("strasse", "stra\u{17f}se", true),    // long s
    ("istanbul", "\u{130}stanbul", false), // dotted capital I folds to i + U+0307
    ("istanbul", "\u{131}stanbul", false), // dotless i
    ("istanbul", "Istanbul", true),
    ("jos\u{e9}", "jose\u{301}", true),
    ("jos\u{e9}", "JOS\u{c9}", true),
    ("jos\u{e9}", "jose", false),
    ("office", "o\u{fb03}ce", true), // ligature ffi
    ("fiona", "\u{fb01}ona", true),
    ("kelvin", "\u{212a}elvin", true), // Kelvin sign
    ("\u{c5}ngstr\u{f6}m", "\u{212b}ngstr\u{f6}m", true), // Ångström sign
    ("\u{b5}-ops", "\u{3bc}-ops", true), // micro sign vs mu
    (
        "\u{3bf}\u{3b4}\u{3bf}\u{3c3}",
        "\u{39f}\u{394}\u{39f}\u{3a3}",
        true,
    ), // final sigma
    ("player1", "player\u{2460}", true), // circled digit one
    ("player1", "player\u{ff11}", true),
    ("\u{1c6}emal", "\u{1c4}EMAL", true),
    ("\u{1c6}emal", "d\u{17e}emal", true),
    ("ab", "a\u{301}b", false),
];

fn confusable_sweep(pair: &Pair) {
    for (i, (first, second, collide)) in CONFUSABLE_PAIRS.iter().enumerate() {
        assert_eq!(
            canonical_key(first) == canonical_key(second),
            *collide,
            "D-008 key of {first:?} vs {second:?}"
        );
        let outs = pair.case(&[
            Op::Create {
                email: Text::Fresh(format!("{first}@example.com")),
                username: Text::Fresh((*first).into()),
                hash: vec![1],
                at: 0,
            },
            Op::Create {
                email: Text::Fresh(format!("other{i}@example.com")),
                username: Text::Fresh((*second).into()),
                hash: vec![2],
                at: 0,
            },
            Op::FindByUsername(Text::Fresh((*second).into())),
            Op::Create {
                email: Text::Fresh(format!("{second}@example.com")),
                username: Text::Fresh(format!("third{i}")),
                hash: vec![3],
                at: 0,
            },
            Op::FindByEmail(Text::Fresh(format!("{second}@EXAMPLE.COM"))),
        ]);
        let found = |o: &Out| match o {
            Out::Account(a) => Some(a.user),
            _ => None,
        };
        if *collide {
            assert_eq!(outs[1], Out::Err(E::Conflict(UniqueKey::Username)), "{i}");
            assert_eq!(found(&outs[2]), Some(Uid::Slot(2)), "{i}");
            assert_eq!(outs[3], Out::Err(E::Conflict(UniqueKey::Email)), "{i}");
            assert_eq!(found(&outs[4]), Some(Uid::Slot(2)), "{i}");
        } else {
            assert_eq!(found(&outs[1]), Some(Uid::Slot(3)), "{i}");
            assert_eq!(found(&outs[2]), Some(Uid::Slot(3)), "{i}");
            assert_eq!(found(&outs[3]), Some(Uid::Slot(4)), "{i}");
            assert_eq!(found(&outs[4]), Some(Uid::Slot(4)), "{i}");
        }
    }
    // The longest keys: every cap filled with the characters of largest
    // expansion, on both backends (PostgreSQL indexes keys up to ~2.7 kB).
    let mut s = seed();
    for k in [2usize, 8, EXPANDERS.len()] {
        let email: String = (0..EMAIL_MAX)
            .map(|_| EXPANDERS[(splitmix(&mut s) % k as u64) as usize])
            .collect();
        let name: String = (0..USERNAME_MAX)
            .map(|_| EXPANDERS[(splitmix(&mut s) % k as u64) as usize])
            .collect();
        let outs = pair.case(&[
            Op::Create {
                email: Text::Fresh(email.clone()),
                username: Text::Fresh(name.clone()),
                hash: vec![0xff; HASH_MAX],
                at: TS_MAX,
            },
            Op::FindByEmail(Text::Variant(Ref::LastEmail, Transform::Nfkc)),
            Op::FindByUsername(Text::Variant(Ref::LastUsername, Transform::Upper)),
        ]);
        assert!(matches!(outs[0], Out::Account(_)), "{outs:?}");
        assert_eq!(outs[1], outs[0], "found by the NFKC form of the email");
        assert_eq!(outs[2], outs[0], "found by the upper-case username");
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// The promise: random operation sequences, then the sweeps, on both
/// backends; one figures line.
#[test]
fn hostile_input_same_outcome_on_both_backends() {
    let started = std::time::Instant::now();
    let pair = Pair::open();
    let cases = scaled(1_000);
    let mut runner = TestRunner::new(prop_config(cases, 7));
    let strategy = prop::collection::vec(op(), 1..=6);
    let result = runner.run(&strategy, |ops| {
        pair.rt
            .block_on(pair.run_case(&ops))
            .map(drop)
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        pair.close();
        panic!("hostile input: {e}");
    }
    let random_cases = CASES.load(Ordering::Relaxed);
    token_sweep(&pair);
    numeric_sweep(&pair);
    confusable_sweep(&pair);
    pair.close();
    let (cases, ops) = (
        CASES.load(Ordering::Relaxed),
        OPERATIONS.load(Ordering::Relaxed),
    );
    let (divergences, panics) = (
        DIVERGENCES.load(Ordering::Relaxed),
        PANICS.load(Ordering::Relaxed),
    );
    eprintln!(
        "reliability input cases={cases} operations={ops} divergences={divergences} panics={panics}"
    );
    let outcomes: Vec<String> = OUTCOME_NAMES
        .iter()
        .zip(&OUTCOMES)
        .map(|(n, c)| format!("{n}={}", c.load(Ordering::Relaxed)))
        .collect();
    eprintln!(
        "reliability input detail: random_cases={random_cases} sweep_cases={} outcomes: {} seed={:#x} long={} elapsed_s={:.1}",
        cases - random_cases,
        outcomes.join(" "),
        seed(),
        long_run(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!((divergences, panics), (0, 0));
}

/// Canonical keys: idempotent, blind to ASCII case and to the Unicode
/// normalisation form of the input, NFC-composed.
#[test]
fn canonical_key_properties() {
    count_panics();
    let mut runner = TestRunner::new(prop_config(scaled(2_000), 11));
    let n = AtomicU64::new(0);
    // Up to 300 characters: the key is computed five times per case, and
    // longer strings add nothing the per-character functions do not see.
    let strategy = prop_oneof![
        6 => prop::collection::vec(hostile_char(), 0..40).prop_map(|v| v.into_iter().collect()),
        1 => (prop::sample::select(&NEAR_CAPS[..10]), prop::collection::vec(hostile_char(), 1..5))
            .prop_map(|(len, unit)| cycled(&unit, len)),
    ];
    runner
        .run(&strategy, |s: String| {
            n.fetch_add(1, Ordering::Relaxed);
            let k = canonical_key(&s);
            prop_assert_eq!(canonical_key(&k), k.clone(), "idempotent");
            prop_assert!(is_nfc(&k), "NFC");
            prop_assert_eq!(
                canonical_key(&s.to_ascii_uppercase()),
                canonical_key(&s.to_ascii_lowercase()),
                "ASCII case"
            );
            for form in [
                s.nfc().collect::<String>(),
                s.nfd().collect(),
                s.nfkc().collect(),
                s.nfkd().collect(),
            ] {
                prop_assert_eq!(canonical_key(&form), k.clone(), "normalisation form");
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("canonical_key: {e}"));
    eprintln!(
        "reliability input canonical_key cases={} panics={}",
        n.load(Ordering::Relaxed),
        PANICS.load(Ordering::Relaxed)
    );
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

/// `SessionId::from_str` accepts exactly 32 hex digits (either case) and
/// shows them lower-case; anything else is `InvalidInput(session_id,
/// Malformed)`.
#[test]
fn session_id_parsing() {
    count_panics();
    let mut runner = TestRunner::new(prop_config(scaled(3_000), 13));
    let strategy = prop_oneof![
        "[0-9a-fA-F]{0,40}".boxed(),
        "[0-9a-fA-F]{32}".boxed(),
        hostile_string(),
    ];
    runner
        .run(&strategy, |s| {
            let is_id = rule_session_id(&s).is_ok();
            match SessionId::from_str(&s) {
                Ok(id) => {
                    prop_assert!(is_id, "{:?} parsed", s);
                    prop_assert_eq!(id.to_string(), s.to_ascii_lowercase());
                    prop_assert_eq!(SessionId::from_str(&id.to_string()).ok(), Some(id));
                }
                Err(Error::InvalidInput {
                    field: "session_id",
                    violation: Violation::Malformed(_),
                }) => prop_assert!(!is_id, "{:?} refused", s),
                Err(e) => prop_assert!(false, "{:?}: {:?}", s, e),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("SessionId: {e}"));
}

// ---------------------------------------------------------------------------
// The fuzz targets on stable Rust: a seeded mutation loop
// ---------------------------------------------------------------------------

struct Mutator {
    state: u64,
}

impl Mutator {
    fn next(&mut self) -> u64 {
        splitmix(&mut self.state)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// One to four libFuzzer-style mutations of `input`.
    fn mutate(&mut self, input: &[u8], corpus: &[Vec<u8>], dict: &[&[u8]]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = v.len();
            match self.below(9) {
                0 if len > 0 => {
                    let i = self.below(len);
                    v[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    v[i] = [0x00, 0xff, 0x7f, 0x80, b'%', b'@', b':', b'/'][self.below(8)];
                }
                2 => {
                    let b = self.next() as u8;
                    v.insert(self.below(len + 1), b);
                }
                3 => {
                    let at = self.below(len + 1);
                    let token = dict[self.below(dict.len())];
                    v.splice(at..at, token.iter().copied());
                }
                4 if len > 0 => {
                    let a = self.below(len);
                    let b = (a + 1 + self.below(8)).min(len);
                    v.drain(a..b);
                }
                5 if len > 0 => {
                    let a = self.below(len);
                    let b = (a + 1 + self.below(16)).min(len);
                    let piece = v[a..b].to_vec();
                    let at = self.below(len + 1);
                    v.splice(at..at, piece);
                }
                6 => {
                    let other = &corpus[self.below(corpus.len())];
                    let cut = self.below(other.len() + 1);
                    let at = self.below(len + 1);
                    v.truncate(at);
                    v.extend_from_slice(&other[cut..]);
                }
                7 if len > 0 => v.truncate(self.below(len)),
                _ => {
                    let n = self.below(8);
                    let extra = self.bytes(n);
                    v.extend(extra);
                }
            }
        }
        v.truncate(4096);
        v
    }
}

/// Feeds `execs` inputs (mutations of the corpus, one in 16 random bytes) to
/// a fuzz target; a failing input is printed before the panic goes on.
fn fuzz_smoke(name: &str, target: fn(&[u8]), seeds: Vec<Vec<u8>>, dict: &[&[u8]], execs: u32) {
    count_panics();
    let seed = seed() ^ u64::from(Sha256::digest(name.as_bytes())[0]);
    let mut m = Mutator { state: seed };
    let mut corpus = seeds;
    for s in corpus.clone() {
        run_target(name, target, &s);
    }
    for i in 0..execs {
        let input = if i % 16 == 0 {
            let n = m.below(256);
            m.bytes(n)
        } else {
            let base = corpus[m.below(corpus.len())].clone();
            m.mutate(&base, &corpus, dict)
        };
        run_target(name, target, &input);
        if m.below(8) == 0 && corpus.len() < 4096 {
            corpus.push(input);
        }
    }
    eprintln!(
        "reliability fuzz-smoke target={name} execs={} seed={seed:#x} panics={}",
        execs,
        PANICS.load(Ordering::Relaxed)
    );
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

fn run_target(name: &str, target: fn(&[u8]), input: &[u8]) {
    if let Err(p) = std::panic::catch_unwind(|| target(input)) {
        eprintln!("fuzz-smoke {name}: failing input {input:?}");
        std::panic::resume_unwind(p);
    }
}

const URL_DICT: &[&[u8]] = &[
    b"postgres://",
    b"postgresql://",
    b"sqlite://",
    b"sqlite::memory:",
    b"@",
    b":",
    b"//",
    b"/",
    b"?",
    b"&",
    b"=",
    b"password=",
    b"Password=",
    b"pass%77ord",
    b"?sslmode=",
    b"require",
    b"%40",
    b"%2F",
    b"%",
    b"[::1]",
    b",",
    b"'",
    b" ",
    b"host=",
    b"\xee\x80\x80",
    b"\xff",
    b"\0",
];

#[test]
fn fuzz_smoke_config_url() {
    let mut seeds: Vec<Vec<u8>> = [
        "postgres://alice:hunter2@db.example:6543/game?sslmode=require",
        "postgresql://u@%2Fvar%2Frun%2Fpostgresql/test",
        "postgres://u@h/db?password=hunter2&sslmode=disable",
        "postgres://u:p@ss@h/db",
        "postgres:host=h password='a b' user=u",
        "host=h password=se:cret dbname=x",
        "postgres:/u:pw@h/db",
        "sqlite://data/game.db?synchronous=normal",
        "sqlite:///abs/x.db",
        "sqlite::memory:",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let mut m = Mutator { state: seed() };
    seeds.extend((0..64).map(|_| m.bytes(48)));
    fuzz_smoke(
        "config_url",
        fuzz_targets::config_url,
        seeds,
        URL_DICT,
        scaled(100_000),
    );
}

/// A length-prefixed field in the format `fuzz_targets::Input::bytes` reads.
fn field(out: &mut Vec<u8>, b: &[u8]) {
    match u8::try_from(b.len()) {
        Ok(n) if n < 255 => out.push(n),
        _ => {
            out.push(255);
            out.extend_from_slice(&(b.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        }
    }
    out.extend_from_slice(b);
}

#[test]
fn fuzz_smoke_input_validation() {
    let mut seeds = Vec::new();
    for (email, username, hash, ts, lookup) in [
        ("ada@example.com", "Ada", &b"$argon2id$x"[..], 5u8, "ADA"),
        ("a\0b@x", "b\nc", &b""[..], 0, ""),
        (
            "stra\u{df}e@x.de",
            "STRASSE",
            &[0xff; 512][..],
            4,
            "strasse",
        ),
        (
            "\u{fdfa}",
            "\u{130}",
            &[0x00; 513][..],
            1,
            "0123456789abcdef0123456789ABCDEF",
        ),
    ] {
        let mut s = Vec::new();
        field(&mut s, email.as_bytes());
        field(&mut s, username.as_bytes());
        field(&mut s, hash);
        s.push(ts);
        field(&mut s, lookup.as_bytes());
        seeds.push(s);
    }
    let long = "x".repeat(9000);
    let mut s = Vec::new();
    field(&mut s, long.as_bytes());
    field(&mut s, long.as_bytes());
    seeds.push(s);
    fuzz_smoke(
        "input_validation",
        fuzz_targets::input_validation,
        seeds,
        &[
            b"\0",
            b"\xff",
            b"\xc3\x9f",
            b"\xe1\xba\x9e",
            b"\xef\xb7\xba",
            b"\x20",
            b"@",
        ],
        scaled(3_000),
    );
}
