//! Config, open, ping, close: bad URLs, unreachable and hung servers, unusable
//! SQLite paths, TLS, SQLite pragmas, closed handles, redaction, in-memory.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::PgDatabase;
use persist::{BackendKind, Config, Db, Durability, Error, NewAccount, SslMode, UserId};

fn new_account<'a>(email: &'a str, username: &'a str) -> NewAccount<'a> {
    NewAccount {
        email,
        username,
        pass_hash: b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        created_at: 1_700_000_000,
    }
}

fn config_error(url: &str) -> String {
    match Config::from_url(url) {
        Err(Error::Config(msg)) => msg,
        Err(other) => panic!("{url}: expected Error::Config, got {other:?}"),
        Ok(c) => panic!("{url}: expected Error::Config, got {c:?}"),
    }
}

/// `url` with its `sslmode` set to `mode` (any other parameters kept).
fn with_sslmode(url: &str, mode: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslmode="))
        .collect();
    let mode = format!("sslmode={mode}");
    params.push(&mode);
    format!("{base}?{}", params.join("&"))
}

fn is_unavailable_or_timeout(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Timeout { .. })
}

// ---------------------------------------------------------------------------
// Bad configuration.

#[test]
fn bad_urls_are_config_errors_with_an_actionable_message() {
    let cases = [
        ("mysql://root@localhost/db", "unknown database URL scheme"),
        ("mysql://root@localhost/db", "expected sqlite or postgres"),
        ("just-a-path.db", "no scheme"),
        ("sqlite://", "no path"),
        (
            "sqlite://x.db?journal=delete",
            "unknown SQLite URL parameter",
        ),
        ("sqlite://x.db?synchronous=off", "expected full or normal"),
        ("postgres://postgres@127.0.0.1:5432", "no database name"),
        ("postgres://postgres@127.0.0.1:5432/", "no database name"),
        ("postgresql://postgres@localhost", "no database name"),
        ("postgres://u:pw@h:notaport/db", "malformed PostgreSQL URL"),
        (
            "postgres://u@h/db?sslmode=verify-fool",
            "supported: disable, allow, prefer, require, verify-ca, verify-full",
        ),
        (
            "postgres://u@h/db?fallback_application_name=x",
            "unsupported PostgreSQL URL parameter \"fallback_application_name\"",
        ),
        (
            "postgres://u@h/db?target_session_attrs=standby",
            "unsupported target_session_attrs=\"standby\"",
        ),
        (
            "postgres://u@h/db?pooler=statement",
            "unsupported pooler=\"statement\"",
        ),
    ];
    for (url, expected) in cases {
        let msg = config_error(url);
        assert!(msg.contains(expected), "{url}: {msg:?} lacks {expected:?}");
        assert!(!msg.contains("pw@"), "{msg}");
    }
    // The same through FromStr, and the Display a person reads.
    let err = "mysql://root@localhost/db".parse::<Config>().unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    assert!(
        err.to_string()
            .starts_with("invalid configuration: unknown database URL scheme"),
        "{err}"
    );
}

/// libpq's forms: `postgres:///db` is the local socket in the default
/// directory as the operating-system user; `postgres://host/db` the OS user
/// on that host. A URL without a password never shows one.
#[test]
fn libpq_url_forms() {
    let c = Config::from_url("postgres:///gamedb").unwrap();
    let shown = c.redacted_url();
    assert!(
        shown.starts_with("postgres://") && shown.contains("@[/var/run/postgresql]:5432/gamedb"),
        "{shown}"
    );
    assert!(!shown.contains("***"), "{shown}");
    let user = shown
        .strip_prefix("postgres://")
        .and_then(|s| s.split('@').next())
        .unwrap();
    assert!(!user.is_empty(), "the OS user is the user: {shown}");
    let c = Config::from_url("postgres://dbhost/gamedb").unwrap();
    assert!(
        c.redacted_url()
            .contains(&format!("{user}@dbhost:5432/gamedb")),
        "{}",
        c.redacted_url()
    );
    let msg = config_error("postgres://u@h:notaport/db");
    assert!(!msg.contains("***"), "no password to hide: {msg}");
}

#[test]
fn accepted_url_forms_select_the_backend() {
    let c = Config::from_url("postgresql://u@h/db").unwrap();
    assert_eq!(c.backend(), BackendKind::Postgres);
    assert_eq!(c.postgres_database(), Some("db"));
    assert_eq!(c.ssl_mode(), SslMode::Prefer);
    let c = Config::from_url("sqlite:///abs/dir/x.db").unwrap();
    assert_eq!(c.sqlite_path(), Some(Path::new("/abs/dir/x.db")));
    let c = Config::from_url("sqlite://rel/x.db").unwrap();
    assert_eq!(c.sqlite_path(), Some(Path::new("rel/x.db")));
    assert_eq!(c.durability(), Durability::Full);
    for memory in ["sqlite::memory:", "sqlite://:memory:"] {
        let c = Config::from_url(memory).unwrap();
        assert_eq!((c.backend(), c.sqlite_path()), (BackendKind::Sqlite, None));
    }
    assert_eq!(persist::DEFAULT_DATABASE_URL, "sqlite://persist.db");
}

