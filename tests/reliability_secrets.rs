//! Issue 5, promise 8: secrets stay secret, beyond the logs (which
//! `tests/logging.rs` captures at their most verbose on both backends and
//! through the binary).
//!
//! - The sessions table holds no bearer token: after a full
//!   register/login/logout run, the raw storage is searched byte for byte:
//!   SQLite's database file, `-wal` and `-shm` (while open and after close),
//!   PostgreSQL's heap and index files of `sessions` (after a `CHECKPOINT`)
//!   and the WAL segments written during the run. No token is anywhere; the
//!   SHA-256 digest of the live session's token is (so the search does see
//!   session rows). Every row and column of every table, read through SQL,
//!   holds no token either, and `sessions` holds exactly the expected digest.
//! - `Debug` hides secrets: `Config` (every PostgreSQL URL form: userinfo,
//!   `sslpassword` (a client key's passphrase),
//!   `?password=`, percent-encoded, Unix socket, several hosts, IPv6), `Db`,
//!   `NewAccount`, `Account`, `Session`; `CopyOptions` holds nothing secret
//!   (its exact `Debug` is pinned).
//! - `Error` values never carry a secret: `Error::Config` from bad URLs with
//!   a password in any place (Display and Debug, exact messages),
//!   `Error::Unavailable` from a failed connection with a password, and
//!   input errors, which name the field and rule but never the value.

mod common;

use std::path::Path;

use common::raw::TABLES;
use common::Backend;
use persist::{
    Account, BackendKind, Config, CopyOptions, Db, Error, NewAccount, SessionId, UniqueKey, UserId,
};
use sha2::{Digest, Sha256};

const EMAIL: &str = "Secret.Keeper@Example.org";
const USERNAME: &str = "SecretKeeper";
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2VjcmV0c2FsdA$c2VjcmV0aGFzaG9mdGhla2VlcGVy";
/// The bearer tokens of the run (43-character base64url, as the auth layer
/// issues them): logged out, still live, never issued.
const TOKEN_WEB: &str = "Wb7hQ2mB7nLr0tY5wZc1dF4gH6jK9sA2eU7iO0pXq1Y";
const TOKEN_PHONE: &str = "Ph9yQ9wE8rT7yU6iO5pA4sD3fG2hJ1kL0zXcVbNm_-a";
const TOKEN_UNKNOWN: &str = "Uk3zNoSuchSessionAnywhere0123456789abcdefgh";
const TOKENS: [&str; 3] = [TOKEN_WEB, TOKEN_PHONE, TOKEN_UNKNOWN];
/// A database password, in distinctive halves so a split leak is seen too.
const PW_A: &str = "Sx7q";
const PW_B: &str = "Zk9w";
const T0: i64 = 1_800_000_000;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Register (one unit of work), log in twice (web, phone) with lookups and
/// a miss, log the web session out. Returns the user.
async fn register_login_logout(db: &Db) -> UserId {
    let a = common::register(
        db,
        &NewAccount {
            email: EMAIL,
            username: USERNAME,
            pass_hash: HASH.as_bytes(),
            created_at: T0,
        },
    )
    .await
    .unwrap();

    let found = db.accounts().find_by_email(EMAIL).await.unwrap();
    assert_eq!(found.pass_hash, HASH.as_bytes());
    db.accounts()
        .update_last_login(a.user_id, T0 + 10)
        .await
        .unwrap();
    db.sessions()
        .create(TOKEN_WEB, a.user_id, T0 + 10, T0 + 86_410)
        .await
        .unwrap();
    for _ in 0..2 {
        let s = db.sessions().find_by_token(TOKEN_WEB).await.unwrap();
        assert_eq!(s.user_id, a.user_id);
    }
    assert!(db
        .sessions()
        .find_by_token(TOKEN_UNKNOWN)
        .await
        .unwrap_err()
        .is_not_found());

    let found = db
        .accounts()
        .find_by_username("secretkeeper")
        .await
        .unwrap();
    assert_eq!(found.user_id, a.user_id);
    db.sessions()
        .create(TOKEN_PHONE, a.user_id, T0 + 20, T0 + 86_420)
        .await
        .unwrap();
    db.sessions().delete(TOKEN_WEB).await.unwrap();
    assert!(db
        .sessions()
        .find_by_token(TOKEN_WEB)
        .await
        .unwrap_err()
        .is_not_found());
    let live = db.sessions().list_for_user(a.user_id).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id.as_bytes()[..], digest(TOKEN_PHONE)[..16]);
    a.user_id
}

