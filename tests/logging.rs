//! Logs at their most verbose carry the per-call spans (operation, backend,
//! duration, outcome) and never a bearer token, a password hash, an email or
//! the database password: through the library on both backends, and through
//! the real binary with `-vv` and `RUST_LOG=trace`.

mod common;

use std::io::Write;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

use common::{Backend, PgDatabase};
use persist::{Db, Loadout, NewAccount, UniqueKey};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

const BIN: &str = env!("CARGO_BIN_EXE_persist");

const EMAIL: &str = "Log.Tester+persist@Example.org";
const NEW_EMAIL: &str = "renamed.tester@example.net";
const USERNAME: &str = "LogTester";
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bG9nc2FsdHNhbHQ$aGFzaG9mdGhlbG9ndGVzdGVyczAx";
const NEW_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdHg$bmV3aGFzaGZvcnRoZWxvZ3Rlc3Rlcg";
const TOKEN_1: &str = "Tk1x4fGhQ2mB7nLr0tY5wZc1dF4gH6jK9sA2eU7iO0p";
const TOKEN_2: &str = "Tk2yQ9wE8rT7yU6iO5pA4sD3fG2hJ1kL0zXcVbNm_-a";
const UNKNOWN_TOKEN: &str = "Tk3zNoSuchSessionAnywhere0123456789abcdefgh";
const PASSWORD: &str = "s3cr3t-pw";
/// `$argon2id` as a Debug-printed byte slice, as a driver would log a
/// `bytea` parameter.
const HASH_BYTES_DEBUG: &str = "36, 97, 114, 103, 111, 110, 50, 105, 100";

/// Every secret of the library flow, as it must never appear (compared
/// case-insensitively).
fn secrets(db_password: Option<&str>) -> Vec<String> {
    let mut s: Vec<String> = [
        EMAIL,
        NEW_EMAIL,
        HASH,
        NEW_HASH,
        TOKEN_1,
        TOKEN_2,
        UNKNOWN_TOKEN,
        // Parts of the hashes (salt, digest) on their own.
        "bG9nc2FsdHNhbHQ",
        "aGFzaG9mdGhlbG9ndGVzdGVyczAx",
        "bmV3c2FsdHg",
        "bmV3aGFzaGZvcnRoZWxvZ3Rlc3Rlcg",
        "$argon2id",
        HASH_BYTES_DEBUG,
        // The emails' local parts and the email canonical keys.
        "log.tester+persist",
        "renamed.tester",
    ]
    .iter()
    .map(|s| s.to_lowercase())
    .collect();
    s.extend(db_password.map(str::to_lowercase));
    s
}

/// The captured log of this test process.
#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// Installs, once per process, the most verbose subscriber a server could
/// run: every `tracing` event and span at TRACE, span lifecycle events
/// included, and the `log` records of the drivers bridged in at TRACE.
///
/// One target is capped: `tokio_postgres::query` logs every statement's
/// bound parameters at DEBUG (emails, hashes), so an application must cap it
/// at INFO, as the `persist` binary does (asserted by the binary tests
/// below). Everything else of the driver stays at TRACE.
fn capture() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let writer = Arc::clone(&buf);
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new("trace,tokio_postgres::query=info"))
                .with_span_events(FmtSpan::FULL)
                .with_ansi(false)
                .with_writer(move || CaptureWriter(Arc::clone(&writer)))
                .try_init()
                .expect("install the test subscriber");
            Capture(buf)
        })
        .clone()
}

