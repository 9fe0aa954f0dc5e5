//! Promise 6 (issue 5): migrations under faults, on both dialects.
//!
//! (a) A migrator killed while holding the migration lock: the next one
//!     proceeds within its lock timeout. A child process (this test binary,
//!     re-executed to run `migrator_child`) runs `Db::migrate_with` on a set
//!     whose migration is long; once it holds the lock inside that migration
//!     (SQLite: its `BEGIN IMMEDIATE` transaction has spilled megabytes to the
//!     WAL; PostgreSQL: it holds the advisory lock and sits in `pg_sleep`), a
//!     second migrator starts in this process and is seen waiting; the child
//!     is SIGKILLed; the second migrator must succeed.
//! (b) A migrator killed mid-migration: afterwards the tables its earlier
//!     statements created do not exist, `schema_migrations` has no row for
//!     it, and rerunning the same set (same checksum) completes.
//! (c) 8 concurrent migrator processes (the real binary, `persist migrate`)
//!     per round, each round on a fresh database: all exit 0, each migration
//!     is reported applied by exactly one process and recorded exactly once.
//!
//! The long migrations read their length from a `knob` table the test
//! creates beforehand, so the same SQL (same checksum) runs "forever" for
//! the killed child and briefly for the rerun.
//!
//! Short setting (CI): 2 kill rounds per test, 3 rounds of 8 processes;
//! `PERSIST_RELIABILITY_LONG=1`: 10 kill rounds, 50 rounds of 8 processes.

#[path = "reliability_support/mod.rs"]
mod support;

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, PgDatabase, Place};
use persist::{BackendKind, Config, Error, Migration, Migrations};
use support::{
    integrity_check, killed_by_sigkill, pg_in_sleep, say, scale, spawn_self, Bound, ChildProc, Rng,
};

const BIN: &str = env!("CARGO_BIN_EXE_persist");

const CHILD_ENV: &str = "PERSIST_MIGRATOR_CHILD";
const DIALECT_ENV: &str = "PERSIST_MIGRATOR_DIALECT";

/// The advisory lock key of the PostgreSQL migrator ("persist\0" as an i64).
const PG_LOCK_KEY: i64 = 0x7065_7273_6973_7400;

/// SQLite: a migration that writes ~8 MB (more than the page cache, so the
/// uncommitted transaction spills to the WAL, which shows from outside that
/// the migrator is inside it), then runs as long as `knob.n` says.
const SQLITE_SLOW: &str = "\
CREATE TABLE mig_a (id INTEGER PRIMARY KEY, pad BLOB NOT NULL);
INSERT INTO mig_a (pad)
  SELECT randomblob(1024) FROM (WITH RECURSIVE c(x) AS
    (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 8000) SELECT x FROM c);
CREATE TABLE mig_b AS
  WITH RECURSIVE c(x) AS
    (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < (SELECT n FROM knob))
  SELECT max(x) AS m FROM c;
";
/// WAL size that proves the child is inside `SQLITE_SLOW`'s transaction.
const SQLITE_INSIDE_WAL_BYTES: u64 = 4 << 20;

/// PostgreSQL: creates a table, fills it, sleeps `knob.secs`, creates another.
const PG_SLOW: &str = "\
CREATE TABLE mig_a (id int PRIMARY KEY);
INSERT INTO mig_a SELECT generate_series(1, 1000);
SELECT pg_sleep((SELECT secs FROM knob));
CREATE TABLE mig_b (id int);
";

/// What the next migrator applies in (a): a different, quick version 1 (the
/// killed one never committed, so there is no drift).
const QUICK: &str = "CREATE TABLE mig_quick (x INTEGER); INSERT INTO mig_quick VALUES (1);";

fn slow_set(d: BackendKind) -> Migrations {
    let sql = match d {
        BackendKind::Sqlite => SQLITE_SLOW,
        BackendKind::Postgres => PG_SLOW,
    };
    Migrations::new(d, vec![Migration::new(1, "slow", sql)]).unwrap()
}

fn quick_set(d: BackendKind) -> Migrations {
    Migrations::new(d, vec![Migration::new(1, "quick", QUICK)]).unwrap()
}

