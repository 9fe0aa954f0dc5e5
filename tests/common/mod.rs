//! Test support: a fresh database per test, on either backend, cleaned up
//! afterwards.
//!
//! PostgreSQL tests use `PERSIST_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) as an admin connection,
//! create a uniquely named database for the test and drop it when the test
//! ends. When PostgreSQL is not reachable the test fails loudly; it never
//! skips. `scripts/test` brings a server up before running the suite.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use persist::{Config, Db};

pub mod bulk;
pub mod cluster;
pub mod demo;
pub mod fixtures;
pub mod raw;
pub mod replicas;
pub mod tls_cluster;
pub mod topology;

#[allow(unused_imports)] // not every test file registers players
pub use fixtures::{register, register_in};
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL of the test server.
pub fn pg_admin_url() -> String {
    std::env::var("PERSIST_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_PG_URL.to_string())
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL has a scheme");
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    match query {
        Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
        None => format!("{scheme}://{authority}/{db}"),
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "persist_t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A plain connection to the test server's admin database.
pub async fn admin_client() -> tokio_postgres::Client {
    let url = pg_admin_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required for this test and is not reachable at {url}: {e}. \
                 Run the suite with scripts/test, which starts one."
            )
        });
    tokio::spawn(conn);
    client
}

/// A database created for one test and dropped when this guard drops.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
    /// The PgBouncer `url` goes through, if any (stopped after the
    /// database is dropped).
    pub bouncer: Option<topology::Bouncer>,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let name = unique_name();
        admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
        let url = with_database(&pg_admin_url(), &name);
        PgDatabase {
            name,
            url,
            bouncer: None,
        }
    }

    /// A fresh database reached through a private PgBouncer in `mode` in
    /// front of the test server: `url` goes through the bouncer (with
    /// `pooler=transaction` in transaction mode), `direct_url` does not.
    pub async fn behind(mode: topology::PoolMode) -> Self {
        let mut pg = PgDatabase::create().await;
        let bouncer =
            tokio::task::spawn_blocking(move || topology::Bouncer::start(test_server_port(), mode))
                .await
                .expect("start pgbouncer");
        pg.url = match mode {
            topology::PoolMode::Transaction => {
                format!("{}&pooler=transaction", bouncer.url_for(&pg.name))
            }
            topology::PoolMode::Session => bouncer.url_for(&pg.name),
        };
        pg.bouncer = Some(bouncer);
        pg
    }

    /// The database's URL on the test server itself (past any bouncer).
    pub fn direct_url(&self) -> String {
        with_database(&pg_admin_url(), &self.name)
    }
}

/// The TCP port of the test server (`PERSIST_TEST_DATABASE_URL`).
pub fn test_server_port() -> u16 {
    let config: tokio_postgres::Config = pg_admin_url().parse().expect("test URL parses");
    config.get_ports().first().copied().unwrap_or(5432)
}

/// A fresh database migrated directly on the test server, then opened
/// through a private PgBouncer in `mode` (the conformance suite's third
/// and fourth targets).
pub async fn behind_bouncer(mode: topology::PoolMode) -> TestDb {
    let pg = PgDatabase::behind(mode).await;
    open_migrated(&pg.direct_url()).await.close().await;
    let url = pg.url.clone();
    let db = persist::open(&Config::from_url(&url).expect("bouncer URL parses"))
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    TestDb {
        db,
        url,
        place: Place::Postgres(pg),
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime: use a thread with its own.
        let res = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let c = admin_client().await;
                c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// Where a test database lives; keeps it alive and cleans it up.
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

/// A migrated database for one test.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    pub place: Place,
}

impl TestDb {
    pub async fn close(self) {
        self.db.close().await;
    }
}

/// The URL of a fresh, empty SQLite database file (and its directory guard).
pub fn sqlite_url() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    (url, dir)
}

/// Creates an empty file readable by its owner only, as persist creates its
/// databases (a file readable by others draws a warning on stderr).
pub fn create_private_file(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the file");
}

