//! The bodies of the fuzz targets (issue 5, promise 7), as plain functions of
//! the fuzz input.
//!
//! Two runners feed them:
//! - libFuzzer, through `cargo fuzz run <target>` (`fuzz_targets/*.rs`, see
//!   `scripts/fuzz`): coverage-guided, for a bounded time in the long run;
//! - a seeded stable-Rust mutation loop in `tests/reliability_input.rs`
//!   (`fuzz_smoke_*`), which includes this very file with `#[path]`, so the
//!   default test run executes the same checks without nightly or libFuzzer.
//!
//! Every check is an `assert!`: a failed check or any panic inside `persist`
//! is a crash for libFuzzer and a failed test for the smoke loop.

use std::str::FromStr;
use std::sync::OnceLock;

use persist::{canonical_key, Config, Db, Error, NewAccount, SessionId, UserId, Violation};

// ---------------------------------------------------------------------------
// Reading structured values out of the fuzz bytes
// ---------------------------------------------------------------------------

/// A cursor over the fuzz input; reads past the end yield zeros / empty.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// The next byte, 0 at the end.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// Up to `n` next bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A length-prefixed byte string (one length byte; 255 means "a long one":
    /// two more length bytes).
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = match self.byte() {
            255 => usize::from(u16::from_le_bytes([self.byte(), self.byte()])),
            n => usize::from(n),
        };
        self.take(n)
    }

    /// A length-prefixed string (lossy UTF-8).
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// An `i64`, biased towards the edges.
    pub fn i64(&mut self) -> i64 {
        match self.byte() % 8 {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => -1,
            3 => 0,
            4 => 253_402_300_799 + i64::from(self.byte() % 3) - 1,
            _ => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&[self.take(8), &[0u8; 8]].concat()[..8]);
                i64::from_le_bytes(b)
            }
        }
    }

    /// True when the input is used up.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Target 1: URL / configuration parsing
// ---------------------------------------------------------------------------

/// Password characters are drawn from this private-use block, which no other
/// part of a built URL uses, so any of them (or their percent-encoding, or
/// their `Debug` escape) in an output is a leaked password.
const MARK_FIRST: u32 = 0xE000;
const MARK_LAST: u32 = 0xE0FF;

fn marked(s: &str) -> bool {
    if s.chars()
        .any(|c| (MARK_FIRST..=MARK_LAST).contains(&u32::from(c)))
    {
        return true;
    }
    // UTF-8 of U+E000..=U+E0FF is EE 80..83 xx; Debug escapes them as \u{e0xx}.
    let lower = s.to_ascii_lowercase();
    ["%ee%80", "%ee%81", "%ee%82", "%ee%83", "\\u{e0"]
        .iter()
        .any(|m| lower.contains(m))
}

/// Fuzzes [`Config::from_url`]: never panics, only ever fails with
/// [`Error::Config`], and no output (`redacted_url`, `Debug`, the error's
/// `Display` and `Debug`) shows a password.
///
/// The input is used twice: as a whole string (any bytes, lossy UTF-8), and
/// as a recipe for a URL built from parts in one of many forms (userinfo,
/// `?password=`, keyword case and percent-encoding variants, key/value
/// strings, malformed schemes) whose password is made of marker characters,
/// so a leak is detected exactly.
pub fn config_url(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    check_url(&raw, false);
    let (url, checkable) = build_url(&mut Input::new(data));
    check_url(&url, checkable);
}

/// The outcome of one URL, checked; returns whether it parsed.
pub fn check_url(url: &str, password_is_marked: bool) -> bool {
    match Config::from_url(url) {
        Ok(c) => {
            let redacted = c.redacted_url();
            let debug = format!("{c:?}");
            // Exercise the accessors too.
            let _ = (c.backend(), c.sqlite_path(), c.postgres_database());
            let _ = (c.pool_size(), c.durability(), c.ssl_mode());
            if password_is_marked {
                assert!(!marked(&redacted), "password in redacted_url: {redacted:?}");
                assert!(!marked(&debug), "password in Debug: {debug:?}");
            }
            // What the driver reads as the password is never shown.
            if let Ok(pg) = tokio_postgres::Config::from_str(url.trim()) {
                if pg.get_password().is_some_and(|p| !p.is_empty()) {
                    assert!(redacted.contains(":***@"), "{redacted:?}");
                }
            }
            // Debug is the redacted URL plus numbers and enums.
            assert!(debug.contains(&format!("url: {redacted:?}")), "{debug}");
            true
        }
        Err(e) => {
            assert!(matches!(e, Error::Config(_)), "not a Config error: {e:?}");
            if password_is_marked {
                let (shown, debug) = (e.to_string(), format!("{e:?}"));
                assert!(!marked(&shown), "password in error Display: {shown:?}");
                assert!(!marked(&debug), "password in error Debug: {debug:?}");
            }
            false
        }
    }
}