/// No token in any file; the live session's digest in at least one.
fn check_files(files: &[(String, Vec<u8>)], what: &str) {
    for (name, bytes) in files {
        for t in TOKENS {
            assert!(
                !contains(bytes, t.as_bytes()),
                "{what}: token {t} found in {name}"
            );
        }
    }
    assert!(
        files.iter().any(|(_, b)| contains(b, &digest(TOKEN_PHONE))),
        "{what}: the live session's digest is in none of {:?} (the search sees no session row)",
        files.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
}

fn sqlite_files(db_path: &Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let p = format!("{}{suffix}", db_path.display());
            std::fs::read(&p).ok().map(|b| (p, b))
        })
        .collect()
}

/// The SQLite side of [`storage_holds_no_bearer_token`]: every value of
/// every table, then the raw file bytes (main file, WAL, shared memory).
async fn storage_on_sqlite() {
    let t = common::sqlite().await;
    let user = register_login_logout(&t.db).await;
    let path = t.db.config().sqlite_path().unwrap().to_path_buf();

    // SQL: sessions holds exactly the live session's digest; no value of any
    // table holds a token.
    let c = rusqlite::Connection::open(&path).unwrap();
    let rows: Vec<(Vec<u8>, i64, i64, i64)> = c
        .prepare("SELECT token, user_id, created_at, expires_at FROM sessions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        rows,
        vec![(digest(TOKEN_PHONE).to_vec(), user.0, T0 + 20, T0 + 86_420)]
    );
    for table in TABLES {
        let mut st = c.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let n = st.column_count();
        let mut q = st.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            for i in 0..n {
                let v = match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => b,
                    _ => continue,
                };
                for tok in TOKENS {
                    assert!(!contains(v, tok.as_bytes()), "{table}: token {tok}");
                }
            }
        }
    }
    drop(c);

    // Raw bytes, open (rows still in the WAL) and after close.
    let open = sqlite_files(&path);
    assert!(
        open.iter().any(|(n, _)| n.ends_with("-wal")),
        "the WAL is searched"
    );
    check_files(&open, "sqlite, open");
    t.db.close().await;
    check_files(&sqlite_files(&path), "sqlite, closed");
    drop(t);
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw PostgreSQL connection");
    tokio::spawn(conn);
    c
}