// ---------------------------------------------------------------------------
// Unreachable and hung PostgreSQL servers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_postgres_connection_is_unavailable_within_the_timeout() {
    let connect_timeout = Duration::from_millis(500);
    let config = Config::from_url("postgres://postgres:sekret@127.0.0.1:1/x")
        .unwrap()
        .with_connect_timeout(connect_timeout);
    let start = Instant::now();
    let err = persist::open(&config).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        elapsed < connect_timeout + Duration::from_secs(5),
        "took {elapsed:?}"
    );
    let msg = err.to_string();
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    assert!(!msg.contains("sekret") && !format!("{err:?}").contains("sekret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_postgres_server_gives_a_typed_error_within_the_timeout() {
    // A local server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let connect_timeout = Duration::from_millis(500);
    for mode in ["prefer", "disable", "require"] {
        let url = format!("postgres://postgres@127.0.0.1:{port}/x?sslmode={mode}");
        let config = Config::from_url(&url)
            .unwrap()
            .with_connect_timeout(connect_timeout);
        let start = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(30), persist::open(&config))
            .await
            .unwrap_or_else(|_| panic!("sslmode={mode}: open hung for 30 s"));
        let elapsed = start.elapsed();
        let err = result.unwrap_err();
        assert!(is_unavailable_or_timeout(&err), "sslmode={mode}: {err:?}");
        assert!(
            elapsed < connect_timeout + Duration::from_secs(5),
            "sslmode={mode}: took {elapsed:?}"
        );
    }
    server.abort();
}

// ---------------------------------------------------------------------------
// Unusable SQLite paths.