/// A piece of a URL other than the password: drawn from an alphabet of URL
/// syntax and ordinary characters (never a marker character).
fn part(inp: &mut Input<'_>, max: usize) -> String {
    const ALPHABET: &[&str] = &[
        "a", "b", "z", "0", "9", "-", "_", ".", ":", "@", "/", "?", "&", "=", " ", "'", "%", "%2F",
        "%40", "%3D", "[", "]", ",", "#", "\\", "é", "ß", "\u{0}", "\t", "ä", "host", "user", "db",
        "5432", "password", "sslmode", "disable",
    ];
    let n = usize::from(inp.byte()) % (max + 1);
    (0..n)
        .map(|_| ALPHABET[usize::from(inp.byte()) % ALPHABET.len()])
        .collect()
}

/// A password of marker characters (raw or percent-encoded) mixed with URL
/// syntax characters; never empty, always containing a marker.
fn password(inp: &mut Input<'_>) -> String {
    const SYNTAX: &[&str] = &[
        "@", "/", "?", ":", "&", "=", " ", "'", "#", "%", "\\", "%40", "%2F", "%3F", "%25", "x",
        "''", "\\'", "%",
    ];
    let n = 1 + usize::from(inp.byte()) % 12;
    let mut pw = String::new();
    let mut has_mark = false;
    for _ in 0..n {
        let b = inp.byte();
        let mark = char::from_u32(MARK_FIRST + u32::from(inp.byte())).unwrap_or('\u{E000}');
        match b % 4 {
            0 | 1 => {
                pw.push(mark);
                has_mark = true;
            }
            2 => {
                let mut buf = [0u8; 4];
                for byte in mark.encode_utf8(&mut buf).bytes() {
                    pw.push_str(&format!("%{byte:02X}"));
                }
                has_mark = true;
            }
            _ => pw.push_str(SYNTAX[usize::from(inp.byte()) % SYNTAX.len()]),
        }
    }
    if !has_mark {
        pw.push('\u{E0FF}');
    }
    pw
}

/// Builds a URL from the input; returns it and whether the leak checks
/// apply (a PostgreSQL-like scheme, and no part but the password looks like
/// a marker).
pub fn build_url(inp: &mut Input<'_>) -> (String, bool) {
    const SCHEMES: &[&str] = &[
        "postgres",
        "postgresql",
        "POSTGRES",
        "PostgreSQL",
        "sqlite",
        "postgres ",
        "",
    ];
    const HOSTS: &[&str] = &[
        "h",
        "127.0.0.1",
        "[::1]",
        "%2Ftmp",
        "db.example",
        "h1,h2:6000",
        "",
        "[::1",
    ];
    const PORTS: &[&str] = &["", ":5432", ":0", ":99999", ":x", ":"];
    const KEYWORDS: &[&str] = &[
        "password",
        "Password",
        "PASSWORD",
        "pass%77ord",
        "%70assword",
        "%50ASSWORD",
        "password ",
        " password",
        "pass word",
    ];
    const EXTRAS: &[&str] = &[
        "",
        "sslmode=disable",
        "sslmode=prefer",
        "sslmode=require",
        "sslmode=verify-full",
        "sslmode=",
        "application_name=x",
        "options=-c%20a%3Db",
        "host=%2Fvar%2Frun",
        "connect_timeout=5",
        "connect_timeout=x",
        "x=1",
        "synchronous=normal",
        "=",
        "&",
    ];
    let scheme = SCHEMES[usize::from(inp.byte()) % SCHEMES.len()];
    let user = part(inp, 6);
    let host = if inp.byte().is_multiple_of(4) {
        part(inp, 8)
    } else {
        HOSTS[usize::from(inp.byte()) % HOSTS.len()].to_string()
    };
    let port = PORTS[usize::from(inp.byte()) % PORTS.len()];
    let db = part(inp, 6);
    let extra = EXTRAS[usize::from(inp.byte()) % EXTRAS.len()];
    let keyword = KEYWORDS[usize::from(inp.byte()) % KEYWORDS.len()];
    let eq = ["=", " = ", "= ", " =", "=\t", "%3D", "==", ""][usize::from(inp.byte()) % 8];
    let pw = password(inp);
    let quoted = format!("'{}'", pw.replace('\'', "\\'"));
    let slashes = ["//", "/", "", "///"][usize::from(inp.byte()) % 4];
    let form = inp.byte() % 10;
    let url = match form {
        0 => format!("{scheme}://{user}:{pw}@{host}{port}/{db}"),
        1 => format!("{scheme}://{user}@{host}{port}/{db}?{keyword}{eq}{pw}&{extra}"),
        2 => format!("{scheme}://{user}@{host}/{db}?{extra}&{keyword}{eq}{pw}"),
        3 => format!("{scheme}:{slashes}{user}:{pw}@{host}{port}/{db}?{extra}"),
        4 => format!("{scheme}:host={host} {keyword}{eq}{pw} user={user} dbname={db}"),
        5 => format!("{scheme}:host={host} {keyword}{eq}{quoted} user={user}"),
        6 => format!("{scheme}://{user}:{pw}@{host}{port}/{db}?{extra}&{keyword}{eq}{pw}"),
        7 => format!("{scheme}://{host}/{db}?{keyword}{eq}{quoted}&{extra}"),
        // libpq key/value strings without a scheme (a ':' may come anywhere).
        8 => format!("host={host}{port} {keyword}{eq}{pw} user={user}"),
        _ => format!("{keyword}{eq}{quoted} host={host}{port} dbname={db}"),
    };
    let others = format!("{scheme}{user}{host}{port}{db}{extra}{keyword}{eq}");
    // Parts that restructure the URL (start a parameter, end the
    // credentials, quote) could turn the password text into another
    // parameter's value, which is then no password: no leak check then.
    let plain = [&user, &host, &db]
        .iter()
        .all(|p| !p.contains(['?', '&', '=', '@', '\'', ' ', '\t']));
    // A SQLite URL has no password: what looks like one is part of the path.
    // Without `=` after the keyword there is no password to hide.
    let keyword_form = form != 0 && form != 3;
    let separated = !eq.is_empty() && keyword != "pass word";
    (
        url,
        scheme != "sqlite" && plain && !marked(&others) && (separated || !keyword_form),
    )
}