fn dialect_name(d: BackendKind) -> &'static str {
    match d {
        BackendKind::Sqlite => "sqlite",
        BackendKind::Postgres => "postgres",
    }
}

// ---------------------------------------------------------------------------
/// The knob table, in a file that already holds persist's (empty)
/// `schema_migrations`: persist refuses to open a SQLite file that holds
/// other tables and no history of its own (another application's file).
const KNOB_SQLITE: &str = "CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, \
     name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL, \
     execution_ms INTEGER NOT NULL) STRICT; \
     CREATE TABLE knob (n INTEGER); INSERT INTO knob VALUES (1000000000000);";

// The child: a migrator that is killed inside its long migration

/// Runs only as a child (`PERSIST_MIGRATOR_CHILD` set to the database URL):
/// migrates with the slow set, which never ends before the parent kills it.
#[test]
#[ignore = "child-process entry point: the migrator_killed_* tests run it"]
fn migrator_child() {
    let url = common::child_env(CHILD_ENV);
    let dialect = match std::env::var(DIALECT_ENV).as_deref() {
        Ok("sqlite") => BackendKind::Sqlite,
        Ok("postgres") => BackendKind::Postgres,
        other => panic!("bad dialect {other:?}"),
    };
    support::runtime().block_on(async {
        let config = Config::from_url(&url)
            .expect("URL")
            .with_migration_lock_timeout(Duration::from_secs(600));
        let db = persist::open(&config).await.expect("child open");
        say("READY");
        let r = db.migrate_with(&slow_set(dialect)).await;
        say(&format!("DONE {r:?}"));
    });
}

fn spawn_migrator(url: &str, d: BackendKind) -> ChildProc {
    spawn_self(
        "migrator_child",
        &[
            (CHILD_ENV, url.to_string()),
            (DIALECT_ENV, dialect_name(d).to_string()),
        ],
    )
}

// ---------------------------------------------------------------------------
// SQLite helpers

struct LiteFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
    url: String,
}

fn lite_file() -> LiteFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mig.db");
    let url = format!("sqlite://{}", path.display());
    LiteFile {
        _dir: dir,
        path,
        url,
    }
}