fn assert_sqlite_unavailable(err: Error, path_shown: &str) {
    match &err {
        Error::Unavailable { message, .. } => {
            assert!(
                message.contains(path_shown),
                "{message:?} lacks {path_shown:?}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_sqlite_paths_are_unavailable() {
    assert!(!Path::new("/nonexistent-dir").exists());
    let err = persist::open(&Config::from_url("sqlite:///nonexistent-dir/x.db").unwrap())
        .await
        .unwrap_err();
    assert_sqlite_unavailable(err, "/nonexistent-dir/x.db");
    assert!(!Path::new("/nonexistent-dir").exists());

    let dir = tempfile::tempdir().unwrap();
    // A path whose parent is a regular file.
    let file = dir.path().join("regular-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let below = file.join("x.db");
    let err = persist::open(&Config::from_url(&format!("sqlite://{}", below.display())).unwrap())
        .await
        .unwrap_err();
    assert_sqlite_unavailable(err, &below.display().to_string());

    // A directory where the file should be.
    let err =
        persist::open(&Config::from_url(&format!("sqlite://{}", dir.path().display())).unwrap())
            .await
            .unwrap_err();
    assert_sqlite_unavailable(err, &dir.path().display().to_string());

    // An existing file that is not a SQLite database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let err = persist::open(&Config::from_url(&format!("sqlite://{}", junk.display())).unwrap())
        .await
        .unwrap_err();
    assert_sqlite_unavailable(err, &junk.display().to_string());
    assert_eq!(
        std::fs::read(&junk).unwrap(),
        vec![0x5a; 4096],
        "junk file changed"
    );

    // A read-only directory. Root ignores permission bits, so this case can only
    // be shown when the directory really refuses writes.
    use std::os::unix::fs::PermissionsExt;
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let writes_refused = std::fs::write(ro.join("probe"), b"x").is_err();
    if writes_refused {
        let target = ro.join("x.db");
        let err =
            persist::open(&Config::from_url(&format!("sqlite://{}", target.display())).unwrap())
                .await
                .unwrap_err();
        assert_sqlite_unavailable(err, &target.display().to_string());
    } else {
        eprintln!("note: running as root, a read-only directory cannot be simulated here");
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---------------------------------------------------------------------------
// TLS.

/// The `ssl` flag of every backend of `persist` connected to `datname`.
async fn persist_sessions_ssl(admin: &tokio_postgres::Client, datname: &str) -> Vec<bool> {
    admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.datname = $1 AND a.application_name = 'persist'",
            &[&datname],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn open_with_sslmode(mode: &str, expected: SslMode, encrypted: bool) {
    let pg = PgDatabase::create().await;
    let config = Config::from_url(&with_sslmode(&pg.url, mode)).unwrap();
    assert_eq!(config.ssl_mode(), expected);
    let db = persist::open(&config)
        .await
        .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
    db.ping().await.unwrap();
    // The pool keeps its connection open: look at it from the server's side.
    let ssl = persist_sessions_ssl(&common::admin_client().await, &pg.name).await;
    assert!(!ssl.is_empty(), "sslmode={mode}: no persist session found");
    assert!(
        ssl.iter().all(|s| *s == encrypted),
        "sslmode={mode}: ssl flags {ssl:?}, expected all {encrypted}"
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_connects_encrypted() {
    open_with_sslmode("require", SslMode::Require, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_prefer_uses_tls_when_the_server_offers_it() {
    open_with_sslmode("prefer", SslMode::Prefer, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_disable_connects_unencrypted() {
    open_with_sslmode("disable", SslMode::Disable, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_scheme_connects() {
    let pg = PgDatabase::create().await;
    let url = pg.url.replacen("postgres://", "postgresql://", 1);
    assert!(url.starts_with("postgresql://"), "{url}");
    let db = persist::open(&Config::from_url(&url).unwrap())
        .await
        .unwrap();
    assert_eq!(db.backend(), BackendKind::Postgres);
    db.ping().await.unwrap();
    db.close().await;
}

// ---------------------------------------------------------------------------
// SQLite settings.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pragmas_are_applied() {
    let (url, _dir) = common::sqlite_url();
    let config = Config::from_url(&url).unwrap();
    assert_eq!(config.durability(), Durability::Full, "default durability");
    let db = persist::open(&config).await.unwrap();
    assert_eq!(db.config().durability(), Durability::Full);
    db.migrate().await.unwrap();

    // WAL is a property of the file: visible from any connection.
    let raw = rusqlite::Connection::open(config.sqlite_path().unwrap()).unwrap();
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");

    // foreign_keys is per connection: show it is on in the handle's own
    // connections by its effects.
    let user = db
        .accounts()
        .create(&new_account("fk@example.com", "fk"))
        .await
        .unwrap();
    db.sessions()
        .create("fk-bearer-token-0000001", user.user_id, 1, 2)
        .await
        .unwrap();
    let err = db
        .sessions()
        .create(
            "fk-orphan-bearer-token-1",
            UserId(user.user_id.0 + 100),
            1,
            2,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownUser), "{err:?}");
    db.accounts().delete(user.user_id).await.unwrap();
    let err = db
        .sessions()
        .find_by_token("fk-bearer-token-0000001")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound(persist::Entity::Session)),
        "{err:?}"
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_normal_durability_is_available() {
    let (url, _dir) = common::sqlite_url();
    let config = Config::from_url(&url)
        .unwrap()
        .with_durability(Durability::Normal);
    assert_eq!(config.durability(), Durability::Normal);
    let db = persist::open(&config).await.unwrap();
    db.migrate().await.unwrap();
    let a = db
        .accounts()
        .create(&new_account("n@example.com", "n"))
        .await
        .unwrap();
    db.close().await;

    let config = Config::from_url(&format!("{url}?synchronous=normal")).unwrap();
    assert_eq!(config.durability(), Durability::Normal);
    let db = persist::open(&config).await.unwrap();
    assert_eq!(db.accounts().get(a.user_id).await.unwrap(), a);
    db.close().await;
    let config = Config::from_url(&format!("{url}?synchronous=FULL")).unwrap();
    assert_eq!(config.durability(), Durability::Full);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_busy_timeout_bounds_the_wait_for_another_process() {
    let (url, _dir) = common::sqlite_url();
    let busy = Duration::from_millis(300);
    let config = Config::from_url(&url).unwrap().with_busy_timeout(busy);
    let db = persist::open(&config).await.unwrap();
    db.migrate().await.unwrap();
    // Another connection (as another process would) holds the write lock.
    let other = rusqlite::Connection::open(config.sqlite_path().unwrap()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let start = Instant::now();
    let err = db
        .accounts()
        .create(&new_account("b@example.com", "b"))
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(elapsed >= busy, "gave up after {elapsed:?}");
    assert!(elapsed < busy + Duration::from_secs(5), "took {elapsed:?}");
    other.execute_batch("ROLLBACK").unwrap();
    let a = db
        .accounts()
        .create(&new_account("b@example.com", "b"))
        .await
        .unwrap();
    assert_eq!(a.username, "b");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_sqlite_migrates_and_serves() {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let db = persist::open(&Config::from_url(url).unwrap())
            .await
            .unwrap();
        let report = db.migrate().await.unwrap();
        assert_eq!(report.applied.first().map(|a| a.version), Some(1));
        let a = db
            .accounts()
            .create(&new_account("m@example.com", "Mem"))
            .await
            .unwrap();
        assert_eq!(db.accounts().get(a.user_id).await.unwrap(), a);
        assert_eq!(
            db.accounts().find_by_username("mem").await.unwrap().user_id,
            a.user_id
        );
        // Another in-memory handle is a different, private database.
        let other = persist::open(&Config::from_url(url).unwrap())
            .await
            .unwrap();
        other.migrate().await.unwrap();
        assert!(matches!(
            other.accounts().get(a.user_id).await,
            Err(Error::NotFound(_))
        ));
        other.close().await;
        db.close().await;
    }
}

// ---------------------------------------------------------------------------
// Closed handles.

async fn closed_handle_refuses_every_call(db: &Db) {
    let clone = db.clone();
    db.ping().await.unwrap();
    db.close().await;
    assert!(db.is_closed() && clone.is_closed());
    for handle in [db, &clone] {
        assert!(matches!(handle.ping().await, Err(Error::Closed)));
        assert!(matches!(
            handle.accounts().get(UserId(1)).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            handle
                .accounts()
                .create(&new_account("c@example.com", "c"))
                .await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            handle.sessions().find_by_token("t").await,
            Err(Error::Closed)
        ));
        assert!(matches!(handle.migrate().await, Err(Error::Closed)));
        assert!(matches!(
            handle.migration_status().await,
            Err(Error::Closed)
        ));
        match handle.begin().await {
            Err(Error::Closed) => {}
            Err(other) => panic!("begin on a closed handle: {other:?}"),
            Ok(_) => panic!("begin on a closed handle succeeded"),
        }
    }
    // Closing again is harmless.
    clone.close().await;
    assert!(matches!(db.ping().await, Err(Error::Closed)));
    assert!(format!("{db:?}").contains("closed: true"), "{db:?}");
}

both_backends! {
    db closed_handle_refuses_every_call,
    backend waits_too_long_to_represent_mean_no_limit,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_handle_refuses_every_call_sqlite_memory() {
    let db = common::open_migrated("sqlite::memory:").await;
    closed_handle_refuses_every_call(&db).await;
}

// ---------------------------------------------------------------------------
// Redaction.

/// The test server's URL for `db`, with a password in it. Trust auth ignores
/// it; if the server needs a password, the configured one is used.
fn url_with_password(db: &str) -> (String, String) {
    let admin = common::with_database(&common::pg_admin_url(), db);
    let (scheme, rest) = admin.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').expect("test URL names a user");
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, p.to_string()),
        None => (userinfo, "sekret".to_string()),
    };
    (format!("{scheme}://{user}:{password}@{host}"), password)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_never_shows_the_password() {
    let pg = PgDatabase::create().await;
    let (url, password) = url_with_password(&pg.name);
    assert!(url.contains(&password));
    let config = Config::from_url(&url).unwrap();
    let config_dbg = format!("{config:?}");
    assert!(!config_dbg.contains(&password), "{config_dbg}");
    assert!(config_dbg.contains(":***@"), "{config_dbg}");
    assert!(!config.redacted_url().contains(&password));
    let db = persist::open(&config).await.unwrap();
    db.ping().await.unwrap();
    let db_dbg = format!("{db:?}");
    assert!(!db_dbg.contains(&password), "{db_dbg}");
    assert!(db_dbg.contains(&pg.name), "{db_dbg}");
    assert!(!format!("{:?}", db.config()).contains(&password));
    db.close().await;
}

// ---------------------------------------------------------------------------
// Waits too long to represent.

/// `Duration::MAX` for every configured wait means no limit, never a panic:
/// open (SQLite's switch to WAL waits within the busy timeout), migrate
/// (PostgreSQL: the migration lock wait and the no-transaction migration's
/// wait for orphaned statements) and calls (PostgreSQL: a shared read waits
/// within the acquire timeout).
async fn waits_too_long_to_represent_mean_no_limit(b: common::Backend) {
    let (url, _place) = b.empty().await;
    let config = persist::Config::from_url(&url)
        .unwrap()
        .with_busy_timeout(Duration::MAX)
        .with_acquire_timeout(Duration::MAX)
        .with_migration_lock_timeout(Duration::MAX);
    let db = persist::open(&config).await.unwrap();
    let report = db.migrate().await.unwrap();
    let shipped = persist::Migrations::embedded(b.dialect()).unwrap();
    assert_eq!(report.applied.len(), shipped.iter().count());
    let account = common::register(&db, &new_account("far@example.com", "far"))
        .await
        .unwrap();
    db.sessions()
        .create(
            "far-future-token-0123456789abcdef",
            account.user_id,
            1,
            2_000_000_000,
        )
        .await
        .unwrap();
    let found = db
        .sessions()
        .find_by_token("far-future-token-0123456789abcdef")
        .await
        .unwrap();
    assert_eq!(found.user_id, account.user_id);
    db.close().await;
}