// ---------------------------------------------------------------------------
// Target 2: input validation, through the public API on in-memory SQLite
// ---------------------------------------------------------------------------

/// One in-memory SQLite database per process (validation is crate-private:
/// the public entry points that validate need a `Db`).
fn memory_db() -> &'static (tokio::runtime::Runtime, Db) {
    static DB: OnceLock<(tokio::runtime::Runtime, Db)> = OnceLock::new();
    DB.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let db = rt.block_on(async {
            let db = persist::open(&Config::from_url("sqlite::memory:").expect("memory URL"))
                .await
                .expect("open sqlite::memory:");
            db.migrate().await.expect("migrate sqlite::memory:");
            db
        });
        (rt, db)
    })
}

/// Only the typed errors a caller matches on may come out of a repository
/// call on bad input; a driver or constraint error means validation missed
/// something.
fn assert_typed(what: &str, e: &Error) {
    assert!(
        matches!(
            e,
            Error::InvalidInput { .. } | Error::NotFound(_) | Error::Conflict(_)
        ),
        "{what}: untyped error escaped: {e:?}"
    );
}

/// Fuzzes [`canonical_key`], [`SessionId::from_str`] and the validation of
/// `accounts().create`, `find_by_username`, `find_by_email` and
/// `sessions().find_by_token` (on a per-process in-memory SQLite database):
/// never a panic, only typed errors, exact round trips.
pub fn input_validation(data: &[u8]) {
    let mut inp = Input::new(data);
    let email = inp.text();
    let username = inp.text();
    let hash = inp.bytes().to_vec();
    let at = inp.i64();
    let lookup = inp.text();

    for s in [&email, &username, &lookup] {
        let k = canonical_key(s);
        assert_eq!(
            canonical_key(&k),
            k,
            "canonical_key is not idempotent on {s:?}"
        );
        assert_eq!(
            canonical_key(&s.to_ascii_uppercase()),
            canonical_key(&s.to_ascii_lowercase()),
            "ASCII case changes the key of {s:?}"
        );
        let is_id = s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        match SessionId::from_str(s) {
            Ok(id) => {
                assert!(is_id, "{s:?} parsed as a SessionId");
                assert_eq!(id.to_string(), s.to_ascii_lowercase());
            }
            Err(Error::InvalidInput {
                field: "session_id",
                violation: Violation::Malformed(_),
            }) => assert!(!is_id, "{s:?} did not parse"),
            Err(e) => panic!("SessionId::from_str({s:?}): {e:?}"),
        }
    }

    let (rt, db) = memory_db();
    rt.block_on(async {
        let new = NewAccount {
            email: &email,
            username: &username,
            pass_hash: &hash,
            created_at: at,
        };
        match db.accounts().create(&new).await {
            Ok(a) => {
                assert_eq!(
                    (&*a.email, &*a.username, &*a.pass_hash, a.created_at),
                    (&*email, &*username, &*hash, at)
                );
                assert_eq!(db.accounts().get(a.user_id).await.ok(), Some(a.clone()));
                let by_name = db.accounts().find_by_username(&username).await;
                assert_eq!(by_name.map(|f| f.user_id).ok(), Some(a.user_id));
                let by_email = db.accounts().find_by_email(&email).await;
                assert_eq!(by_email.map(|f| f.user_id).ok(), Some(a.user_id));
                db.accounts().delete(a.user_id).await.expect("delete");
            }
            Err(e) => assert_typed("accounts.create", &e),
        }
        for r in [
            db.accounts().find_by_username(&lookup).await,
            db.accounts().find_by_email(&lookup).await,
            db.accounts().get(UserId(at)).await,
        ] {
            match r {
                Ok(a) => panic!("found an account in an empty table: {a:?}"),
                Err(e) => assert_typed("lookup", &e),
            }
        }
        match db.sessions().find_by_token(&lookup).await {
            Ok(s) => panic!("found a session in an empty table: {s:?}"),
            Err(e) => assert_typed("sessions.find_by_token", &e),
        }
    });
}
