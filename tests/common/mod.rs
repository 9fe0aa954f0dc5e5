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

pub mod cluster;
pub mod raw;
pub mod tls_cluster;
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
        PgDatabase { name, url }
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

/// Stamps out one named test per (backend, case): `sqlite::case` and
/// `postgres::case`. Each case is an `async fn(&persist::Db)` in the calling
/// file, run on a fresh migrated database of that backend.
#[macro_export]
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let t = $crate::common::sqlite().await;
                    super::$case(&t.db).await;
                    t.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let t = $crate::common::postgres().await;
                    super::$case(&t.db).await;
                    t.close().await;
                }
            )*
        }
    };
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