/// Register, login by email and by username, lookups (one for an unknown
/// token), loadout, battle, logout, a second device, password change, email
/// change, sweep, deletion: every kind of call, with errors among them.
async fn full_flow(db: &Db) {
    let now = 1_800_000_000;
    let a = common::register(
        db,
        &NewAccount {
            email: EMAIL,
            username: USERNAME,
            pass_hash: HASH.as_bytes(),
            created_at: now,
        },
    )
    .await
    .unwrap();
    let user = a.user_id;
    // Debug of an account hides email and hash, so logging one is safe.
    tracing::info!(account = ?a, "registered");

    let dup = db
        .accounts()
        .create(&NewAccount {
            email: &EMAIL.to_uppercase(),
            username: "Other",
            pass_hash: HASH.as_bytes(),
            created_at: now,
        })
        .await;
    assert!(matches!(
        dup,
        Err(persist::Error::Conflict(UniqueKey::Email))
    ));

    let by_email = db
        .accounts()
        .find_by_email(&EMAIL.to_lowercase())
        .await
        .unwrap();
    let by_name = db.accounts().find_by_username("logtester").await.unwrap();
    assert_eq!(by_email.user_id, by_name.user_id);
    assert_eq!(by_email.pass_hash, HASH.as_bytes());
    db.accounts()
        .update_last_login(user, now + 5)
        .await
        .unwrap();
    db.sessions()
        .create(TOKEN_1, user, now + 5, now + 86_400)
        .await
        .unwrap();
    for _ in 0..3 {
        let s = db.sessions().find_by_token(TOKEN_1).await.unwrap();
        assert_eq!(s.user_id, user);
    }
    assert!(db
        .sessions()
        .find_by_token(UNKNOWN_TOKEN)
        .await
        .unwrap_err()
        .is_not_found());

    let mut loadout = Loadout::empty(user, now + 10);
    loadout.element_id = 2;
    loadout.items = [1, 7, 0, 0];
    db.loadouts().save(&loadout).await.unwrap();
    assert_eq!(db.loadouts().get(user).await.unwrap(), loadout);

    let tx = db.begin().await.unwrap();
    tx.progression().add_xp(user, 120).await.unwrap();
    tx.unlocks()
        .grant_many(user, &[3, 1, 2], now + 20)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!db.unlocks().grant(user, 2, now + 21).await.unwrap());

    db.sessions().delete(TOKEN_1).await.unwrap();
    assert!(db
        .sessions()
        .find_by_token(TOKEN_1)
        .await
        .unwrap_err()
        .is_not_found());

    db.sessions()
        .create(TOKEN_2, user, now + 30, now + 40)
        .await
        .unwrap();
    let tx = db.begin().await.unwrap();
    tx.accounts()
        .update_pass_hash(user, NEW_HASH.as_bytes())
        .await
        .unwrap();
    assert_eq!(tx.sessions().delete_all_for_user(user).await.unwrap(), 1);
    tx.commit().await.unwrap();

    db.accounts().update_email(user, NEW_EMAIL).await.unwrap();
    db.sessions()
        .create(TOKEN_2, user, now + 50, now + 60)
        .await
        .unwrap();
    assert_eq!(db.sessions().delete_expired(now + 60, 10).await.unwrap(), 1);
    db.accounts().delete(user).await.unwrap();
    assert!(db.accounts().get(user).await.unwrap_err().is_not_found());
}

/// The spans of the calls are there; no secret is.
fn check_log(log: &str, backend: &str, db_password: Option<&str>) {
    for op in [
        "accounts.create",
        "accounts.find_by_email",
        "accounts.find_by_username",
        "accounts.update_last_login",
        "accounts.update_pass_hash",
        "accounts.update_email",
        "accounts.delete",
        "sessions.create",
        "sessions.find_by_token",
        "sessions.delete",
        "sessions.delete_all_for_user",
        "sessions.delete_expired",
        "loadouts.save",
        "loadouts.get",
        "progression.set",
        "progression.add_xp",
        "unlocks.grant_many",
        "unlocks.grant",
    ] {
        let span = format!("persist{{op=\"{op}\" backend=\"{backend}\"}}");
        assert!(
            log.lines()
                .any(|l| l.contains(&span) && l.contains(" call elapsed_us=")),
            "no call event in span {span}"
        );
    }
    for outcome in ["ok", "not_found", "conflict"] {
        assert!(
            log.contains(&format!("outcome=\"{outcome}\"")),
            "outcome {outcome}"
        );
    }
    // Span lifecycle (FmtSpan::FULL) is logged too, with the span's fields.
    assert!(log.contains(&format!(
        "persist{{op=\"sessions.find_by_token\" backend=\"{backend}\"}}: persist::repos: close"
    )));
    assert!(log.contains(" registered account=Account {"));

    let lower = log.to_lowercase();
    for secret in secrets(db_password) {
        if let Some(at) = lower.find(&secret) {
            let line = log[..at].lines().count();
            panic!("{secret:?} appears in the log, line {line}");
        }
    }
}