/// A fresh, migrated SQLite file database.
pub async fn sqlite() -> TestDb {
    let (url, dir) = sqlite_url();
    let db = open_migrated(&url).await;
    TestDb {
        db,
        url,
        place: Place::Sqlite(dir),
    }
}

/// A fresh, migrated PostgreSQL database.
pub async fn postgres() -> TestDb {
    let pg = PgDatabase::create().await;
    let url = pg.url.clone();
    let db = open_migrated(&url).await;
    TestDb {
        db,
        url,
        place: Place::Postgres(pg),
    }
}

pub async fn open_migrated(url: &str) -> Db {
    let db = persist::open(&Config::from_url(url).expect("test URL parses"))
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    db.migrate()
        .await
        .unwrap_or_else(|e| panic!("migrate {url}: {e}"));
    db
}

/// The two backends every repository behaviour is tested on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Both, SQLite first.
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

    /// `sqlite` or `postgres`, as in test names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The migration dialect of this backend.
    pub fn dialect(self) -> persist::BackendKind {
        match self {
            Backend::Sqlite => persist::BackendKind::Sqlite,
            Backend::Postgres => persist::BackendKind::Postgres,
        }
    }

    /// A fresh, migrated database of this backend.
    pub async fn fresh(self) -> TestDb {
        match self {
            Backend::Sqlite => sqlite().await,
            Backend::Postgres => postgres().await,
        }
    }

    /// The URL of a fresh, empty (not migrated) database of this backend,
    /// and the guard that removes it.
    pub async fn empty(self) -> (String, Place) {
        match self {
            Backend::Sqlite => {
                // An empty file is an empty SQLite database; it exists, as
                // the PostgreSQL database does (read-only commands never
                // create one).
                let (url, dir) = sqlite_url();
                create_private_file(&dir.path().join("test.db"));
                (url, Place::Sqlite(dir))
            }
            Backend::Postgres => {
                let pg = PgDatabase::create().await;
                (pg.url.clone(), Place::Postgres(pg))
            }
        }
    }

    /// [`Backend::empty`] outside any async runtime (for plain `#[test]`s).
    pub fn empty_blocking(self) -> (String, Place) {
        block_on(self.empty())
    }
}

/// Runs a future to completion on a runtime of its own; for plain
/// `#[test]` functions (not inside another runtime).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

impl Place {
    /// The backend this database lives on.
    pub fn backend(&self) -> Backend {
        match self {
            Place::Sqlite(_) => Backend::Sqlite,
            Place::Postgres(_) => Backend::Postgres,
        }
    }
}

impl TestDb {
    /// The backend this database lives on.
    pub fn backend(&self) -> Backend {
        self.place.backend()
    }
}

/// Stamps out one named test per (backend, case): `sqlite::case` and
/// `postgres::case`, so a test body is written once and a failure names its
/// backend. Invoke it once per test file; each entry is a kind and the name
/// of a function in the calling file:
///
/// - `db case`: `async fn case(db: &persist::Db)`, run on a fresh migrated
///   database (closed afterwards);
/// - `test_db case`: `async fn case(t: &common::TestDb)`, the same with the
///   URL and place at hand;
/// - `backend case`: `async fn case(backend: common::Backend)`, which sets up
///   what it needs itself (an empty database, a CLI run, ...);
/// - `blocking case`: `fn case(backend: common::Backend)`, a plain `#[test]`
///   outside any runtime (for cases that run the binary).
///
/// ```ignore
/// both_backends! {
///     db account_create_conflicts,
///     backend sweeps_exactly_the_expired_sessions,
///     blocking migrate_status_ping,
/// }
/// ```
#[macro_export]
macro_rules! both_backends {
    ($($kind:ident $case:ident),* $(,)?) => {
        mod sqlite {
            $( $crate::backend_test!($kind $case Sqlite); )*
        }
        mod postgres {
            $( $crate::backend_test!($kind $case Postgres); )*
        }
    };
}