fn lite_exec(path: &Path, sql: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.execute_batch(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn lite_tables(path: &Path) -> BTreeSet<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// (version, name, checksum) rows of `schema_migrations` (none if absent).
fn lite_rows(path: &Path) -> Vec<(i64, String, String)> {
    if !lite_tables(path).contains("schema_migrations") {
        return Vec::new();
    }
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn lite_count(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// Starts the slow SQLite migrator and waits until it is inside its
/// migration, holding the write lock (the WAL has grown past what only that
/// transaction writes).
fn lite_child_inside(f: &LiteFile) -> ChildProc {
    let mut child = spawn_migrator(&f.url, BackendKind::Sqlite);
    if !child.wait_for_line(Duration::from_secs(60), |l| l == "READY") {
        child.kill();
        panic!("migrator child never became ready: {}", child.stderr_text());
    }
    let wal = PathBuf::from(format!("{}-wal", f.path.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > SQLITE_INSIDE_WAL_BYTES) {
            return child;
        }
        if Instant::now() > deadline
            || child.wait_for_line(Duration::ZERO, |l| l.starts_with("DONE"))
        {
            child.kill();
            panic!(
                "the migrator never got inside its migration: {}",
                child.describe()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// (a) SQLite: killed while holding the lock, the next one proceeds

fn killed_holding_the_lock_sqlite() {
    let rt = multi_thread_runtime();
    let seed = Rng::seed_from_clock();
    let mut rng = Rng::new(seed);
    let mut bound = Bound::new(
        scale(2, 10),
        scale(Duration::from_secs(25), Duration::from_secs(240)),
    );
    let lock_timeout = Duration::from_secs(60);
    let (mut kills, mut waited, mut proceeded, mut max_wait_ms) = (0, 0, 0, 0u128);
    let mut violations = Vec::new();
    while bound.next() {
        let f = lite_file();
        lite_exec(&f.path, KNOB_SQLITE);
        let mut child = lite_child_inside(&f);
        // The next migrator starts while the child holds the lock.
        let config = Config::from_url(&f.url)
            .unwrap()
            .with_migration_lock_timeout(lock_timeout);
        let next = rt.spawn(async move {
            let db = persist::open(&config).await?;
            let r = db.migrate_with(&quick_set(BackendKind::Sqlite)).await;
            db.close().await;
            r
        });
        std::thread::sleep(Duration::from_millis(rng.range(50, 400)));
        if next.is_finished() {
            violations.push(format!(
                "round {}: the next migrator finished while the lock was held: {:?}",
                bound.done(),
                rt.block_on(next)
            ));
            continue;
        }
        waited += 1;
        let st = child.kill();
        assert!(killed_by_sigkill(&st), "child ended by itself: {st}");
        kills += 1;
        let killed_at = Instant::now();
        match rt.block_on(next).unwrap() {
            Ok(report) if report.applied.len() == 1 && report.applied[0].name == "quick" => {
                proceeded += 1;
                max_wait_ms = max_wait_ms.max(killed_at.elapsed().as_millis());
            }
            Err(e @ Error::Timeout { .. }) => violations.push(format!(
                "round {}: the next migrator timed out on the dead migrator's lock: {e}",
                bound.done()
            )),
            other => violations.push(format!("round {}: next migrator: {other:?}", bound.done())),
        }
        let ic = integrity_check(&f.path);
        if ic != ["ok"] {
            violations.push(format!("round {}: integrity_check {ic:?}", bound.done()));
        }
        let tables = lite_tables(&f.path);
        if tables.contains("mig_a") || tables.contains("mig_b") || !tables.contains("mig_quick") {
            violations.push(format!("round {}: tables {tables:?}", bound.done()));
        }
        let rows = lite_rows(&f.path);
        let quick = quick_set(BackendKind::Sqlite);
        let want = quick.iter().next().unwrap();
        if rows != [(1, "quick".to_string(), want.checksum().to_string())] {
            violations.push(format!(
                "round {}: schema_migrations {rows:?}",
                bound.done()
            ));
        }
    }
    eprintln!(
        "reliability migrations dialect=sqlite case=killed_holding_lock rounds={} kills={kills} \
         next_waited={waited} next_proceeded={proceeded} max_wait_after_kill_ms={max_wait_ms} \
         lock_timeout_s={} seed={seed} violations={}",
        bound.done(),
        lock_timeout.as_secs(),
        violations.len()
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert_eq!(proceeded, bound.done());
}

// ---------------------------------------------------------------------------
// (b) SQLite: killed mid-migration, no partial schema, the rerun completes

fn killed_mid_migration_sqlite() {
    let rt = support::runtime();
    let seed = Rng::seed_from_clock();
    let mut rng = Rng::new(seed);
    let mut bound = Bound::new(
        scale(2, 10),
        scale(Duration::from_secs(25), Duration::from_secs(240)),
    );
    let (mut kills, mut reruns) = (0, 0);
    let mut violations = Vec::new();
    let slow = slow_set(BackendKind::Sqlite);
    let slow_sum = slow.iter().next().unwrap().checksum().to_string();
    while bound.next() {
        let round = bound.done();
        let f = lite_file();
        lite_exec(&f.path, KNOB_SQLITE);
        let mut child = lite_child_inside(&f);
        // Anywhere in the rest of the migration: still filling, or in the
        // long statement.
        std::thread::sleep(Duration::from_millis(rng.range(0, 500)));
        let st = child.kill();
        assert!(killed_by_sigkill(&st), "child ended by itself: {st}");
        kills += 1;

        let ic = integrity_check(&f.path);
        if ic != ["ok"] {
            violations.push(format!("round {round}: integrity_check {ic:?}"));
        }
        let tables = lite_tables(&f.path);
        if tables.contains("mig_a") || tables.contains("mig_b") {
            violations.push(format!(
                "round {round}: partial schema after the kill: {tables:?}"
            ));
        }
        let rows = lite_rows(&f.path);
        if !rows.is_empty() {
            violations.push(format!(
                "round {round}: schema_migrations after the kill: {rows:?}"
            ));
        }

        // The rerun: same set, same checksum, now short.
        lite_exec(&f.path, "UPDATE knob SET n = 10;");
        let res = rt.block_on(async {
            let db = persist::open(&Config::from_url(&f.url).unwrap()).await?;
            let r = db.migrate_with(&slow).await;
            let again = db.migrate_with(&slow).await;
            db.close().await;
            r.and_then(|r| again.map(|a| (r, a)))
        });
        match res {
            Ok((r, again)) if r.applied.len() == 1 && again.applied.is_empty() => reruns += 1,
            other => violations.push(format!("round {round}: rerun {other:?}")),
        }
        let rows = lite_rows(&f.path);
        if rows != [(1, "slow".to_string(), slow_sum.clone())] {
            violations.push(format!(
                "round {round}: schema_migrations after the rerun {rows:?}"
            ));
        }
        if lite_tables(&f.path).contains("mig_a") {
            let (a, b) = (
                lite_count(&f.path, "SELECT count(*) FROM mig_a"),
                lite_count(&f.path, "SELECT m FROM mig_b"),
            );
            if (a, b) != (8000, 10) {
                violations.push(format!(
                    "round {round}: rerun content mig_a={a} mig_b.m={b}"
                ));
            }
        } else {
            violations.push(format!("round {round}: no mig_a after the rerun"));
        }
        let ic = integrity_check(&f.path);
        if ic != ["ok"] {
            violations.push(format!(
                "round {round}: integrity_check after the rerun {ic:?}"
            ));
        }
    }
    eprintln!(
        "reliability migrations dialect=sqlite case=killed_mid_migration rounds={} kills={kills} \
         reruns_completed={reruns} seed={seed} violations={}",
        bound.done(),
        violations.len()
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert_eq!(reruns, bound.done());
}

// ---------------------------------------------------------------------------
// PostgreSQL helpers

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// Whether some session holds the migrator's advisory lock in this database.
async fn pg_lock_held(c: &tokio_postgres::Client) -> bool {
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = 1",
            &[&(PG_LOCK_KEY >> 32), &(PG_LOCK_KEY & 0xffff_ffff)],
        )
        .await
        .unwrap()
        .get(0);
    n > 0
}

async fn pg_tables(c: &tokio_postgres::Client) -> BTreeSet<String> {
    c.query(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn pg_rows(c: &tokio_postgres::Client) -> Vec<(i64, String, String)> {
    if !pg_tables(c).await.contains("schema_migrations") {
        return Vec::new();
    }
    c.query(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Starts the slow PostgreSQL migrator and waits until it holds the lock and
/// sleeps inside its migration.
async fn pg_child_inside(url: &str, watch: &tokio_postgres::Client) -> ChildProc {
    let mut child = spawn_migrator(url, BackendKind::Postgres);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if pg_lock_held(watch).await && pg_in_sleep(watch).await {
            return child;
        }
        if Instant::now() > deadline
            || child.wait_for_line(Duration::ZERO, |l| l.starts_with("DONE"))
        {
            child.kill();
            panic!(
                "the migrator never got inside its migration: {}",
                child.describe()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until no session holds the migrator's lock.
async fn pg_wait_lock_free(watch: &tokio_postgres::Client, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !pg_lock_held(watch).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

// ---------------------------------------------------------------------------
// (a) PostgreSQL: killed while holding the lock, the next one proceeds

/// Two variants alternate. Without `client_connection_check_interval` (the
/// server default), the killed migrator's backend keeps running its
/// statement (`pg_sleep(3)`) and releases the lock when it ends and finds
/// the client gone. With `client_connection_check_interval = 250ms` set on
/// the database (an operator setting), the backend notices the dead client
/// during the statement (`pg_sleep(30)`) and the lock is freed at once.
/// Either way the next migrator, waiting with a 60 s lock timeout, succeeds.
async fn killed_holding_the_lock_postgres() {
    let seed = Rng::seed_from_clock();
    let mut rng = Rng::new(seed);
    let mut bound = Bound::new(
        scale(2, 10),
        scale(Duration::from_secs(25), Duration::from_secs(240)),
    );
    let lock_timeout = Duration::from_secs(60);
    let (mut kills, mut waited, mut proceeded) = (0, 0, 0);
    let (mut max_wait_default_ms, mut max_wait_check_ms) = (0u128, 0u128);
    let mut violations = Vec::new();
    while bound.next() {
        let round = bound.done();
        let with_check = round.is_multiple_of(2);
        let pg = PgDatabase::create().await;
        let watch = pg_client(&pg.url).await;
        let secs = if with_check { 30 } else { 3 };
        watch
            .batch_execute(&format!(
                "CREATE TABLE knob (secs float8); INSERT INTO knob VALUES ({secs});"
            ))
            .await
            .unwrap();
        if with_check {
            watch
                .batch_execute(&format!(
                    "ALTER DATABASE \"{}\" SET client_connection_check_interval = '250ms'",
                    pg.name
                ))
                .await
                .unwrap();
        }
        let mut child = pg_child_inside(&pg.url, &watch).await;
        let config = Config::from_url(&pg.url)
            .unwrap()
            .with_migration_lock_timeout(lock_timeout);
        let next = tokio::spawn(async move {
            let db = persist::open(&config).await?;
            let r = db.migrate_with(&quick_set(BackendKind::Postgres)).await;
            db.close().await;
            r
        });
        tokio::time::sleep(Duration::from_millis(rng.range(100, 400))).await;
        if next.is_finished() {
            violations.push(format!(
                "round {round}: the next migrator finished while the lock was held: {:?}",
                next.await
            ));
            continue;
        }
        waited += 1;
        let st = tokio::task::block_in_place(|| child.kill());
        assert!(killed_by_sigkill(&st), "child ended by itself: {st}");
        kills += 1;
        let killed_at = Instant::now();
        match next.await.unwrap() {
            Ok(report) if report.applied.len() == 1 && report.applied[0].name == "quick" => {
                proceeded += 1;
                let ms = killed_at.elapsed().as_millis();
                if with_check {
                    max_wait_check_ms = max_wait_check_ms.max(ms);
                } else {
                    max_wait_default_ms = max_wait_default_ms.max(ms);
                }
            }
            Err(e @ Error::Timeout { .. }) => violations.push(format!(
                "round {round}: the next migrator timed out on the dead migrator's lock: {e}"
            )),
            other => violations.push(format!("round {round}: next migrator: {other:?}")),
        }
        let tables = pg_tables(&watch).await;
        if tables.contains("mig_a") || tables.contains("mig_b") || !tables.contains("mig_quick") {
            violations.push(format!("round {round}: tables {tables:?}"));
        }
        let rows = pg_rows(&watch).await;
        let quick = quick_set(BackendKind::Postgres);
        let want = quick.iter().next().unwrap();
        if rows != [(1, "quick".to_string(), want.checksum().to_string())] {
            violations.push(format!("round {round}: schema_migrations {rows:?}"));
        }
        drop(watch);
        drop(pg);
    }
    eprintln!(
        "reliability migrations dialect=postgres case=killed_holding_lock rounds={} kills={kills} \
         next_waited={waited} next_proceeded={proceeded} \
         max_wait_after_kill_ms_default={max_wait_default_ms} \
         max_wait_after_kill_ms_connection_check={max_wait_check_ms} lock_timeout_s={} \
         seed={seed} violations={}",
        bound.done(),
        lock_timeout.as_secs(),
        violations.len()
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert_eq!(proceeded, bound.done());
}

// ---------------------------------------------------------------------------
// (b) PostgreSQL: killed mid-migration, no partial schema, the rerun completes

async fn killed_mid_migration_postgres() {
    let seed = Rng::seed_from_clock();
    let mut rng = Rng::new(seed);
    let mut bound = Bound::new(
        scale(2, 10),
        scale(Duration::from_secs(25), Duration::from_secs(240)),
    );
    let (mut kills, mut reruns) = (0, 0);
    let mut violations = Vec::new();
    let slow = slow_set(BackendKind::Postgres);
    let slow_sum = slow.iter().next().unwrap().checksum().to_string();
    while bound.next() {
        let round = bound.done();
        let pg = PgDatabase::create().await;
        let watch = pg_client(&pg.url).await;
        watch
            .batch_execute("CREATE TABLE knob (secs float8); INSERT INTO knob VALUES (30);")
            .await
            .unwrap();
        // So the killed migrator's backend ends (and rolls back) promptly.
        watch
            .batch_execute(&format!(
                "ALTER DATABASE \"{}\" SET client_connection_check_interval = '250ms'",
                pg.name
            ))
            .await
            .unwrap();
        let mut child = pg_child_inside(&pg.url, &watch).await;
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        let st = tokio::task::block_in_place(|| child.kill());
        assert!(killed_by_sigkill(&st), "child ended by itself: {st}");
        kills += 1;
        if !pg_wait_lock_free(&watch, Duration::from_secs(60)).await {
            violations.push(format!(
                "round {round}: the killed migrator's lock was never freed"
            ));
            continue;
        }
        let tables = pg_tables(&watch).await;
        if tables.contains("mig_a") || tables.contains("mig_b") {
            violations.push(format!(
                "round {round}: partial schema after the kill: {tables:?}"
            ));
        }
        let rows = pg_rows(&watch).await;
        if !rows.is_empty() {
            violations.push(format!(
                "round {round}: schema_migrations after the kill: {rows:?}"
            ));
        }

        watch
            .batch_execute("UPDATE knob SET secs = 0")
            .await
            .unwrap();
        let res: persist::Result<_> = async {
            let db = persist::open(&Config::from_url(&pg.url).unwrap()).await?;
            let r = db.migrate_with(&slow).await;
            let again = db.migrate_with(&slow).await;
            db.close().await;
            Ok((r?, again?))
        }
        .await;
        match res {
            Ok((r, again)) if r.applied.len() == 1 && again.applied.is_empty() => reruns += 1,
            other => violations.push(format!("round {round}: rerun {other:?}")),
        }
        let rows = pg_rows(&watch).await;
        if rows != [(1, "slow".to_string(), slow_sum.clone())] {
            violations.push(format!(
                "round {round}: schema_migrations after the rerun {rows:?}"
            ));
        }
        let tables = pg_tables(&watch).await;
        if tables.contains("mig_a") && tables.contains("mig_b") {
            let n: i64 = watch
                .query_one("SELECT count(*) FROM mig_a", &[])
                .await
                .unwrap()
                .get(0);
            if n != 1000 {
                violations.push(format!(
                    "round {round}: mig_a holds {n} rows after the rerun"
                ));
            }
        } else {
            violations.push(format!("round {round}: tables after the rerun {tables:?}"));
        }
        drop(watch);
        drop(pg);
    }
    eprintln!(
        "reliability migrations dialect=postgres case=killed_mid_migration rounds={} \
         kills={kills} reruns_completed={reruns} seed={seed} violations={}",
        bound.done(),
        violations.len()
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert_eq!(reruns, bound.done());
}

// ---------------------------------------------------------------------------
// (c) 8 concurrent migrator processes x rounds, each on a fresh database

const PROCESSES: usize = 8;

/// Runs `persist migrate` 8 times at once against `url`; returns each
/// process's (exit code, stdout, stderr).
fn eight_migrators(url: &str) -> Vec<(Option<i32>, String, String)> {
    let mut children: Vec<ChildProc> = (0..PROCESSES)
        .map(|_| {
            let mut cmd = Command::new(BIN);
            cmd.arg("--database-url")
                .arg(url)
                .arg("migrate")
                .env_remove("DATABASE_URL")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            ChildProc::spawn(cmd)
        })
        .collect();
    children
        .iter_mut()
        .map(|c| {
            let st = c.wait(Duration::from_secs(120));
            (st.code(), c.seen.join("\n"), c.stderr_text())
        })
        .collect()
}

/// Checks one round's outputs and the recorded rows; returns violations.
fn check_round(
    round: usize,
    outputs: &[(Option<i32>, String, String)],
    rows: &[(i64, String, String)],
    tables: &BTreeSet<String>,
    shipped: &Migrations,
    double_applies: &mut usize,
) -> Vec<String> {
    let mut v = Vec::new();
    for (i, (code, out, err)) in outputs.iter().enumerate() {
        if *code != Some(0) {
            v.push(format!(
                "round {round}: migrator {i} exit {code:?}: {out:?} {err:?}"
            ));
        }
    }
    for m in shipped.iter() {
        let line = format!("applied {:04}_{} (", m.version(), m.name());
        let count: usize = outputs
            .iter()
            .map(|(_, out, _)| out.lines().filter(|l| l.starts_with(&line)).count())
            .sum();
        if count != 1 {
            *double_applies += usize::from(count > 1);
            v.push(format!(
                "round {round}: {line:?} reported by {count} processes"
            ));
        }
    }
    let want: Vec<(i64, String, String)> = shipped
        .iter()
        .map(|m| (m.version(), m.name().to_string(), m.checksum().to_string()))
        .collect();
    if rows != want.as_slice() {
        v.push(format!("round {round}: schema_migrations {rows:?}"));
    }
    for t in [
        "accounts",
        "sessions",
        "army_loadouts",
        "progression",
        "user_unlocks",
    ] {
        if !tables.contains(t) {
            v.push(format!("round {round}: table {t} missing"));
        }
    }
    v
}

/// Eight migrator processes at once on a fresh database, round after round:
/// each migration applied exactly once, by one of them, and the schema
/// complete (SQLite: the file passes `integrity_check`).
async fn eight_concurrent_migrator_processes_per_round(backend: Backend) {
    let shipped = Migrations::embedded(backend.dialect()).unwrap();
    let mut bound = Bound::new(
        scale(3, 50),
        scale(Duration::from_secs(25), Duration::from_secs(240)),
    );
    let mut violations = Vec::new();
    let mut double_applies = 0;
    let mut processes = 0;
    while bound.next() {
        let (url, place) = backend.empty().await;
        if let Place::Sqlite(dir) = &place {
            // Every migrator races to create the file.
            std::fs::remove_file(dir.path().join("test.db")).unwrap();
        }
        let outputs = tokio::task::spawn_blocking(move || eight_migrators(&url))
            .await
            .unwrap();
        processes += outputs.len();
        let (rows, tables) = match &place {
            Place::Sqlite(dir) => {
                let path = dir.path().join("test.db");
                let ic = integrity_check(&path);
                if ic != ["ok"] {
                    violations.push(format!("round {}: integrity_check {ic:?}", bound.done()));
                }
                (lite_rows(&path), lite_tables(&path))
            }
            Place::Postgres(pg) => {
                let c = pg_client(&pg.url).await;
                (pg_rows(&c).await, pg_tables(&c).await)
            }
        };
        violations.extend(check_round(
            bound.done(),
            &outputs,
            &rows,
            &tables,
            &shipped,
            &mut double_applies,
        ));
        drop(place);
    }
    eprintln!(
        "reliability migrations dialect={} case=concurrent_processes rounds={} \
         processes_per_round={PROCESSES} migrator_runs={processes} \
         double_applies={double_applies} elapsed_s={:.1} violations={}",
        backend.name(),
        bound.done(),
        bound.elapsed().as_secs_f64(),
        violations.len()
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

// ---------------------------------------------------------------------------
// Each case on both backends

/// A migrator killed while it holds the migration lock: the next one, waiting
/// for the lock, proceeds. How the lock is held and watched is the
/// backend's own (SQLite: a write transaction; PostgreSQL: an advisory lock).
fn migrator_killed_holding_the_lock_next_one_proceeds(backend: Backend) {
    match backend {
        Backend::Sqlite => killed_holding_the_lock_sqlite(),
        Backend::Postgres => multi_thread_runtime().block_on(killed_holding_the_lock_postgres()),
    }
}

/// A migrator killed in the middle of a migration leaves no partial schema,
/// and a rerun completes.
fn migrator_killed_mid_migration_leaves_no_partial_schema_and_rerun_completes(backend: Backend) {
    match backend {
        Backend::Sqlite => killed_mid_migration_sqlite(),
        Backend::Postgres => multi_thread_runtime().block_on(killed_mid_migration_postgres()),
    }
}

both_backends! {
    blocking migrator_killed_holding_the_lock_next_one_proceeds,
    blocking migrator_killed_mid_migration_leaves_no_partial_schema_and_rerun_completes,
    backend eight_concurrent_migrator_processes_per_round,
}