/// The full flow through the library, at the most verbose level: the
/// per-call spans are logged, no secret is (PostgreSQL: with a password in
/// the URL, logged redacted).
async fn library_logs_spans_and_no_secret(backend: Backend) {
    let cap = capture();
    let (url, _place) = backend.empty().await;
    let (url, pw) = match backend {
        Backend::Sqlite => (url, None),
        Backend::Postgres => {
            let (url, pw) = with_password(&url);
            (url, Some(pw))
        }
    };
    let db = common::open_migrated(&url).await;
    full_flow(&db).await;
    db.close().await;
    let log = cap.text();
    assert!(
        log.contains(&format!("opened database url={}://", backend.name())),
        "{log}"
    );
    if pw.is_some() {
        assert!(log.contains(":***@"), "the URL is logged redacted");
    }
    check_log(&log, backend.name(), pw.as_deref());
}

/// `url` with a password in its userinfo (trust authentication ignores it),
/// and that password; a URL that already has one is kept.
fn with_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@').unwrap();
    if let Some((_, pw)) = userinfo.split_once(':') {
        return (url.to_string(), pw.to_string());
    }
    (
        format!(
            "{scheme}://{userinfo}:{PASSWORD}@{host}{}",
            &rest[authority_end..]
        ),
        PASSWORD.to_string(),
    )
}

// ---- The binary --------------------------------------------------------

/// How verbose a binary run is.
#[derive(Debug, Clone, Copy)]
enum Verbosity {
    /// `-vv`.
    Vv,
    /// `RUST_LOG=trace`.
    RustLogTrace,
}

fn persist(url: &str, v: Verbosity, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.env_remove("DATABASE_URL").env_remove("RUST_LOG");
    match v {
        Verbosity::Vv => {
            c.arg("-vv");
        }
        Verbosity::RustLogTrace => {
            c.env("RUST_LOG", "trace");
        }
    }
    c.args(["--database-url", url]).args(args);
    c.output().expect("run persist")
}

/// Stdout and stderr, terminal colour codes removed.
fn text(o: &Output) -> String {
    let raw = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn assert_ok(o: &Output, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn assert_absent(log: &str, needle: &str, what: &str) {
    let lower = log.to_lowercase();
    if let Some(at) = lower.find(&needle.to_lowercase()) {
        let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
        let line = log[start..].lines().next().unwrap_or("");
        let shown: String = line.chars().take(200).collect();
        panic!("{what}: {needle:?} appears in: {shown}");
    }
}

/// The binary never prints the database password, at any verbosity, for
/// migrate, demo, status, sweep-sessions, or a failed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_never_shows_the_database_password() {
    let pg = PgDatabase::create().await;
    let (url, pw) = with_password(&pg.url);
    for v in [Verbosity::Vv, Verbosity::RustLogTrace] {
        let runs: [&[&str]; 4] = [
            &["migrate"],
            &["demo", "--players", "5", "--tasks", "2"],
            &["status", "--json"],
            &["sweep-sessions"],
        ];
        for args in runs {
            let o = persist(&url, v, args);
            assert_ok(&o, &format!("{v:?} {args:?}"));
            let log = text(&o);
            assert_absent(&log, &pw, &format!("{v:?} {args:?}"));
            if args[0] == "demo" {
                assert!(
                    log.contains("persist{op=\"accounts.create\" backend=\"postgres\"}"),
                    "{v:?}: spans are logged"
                );
                assert!(log.contains(" elapsed_us="), "{v:?}");
            }
        }
        // A failed connection (no such database) names the URL redacted.
        let (missing, _) = with_password(&common::with_database(&pg.url, "no_such_db_persist"));
        let o = persist(&missing, v, &["ping"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert_absent(&text(&o), &pw, &format!("{v:?} failed ping"));
    }
}

/// Emails and password hashes of the demo's players never reach the log,
/// whichever driver runs the statements. The demo's tokens are covered by the
/// library tests above: every token goes through the same calls.
fn binary_demo_logs_no_email_or_hash(backend: Backend) {
    let (url, _place) = backend.empty_blocking();
    let (url, backend) = (url.as_str(), backend.name());
    for v in [Verbosity::Vv, Verbosity::RustLogTrace] {
        let o = persist(url, v, &["demo", "--players", "5", "--tasks", "2"]);
        assert_ok(&o, &format!("{v:?} demo"));
        let log = text(&o);
        assert!(
            log.contains(&format!(
                "persist{{op=\"sessions.find_by_token\" backend=\"{backend}\"}}"
            )),
            "{v:?}: spans are logged"
        );
        for needle in ["@demo.invalid", "$argon2id", HASH_BYTES_DEBUG] {
            assert_absent(&log, needle, &format!("{backend} {v:?} demo"));
        }
    }
}

both_backends! {
    backend library_logs_spans_and_no_secret,
    blocking binary_demo_logs_no_email_or_hash,
}