/// One test of [`both_backends!`]: `(kind case Backend-variant)`.
#[macro_export]
macro_rules! backend_test {
    (db $case:ident $b:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let t = $crate::common::Backend::$b.fresh().await;
            super::$case(&t.db).await;
            t.close().await;
        }
    };
    (test_db $case:ident $b:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let t = $crate::common::Backend::$b.fresh().await;
            super::$case(&t).await;
            t.close().await;
        }
    };
    (backend $case:ident $b:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            super::$case($crate::common::Backend::$b).await;
        }
    };
    (blocking $case:ident $b:ident) => {
        #[test]
        fn $case() {
            super::$case($crate::common::Backend::$b);
        }
    };
}

/// [`both_backends!`] with every case of the `db` kind: `async fn
/// case(&persist::Db)` on a fresh migrated database of each backend, and
/// the same cases on PostgreSQL through a private PgBouncer in transaction
/// mode (`pgbouncer_transaction::case`, URL with `pooler=transaction`) and
/// in session mode (`pgbouncer_session::case`, a plain URL).
#[macro_export]
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        $crate::both_backends!($(db $case),*);
        $crate::through_poolers!($(db $case),*);
    };
}

/// Stamps `pgbouncer_transaction::case` and `pgbouncer_session::case`: each
/// case on PostgreSQL through a private PgBouncer in that pool mode (a
/// fresh database migrated directly, then opened through the bouncer). The
/// kinds are those of [`both_backends!`] that take a database: `db case`
/// (`async fn case(&persist::Db)`) and `test_db case` (`async fn
/// case(&common::TestDb)`, whose `url` goes through the bouncer).
#[macro_export]
macro_rules! through_poolers {
    ($($kind:ident $case:ident),* $(,)?) => {
        mod pgbouncer_transaction {
            $( $crate::pooled_test!($kind $case Transaction); )*
        }
        mod pgbouncer_session {
            $( $crate::pooled_test!($kind $case Session); )*
        }
    };
}

/// One test of [`through_poolers!`].
#[macro_export]
macro_rules! pooled_test {
    (db $case:ident $mode:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let t = $crate::common::behind_bouncer($crate::common::topology::PoolMode::$mode).await;
            super::$case(&t.db).await;
            t.close().await;
        }
    };
    (test_db $case:ident $mode:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let t = $crate::common::behind_bouncer($crate::common::topology::PoolMode::$mode).await;
            super::$case(&t).await;
            t.close().await;
        }
    };
}

/// The libtest arguments that run exactly the child-process entry point
/// `name` of the running test binary. An entry point is an `#[ignore]`d test
/// (so a plain run never counts it as a test of its own) that its parent
/// re-executes with these arguments; they mean the same whether the parent
/// runs under `cargo test` or nextest, since the child is the test binary
/// run directly.
pub fn child_test_args(name: &str) -> [&str; 4] {
    ["--exact", name, "--ignored", "--nocapture"]
}

/// The value of `var`, which the parent of a child-process entry point sets.
/// Run any other way (`--ignored` by hand), the entry point fails here
/// instead of passing while doing nothing.
pub fn child_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "this is a child-process entry point, not a test: its parent test \
             runs it with {var} set"
        )
    })
}

/// Standard output of a finished command, as text.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error of a finished command, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it differs.
#[track_caller]
pub fn assert_exit(o: &std::process::Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: stdout {:?} stderr {:?}",
        stdout(o),
        stderr(o)
    );
}

/// Runs the `persist` binary with `--database-url url` and `args`, with no
/// `DATABASE_URL` or `RUST_LOG` from the environment, and returns its output.
pub fn persist_cli(url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_persist"))
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .args(["--database-url", url])
        .args(args)
        .output()
        .expect("run persist")
}

/// Starts `n` `persist migrate` processes against `url` at once and returns
/// each one's output (blocking: call it from `spawn_blocking` in a runtime).
pub fn concurrent_migrators(url: &str, n: usize) -> Vec<std::process::Output> {
    use std::process::{Command, Stdio};
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_persist"))
                .env_remove("DATABASE_URL")
                .env_remove("RUST_LOG")
                .args(["--database-url", url, "migrate"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn persist migrate")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait for persist migrate"))
        .collect()
}