/// The PostgreSQL side of [`storage_holds_no_bearer_token`]: every value of
/// every table, then the heap and index files and the WAL written meanwhile.
async fn storage_on_postgres() {
    let t = common::postgres().await;
    let raw = pg_client(&t.url).await;
    let wal_start: String = raw
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    let user = register_login_logout(&t.db).await;

    let rows: Vec<(Vec<u8>, i64, i64, i64)> = raw
        .query(
            "SELECT token, user_id, created_at, expires_at FROM sessions",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        rows,
        vec![(digest(TOKEN_PHONE).to_vec(), user.0, T0 + 20, T0 + 86_420)]
    );
    for table in TABLES {
        // Every value of every row, as the server renders it (bytea as hex).
        let text: Vec<String> = raw
            .query(&format!("SELECT {table}::text FROM {table}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for tok in TOKENS {
            let hex_tok = hex::encode(tok.as_bytes());
            assert!(
                !text.iter().any(|r| r.contains(tok) || r.contains(&hex_tok)),
                "{table}: token {tok}"
            );
        }
    }

    // Raw storage: the heap and index files of `sessions`, flushed, and the
    // WAL segments written since the run began (the deleted web session's
    // row is still in the heap as a dead tuple, and in the WAL).
    raw.batch_execute("CHECKPOINT").await.unwrap();
    let mut files = Vec::new();
    for r in raw
        .query(
            "SELECT c.relname, pg_read_binary_file(pg_relation_filepath(c.oid)) \
             FROM pg_class c \
             WHERE c.oid = 'sessions'::regclass \
                OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'sessions'::regclass)",
            &[],
        )
        .await
        .unwrap()
    {
        files.push((r.get::<_, String>(0), r.get::<_, Vec<u8>>(1)));
    }
    assert_eq!(files.len(), 4, "sessions, its primary key and 2 indexes");
    check_files(&files, "postgres relation files");
    let mut wal = Vec::new();
    for r in raw
        .query(
            "SELECT name, pg_read_binary_file('pg_wal/' || name) FROM pg_ls_waldir() \
             WHERE name >= $1 AND name <= pg_walfile_name(pg_current_wal_lsn()) \
               AND name ~ '^[0-9A-F]{24}$' ORDER BY name",
            &[&wal_start],
        )
        .await
        .unwrap()
    {
        wal.push((r.get::<_, String>(0), r.get::<_, Vec<u8>>(1)));
    }
    assert!(!wal.is_empty(), "WAL segments read");
    check_files(&wal, "postgres WAL");
    assert!(
        wal.iter().any(|(_, b)| contains(b, &digest(TOKEN_WEB))),
        "the logged-out session's insert is in the WAL searched"
    );
    drop(raw);
    t.close().await;
}

// ---- Debug of config-like and input types --------------------------------

/// Every PostgreSQL URL form with the password `Sx7qZk9w` (or its halves
/// around a separator), and its exact redacted form.
const URL_FORMS: &[(&str, &str)] = &[
    (
        "postgres://alice:Sx7qZk9w@db.example:6543/game?sslmode=require",
        "postgres://alice:***@db.example:6543/game?sslmode=require",
    ),
    (
        "postgresql://alice:Sx7qZk9w@db/game",
        "postgres://alice:***@db:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice@db/game?password=Sx7qZk9w",
        "postgres://alice:***@db:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice@db/game?sslmode=disable&password=Sx7qZk9w",
        "postgres://alice:***@db:5432/game?sslmode=disable",
    ),
    (
        "postgres://alice@db/game?pass%77ord=Sx7qZk9w",
        "postgres://alice:***@db:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice:Sx7q%40Zk9w@db/game",
        "postgres://alice:***@db:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice:Sx7q%2FZk9w@%2Fvar%2Frun%2Fpostgresql/game",
        "postgres://alice:***@[/var/run/postgresql]:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice:Sx7q:Zk9w@db/game",
        "postgres://alice:***@db:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice:Sx7q/Zk9w@db/game",
        "postgres://alice:***@db:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice:Sx7q?Zk9w@db/game",
        "postgres://alice:***@db:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice:Sx7qZk9w@h1:5433,h2:5434/game",
        "postgres://alice:***@h1:5433,h2:5434/game?sslmode=prefer",
    ),
    (
        "postgres://alice:Sx7qZk9w@[::1]:5432/game",
        "postgres://alice:***@::1:5432/game?sslmode=prefer",
    ),
    (
        "  postgres://alice:Sx7qZk9w@db/game\n",
        "postgres://alice:***@db:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice:Sx7qZk9w@db/game?application_name=x&options=-c%20statement_timeout%3D5",
        "postgres://alice:***@db:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice@db/game?host=%2Ftmp&password=Sx7qZk9w",
        "postgres://alice:***@db:5432,[/tmp]:5432/game?sslmode=prefer",
    ),
    // The passphrase of an encrypted client key (issue 14), also next to a
    // password.
    (
        "postgres://alice:Sx7qZk9w@db/game?sslcert=c.pem&sslkey=k.pem&sslpassword=Sx7qZk9w",
        "postgres://alice:***@db:5432/game?sslmode=prefer",
    ),
    (
        "postgres://alice@db/game?sslpassword=Sx7q%3AZk9w&sslcert=c.pem&sslkey=k.pem&sslmode=require",
        "postgres://alice@db:5432/game?sslmode=require",
    ),
];

/// Neither half of the password, raw or percent-encoded around the halves.
#[track_caller]
fn assert_no_password(shown: &str, what: &str) {
    for needle in [PW_A, PW_B] {
        assert!(!shown.contains(needle), "{what}: {needle} in {shown:?}");
    }
}

#[test]
fn config_debug_hides_the_password_in_every_url_form() {
    for (url, redacted) in URL_FORMS {
        let c = Config::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(c.backend(), BackendKind::Postgres);
        assert_eq!(c.redacted_url(), *redacted, "{url}");
        let debug = format!("{c:?}");
        assert!(
            debug.starts_with(&format!("Config {{ url: {redacted:?}, pool_size: 8, ")),
            "{debug}"
        );
        assert_no_password(&debug, url);
        // The alternate form too.
        assert_no_password(&format!("{c:#?}"), url);
    }
}

/// Bad URLs with a password anywhere: the exact `Error::Config` message,
/// which never shows it, in `Display` nor in `Debug`.
const BAD_URLS: &[(&str, &str)] = &[
    (
        "postgres://alice:Sx7qZk9w@db:bad/game",
        "malformed PostgreSQL URL postgres://alice:***@db:bad/game: invalid connection string",
    ),
    // A slash short of `://`.
    (
        "postgres:/alice:Sx7qZk9w@db/game",
        "malformed PostgreSQL URL postgres:/alice:***@db/game: invalid connection string",
    ),
    (
        "postgres:alice:Sx7qZk9w@db/game",
        "malformed PostgreSQL URL postgres:alice:***@db/game: invalid connection string",
    ),
    // A libpq key/value string: what precedes its first ':' is no scheme.
    (
        "host=db password=Sx7q:Zk9w dbname=game",
        "database URL has no valid scheme (expected sqlite:// or postgres://): host=db password=***",
    ),
    (
        "postgres://db:bad/game?password=Sx7q Zk9w",
        "malformed PostgreSQL URL postgres://db:bad/game?password=***: invalid connection string",
    ),
    (
        "postgres://db/game?Password=Sx7qZk9w",
        "unsupported PostgreSQL URL parameter (its name is not shown: it may hold a secret) (supported: user, password, dbname, \
         options, application_name, host, hostaddr, port, connect_timeout, tcp_user_timeout, \
         keepalives, keepalives_idle, keepalives_interval, keepalives_retries, \
         target_session_attrs, channel_binding, load_balance_hosts, sslmode, sslrootcert, \
         sslcert, sslkey, sslpassword, pooler, replica)",
    ),
    (
        "postgres://db:bad/game?pass%77ord=Sx7qZk9w",
        "malformed PostgreSQL URL postgres://db:bad/game?pass%77ord=***: invalid connection string",
    ),
    (
        "postgres: host=db password = Sx7qZk9w",
        "malformed PostgreSQL URL postgres: host=db password = ***: invalid connection string",
    ),
    (
        "postgres:host=db password='Sx7q Zk9w' user=u",
        "malformed PostgreSQL URL postgres:host=db password=***: invalid connection string",
    ),
    // A raw '@' in the password: tokio-postgres would take "Zk9w@db" for the
    // host and show it; refused instead.
    (
        "postgres://alice:Sx7q@Zk9w@db/game",
        "PostgreSQL URL has an '@' that does not end the user name and password (percent-encode '@' elsewhere as %40): postgres://alice:***@db/game",
    ),
    (
        "postgres://db/game?password=Sx7q@Zk9w/x",
        "PostgreSQL URL has an '@' that does not end the user name and password (percent-encode '@' elsewhere as %40): postgres://db/game?password=***",
    ),
    (
        "postgres://alice:pw@db/game?password=Sx7q@Zk9w",
        "PostgreSQL URL has an '@' that does not end the user name and password (percent-encode '@' elsewhere as %40): postgres://alice:***",
    ),
    // "?sslmode=" inside a password: the value is not echoed.
    (
        "postgres://alice:Sx7q?sslmode=Zk9w@db/game",
        "unsupported sslmode (supported: disable, allow, prefer, require, verify-ca, verify-full)",
    ),
    (
        "postgres://alice:Sx7qZk9w@db",
        "PostgreSQL URL has no database name (expected postgres://user@host/DATABASE): postgres://alice:***@db",
    ),
    (
        "postgres://alice:Sx7qZk9w@/",
        "PostgreSQL URL has no database name (expected postgres://user@host/DATABASE): postgres://alice:***@/",
    ),
    (
        "postgres://alice:Sx7qZk9w@db/game?sslmode=verify-full",
        "sslmode=verify-full needs root certificates to check the server against: give \
         sslrootcert=FILE (PEM), or sslrootcert=system for the platform's trusted roots, or put \
         them in ~/.postgresql/root.crt",
    ),
    // A file parameter inside the password.
    (
        "postgres://alice:Sx7q?sslkey=Zk9w@db/game",
        "PostgreSQL URL has a '?' before its '@' (percent-encode '?' in a user name or password as %3F): postgres://alice:***@db/game",
    ),
    (
        "postgres://alice:Sx7qZk9w@db/game?connect_timeout=x",
        "malformed PostgreSQL URL postgres://alice:***@db/game?connect_timeout=x: invalid connection string",
    ),
    (
        "postgres://alice@db/game?sslpassword=Sx7q%ZZk9w&sslkey=k.pem",
        "sslpassword is not valid percent-encoded UTF-8",
    ),
    (
        "postgres://alice@db/game?sslpassword=Sx7qZk9w&sslmode=Zk9w",
        "unsupported sslmode (supported: disable, allow, prefer, require, verify-ca, verify-full)",
    ),
    (
        "postgres://alice@db:bad/game?sslkey=k.pem&sslpassword=Sx7qZk9w",
        // No password in the user part: none shown there.
        "malformed PostgreSQL URL postgres://alice@db:bad/game?sslkey=k.pem&sslpassword=***: invalid connection string",
    ),
    (
        "mysql://alice:Sx7qZk9w@db/game",
        "unknown database URL scheme \"mysql\" (expected sqlite or postgres)",
    ),
];

#[test]
fn config_errors_never_show_the_password() {
    for (url, message) in BAD_URLS {
        let e = Config::from_url(url).expect_err(url);
        assert!(matches!(e, Error::Config(_)), "{url}: {e:?}");
        assert_eq!(
            e.to_string(),
            format!("invalid configuration: {message}"),
            "{url}"
        );
        assert_eq!(format!("{e:?}"), format!("Config({message:?})"), "{url}");
        assert_no_password(&e.to_string(), url);
        assert_no_password(&format!("{e:?}"), url);
    }
}

/// `url` with the password `Sx7qZk9w` in its userinfo (trust authentication
/// ignores it).
fn with_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    format!(
        "{scheme}://{user}:{PW_A}{PW_B}@{host}{}",
        &rest[authority_end..]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_debug_hides_the_password() {
    let pg = common::PgDatabase::create().await;
    let config = Config::from_url(&with_password(&pg.url)).unwrap();
    let db = persist::open(&config).await.unwrap();
    let redacted = config.redacted_url();
    assert!(redacted.contains(":***@"), "{redacted}");
    assert_no_password(&redacted, "redacted_url");
    assert_eq!(
        format!("{db:?}"),
        format!("Db {{ url: {redacted:?}, closed: false }}")
    );
    db.close().await;
    assert_eq!(
        format!("{db:?}"),
        format!("Db {{ url: {redacted:?}, closed: true }}")
    );

    let t = common::sqlite().await;
    let path = t.db.config().sqlite_path().unwrap().display().to_string();
    assert_eq!(
        format!("{:?}", t.db),
        format!("Db {{ url: \"sqlite://{path}\", closed: false }}")
    );
    t.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_errors_never_show_the_password() {
    let admin = common::pg_admin_url();
    // A database that does not exist, on the real server.
    let missing = with_password(&common::with_database(&admin, "persist_no_such_db"));
    let e = persist::open(&Config::from_url(&missing).unwrap())
        .await
        .expect_err("no such database");
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("persist_no_such_db"), "{e}");
    assert_no_password(&e.to_string(), "missing database, Display");
    assert_no_password(&format!("{e:?}"), "missing database, Debug");
    // Nothing listening: connection refused.
    let refused = format!("postgres://alice:{PW_A}{PW_B}@127.0.0.1:1/game?sslmode=disable");
    let e = persist::open(
        &Config::from_url(&refused)
            .unwrap()
            .with_connect_timeout(std::time::Duration::from_secs(2)),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_no_password(&e.to_string(), "refused, Display");
    assert_no_password(&format!("{e:?}"), "refused, Debug");
}

#[test]
fn inputs_and_rows_debug_hide_email_and_hash() {
    let new = NewAccount {
        email: EMAIL,
        username: USERNAME,
        pass_hash: HASH.as_bytes(),
        created_at: T0,
    };
    assert_eq!(
        format!("{new:?}"),
        "NewAccount { username: \"SecretKeeper\", email: \"<redacted>\", \
         pass_hash: \"<redacted>\", created_at: 1800000000 }"
    );
    let account = Account {
        user_id: UserId(7),
        email: EMAIL.into(),
        username: USERNAME.into(),
        pass_hash: HASH.as_bytes().to_vec(),
        created_at: T0,
        last_login_at: Some(T0 + 5),
    };
    assert_eq!(
        format!("{account:?}"),
        "Account { user_id: UserId(7), username: \"SecretKeeper\", email: \"<redacted>\", \
         pass_hash: \"<redacted>\", created_at: 1800000000, last_login_at: Some(1800000005) }"
    );
    for shown in [
        format!("{new:?}"),
        format!("{new:#?}"),
        format!("{account:?}"),
        format!("{account:#?}"),
    ] {
        for secret in [
            EMAIL,
            "Secret.Keeper",
            "$argon2id",
            "c2VjcmV0",
            "36, 97, 114",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
    // The public session id is the first half of the token's digest: never
    // the token.
    let id: SessionId = hex::encode(&digest(TOKEN_PHONE)[..16]).parse().unwrap();
    let shown = format!("{id:?}");
    assert_eq!(
        shown,
        format!("SessionId({})", hex::encode(&digest(TOKEN_PHONE)[..16]))
    );
    assert!(!shown.contains(TOKEN_PHONE));
}

#[test]
fn option_types_hold_nothing_secret() {
    assert_eq!(
        format!("{:?}", CopyOptions::default()),
        "CopyOptions { force: false, batch_size: 1000 }"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_errors_name_the_rule_never_the_value() {
    let db = persist::open(&Config::from_url("sqlite::memory:").unwrap())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let secret_email = "Sx7qZk9w.secret@example.org";
    let cases: Vec<(persist::Result<()>, &str, &str)> = vec![
        (
            db.accounts()
                .create(&NewAccount {
                    email: "Sx7qZk9w\n@example.org",
                    username: USERNAME,
                    pass_hash: HASH.as_bytes(),
                    created_at: T0,
                })
                .await
                .map(drop),
            "invalid email: must not contain control characters",
            "InvalidInput { field: \"email\", violation: ControlCharacter }",
        ),
        (
            db.accounts()
                .create(&NewAccount {
                    email: secret_email,
                    username: USERNAME,
                    pass_hash: &[b'x'; 513],
                    created_at: T0,
                })
                .await
                .map(drop),
            "invalid pass_hash: must be at most 512 long",
            "InvalidInput { field: \"pass_hash\", violation: TooLong { max: 512 } }",
        ),
        (
            db.sessions()
                .find_by_token(&format!("{PW_A}{PW_B}").repeat(129))
                .await
                .map(drop),
            "invalid token: must be at most 512 long",
            "InvalidInput { field: \"token\", violation: TooLong { max: 512 } }",
        ),
        (
            db.sessions().find_by_token(TOKEN_UNKNOWN).await.map(drop),
            "session not found",
            "NotFound(Session)",
        ),
        (
            db.accounts()
                .find_by_email(secret_email)
                .await
                .map(drop),
            "account not found",
            "NotFound(Account)",
        ),
        (
            format!("{PW_A}{PW_B}{PW_A}{PW_B}{PW_A}{PW_B}{PW_A}{PW_B}")
                .parse::<SessionId>()
                .map(drop),
            "invalid session_id: malformed: expected 32 hex characters",
            "InvalidInput { field: \"session_id\", violation: Malformed(\"expected 32 hex characters\") }",
        ),
    ];
    for (r, display, debug) in cases {
        let e = r.expect_err(display);
        assert_eq!(e.to_string(), display);
        assert_eq!(format!("{e:?}"), debug);
    }
    // A conflict names the key, not the value.
    let new = NewAccount {
        email: secret_email,
        username: USERNAME,
        pass_hash: HASH.as_bytes(),
        created_at: T0,
    };
    db.accounts().create(&new).await.unwrap();
    let e = db.accounts().create(&new).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(UniqueKey::Email)));
    assert_eq!(e.to_string(), "email is already taken");
    assert_eq!(format!("{e:?}"), "Conflict(Email)");
    db.close().await;
}

/// After register, two logins and a logout, neither the tables nor the raw
/// storage hold any bearer token; the live session is there as its digest.
/// Where raw storage lives is each backend's own.
async fn storage_holds_no_bearer_token(backend: Backend) {
    match backend {
        Backend::Sqlite => storage_on_sqlite().await,
        Backend::Postgres => storage_on_postgres().await,
    }
}

both_backends! {
    backend storage_holds_no_bearer_token,
}
