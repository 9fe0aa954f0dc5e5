//! Issue 15, no-transaction migrations (`-- persist:no-transaction` on the
//! first line). PostgreSQL: statements one at a time outside a transaction
//! (`CREATE INDEX CONCURRENTLY`), recorded as started before and as applied
//! after; an interrupted run shows as "incomplete" (`status` exit 9) and the
//! next `migrate` resumes it, rebuilding an INVALID index a failed
//! concurrent build left. SQLite runs the same kind of file in one
//! transaction, as any other.

mod common;

use std::process::Command;

use common::{assert_exit, stderr, stdout};
use persist::{BackendKind, Error, Migration, MigrationState, Migrations, NewAccount};

const BIN: &str = env!("CARGO_BIN_EXE_persist");

const PG_ONLINE: &str = "-- persist:no-transaction\n\
CREATE INDEX CONCURRENTLY IF NOT EXISTS sessions_user_created ON sessions (user_id, created_at);\n\
DROP INDEX CONCURRENTLY IF EXISTS sessions_no_such_index;\n";

const PG_UNIQUE: &str = "-- persist:no-transaction\n\
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS sessions_one_per_user ON sessions (user_id);\n";

const SQLITE_ONLINE: &str = "-- persist:no-transaction\n\
CREATE INDEX IF NOT EXISTS sessions_user_created ON sessions (user_id, created_at);\n";

/// The shipped set of `dialect` plus `sql` as the next version.
fn plus(dialect: BackendKind, name: &str, sql: &str) -> Migrations {
    let mut list: Vec<Migration> = Migrations::embedded(dialect)
        .unwrap()
        .iter()
        .cloned()
        .collect();
    list.push(Migration::new(list.len() as i64 + 1, name, sql));
    Migrations::new(dialect, list).unwrap()
}

async fn client(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

/// `Some(valid)` for index `name`, `None` when it does not exist.
async fn index_valid(c: &tokio_postgres::Client, name: &str) -> Option<bool> {
    c.query_opt(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = $1",
        &[&name],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

async fn versions(c: &tokio_postgres::Client) -> Vec<i64> {
    c.query(
        "SELECT version FROM schema_migrations ORDER BY version",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_builds_an_index_concurrently_and_records_it_applied() {
    let t = common::postgres().await;
    let set = plus(BackendKind::Postgres, "online_index", PG_ONLINE);
    assert!(!set.iter().last().unwrap().in_transaction());
    let report = t.db.migrate_with(&set).await.unwrap();
    let v = set.latest_version();
    assert_eq!(
        report.applied.iter().map(|a| a.version).collect::<Vec<_>>(),
        [v]
    );
    let c = client(&t.url).await;
    assert_eq!(index_valid(&c, "sessions_user_created").await, Some(true));
    assert_eq!(versions(&c).await, (1..=v).collect::<Vec<_>>());
    let status = t.db.migration_status_with(&set).await.unwrap();
    assert!(
        status.iter().all(|s| s.state == MigrationState::Applied),
        "{status:?}"
    );
    // Again: nothing to do.
    assert!(t.db.migrate_with(&set).await.unwrap().applied.is_empty());
    t.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_resumes_an_interrupted_run_and_rebuilds_the_invalid_index() {
    let t = common::postgres().await;
    let a = common::register(
        &t.db,
        &NewAccount {
            email: "twice@example.com",
            username: "twice",
            pass_hash: b"h",
            created_at: 1_700_000_000,
        },
    )
    .await
    .unwrap();
    for token in [
        "first-token-abcdefghijklmnop",
        "second-token-abcdefghijklmno",
    ] {
        t.db.sessions()
            .create(token, a.user_id, 1_700_000_000, 1_900_000_000)
            .await
            .unwrap();
    }
    let set = plus(BackendKind::Postgres, "one_session_per_user", PG_UNIQUE);
    let v = set.latest_version();
    // The concurrent unique build fails on the duplicate: it leaves an
    // INVALID index and the migration recorded as started only.
    let err = t.db.migrate_with(&set).await.unwrap_err();
    assert!(
        matches!(&err, Error::MigrationFailed { version, .. } if *version == v),
        "{err:?}"
    );
    let c = client(&t.url).await;
    assert_eq!(index_valid(&c, "sessions_one_per_user").await, Some(false));
    assert!(versions(&c).await.contains(&-v));
    let status = t.db.migration_status_with(&set).await.unwrap();
    assert_eq!(
        status.last().map(|s| (s.version, s.state)),
        Some((v, MigrationState::Incomplete))
    );

    // The cause fixed, the next run resumes: the INVALID index is dropped
    // and built again (IF NOT EXISTS alone would have kept it).
    t.db.sessions()
        .delete("second-token-abcdefghijklmno")
        .await
        .unwrap();
    let report = t.db.migrate_with(&set).await.unwrap();
    assert_eq!(
        report.applied.iter().map(|a| a.version).collect::<Vec<_>>(),
        [v]
    );
    assert_eq!(index_valid(&c, "sessions_one_per_user").await, Some(true));
    assert_eq!(versions(&c).await, (1..=v).collect::<Vec<_>>());
    t.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_exits_9_on_an_incomplete_migration_and_migrate_resumes_it() {
    let pg = common::PgDatabase::create().await;
    let shipped = Migrations::embedded(BackendKind::Postgres).unwrap();
    let last = shipped.iter().last().unwrap().clone();
    let before: Vec<Migration> = shipped
        .iter()
        .filter(|m| m.version() < last.version())
        .cloned()
        .collect();
    let db = persist::open(&persist::Config::from_url(&pg.url).unwrap())
        .await
        .unwrap();
    db.migrate_with(&Migrations::new(BackendKind::Postgres, before).unwrap())
        .await
        .unwrap();
    db.close().await;
    // What an interrupted run of the last migration leaves behind.
    client(&pg.url)
        .await
        .execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at, execution_ms) \
             VALUES ($1, $2, $3, 1, 0)",
            &[&-last.version(), &last.name(), &last.checksum()],
        )
        .await
        .unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .args(["--database-url", &pg.url])
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["status"]);
    assert_exit(&o, 9, "status with an incomplete migration");
    let row = stdout(&o)
        .lines()
        .find(|l| l.starts_with(&format!("{:04} ", last.version())))
        .map(str::to_string);
    assert!(
        row.is_some_and(|r| r.contains(" incomplete ")),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        stderr(&o),
        format!(
            "error: no-transaction migration(s) {:04} started and did not finish: run migrate to resume\n",
            last.version()
        )
    );
    let o = run(&["status", "--json"]);
    assert_exit(&o, 9, "status --json with an incomplete migration");
    assert!(
        stdout(&o).contains("\"status\":\"incomplete\""),
        "{}",
        stdout(&o)
    );
    assert_exit(&run(&["migrate"]), 0, "migrate resumes");
    assert_exit(&run(&["status"]), 0, "status after the resume");
    let all: Vec<i64> = shipped.iter().map(Migration::version).collect();
    assert_eq!(versions(&client(&pg.url).await).await, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_runs_a_no_transaction_file_in_one_transaction() {
    let t = common::sqlite().await;
    let set = plus(BackendKind::Sqlite, "online_index", SQLITE_ONLINE);
    let report = t.db.migrate_with(&set).await.unwrap();
    assert_eq!(report.applied.len(), 1);
    let status = t.db.migration_status_with(&set).await.unwrap();
    assert!(
        status.iter().all(|s| s.state == MigrationState::Applied),
        "{status:?}"
    );
    let schema = persist::read_schema(&t.db).await.unwrap();
    assert!(schema.tables["sessions"]
        .indexes
        .contains_key("sessions_user_created"));
    t.close().await;
}

// A migrator killed between "started" and "applied"

#[path = "reliability_support/mod.rs"]
mod support;

const CHILD_ENV: &str = "PERSIST_NOTX_CHILD";

/// Two concurrent builds with a sleep between them; the sleep's length is
/// read from `knob`, so the same file (same checksum) runs long for the
/// killed child and briefly for the resume.
const PG_SLOW: &str = "-- persist:no-transaction\n\
CREATE INDEX CONCURRENTLY IF NOT EXISTS sessions_first ON sessions (created_at);\n\
SELECT pg_sleep((SELECT secs FROM knob));\n\
CREATE INDEX CONCURRENTLY IF NOT EXISTS sessions_second ON sessions (expires_at, user_id);\n";

/// Runs only as a child: migrates with the slow no-transaction set.
#[test]
#[ignore = "child-process entry point: the kill test runs it"]
fn no_transaction_child() {
    let url = common::child_env(CHILD_ENV);
    support::runtime().block_on(async {
        let db = persist::open(&persist::Config::from_url(&url).unwrap())
            .await
            .unwrap();
        let r = db
            .migrate_with(&plus(BackendKind::Postgres, "slow", PG_SLOW))
            .await;
        support::say(&format!("DONE {r:?}"));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_migrator_killed_mid_file_is_resumed_by_the_next_one() {
    let t = common::postgres().await;
    let c = client(&t.url).await;
    c.batch_execute("CREATE TABLE knob (secs float8); INSERT INTO knob VALUES (600)")
        .await
        .unwrap();
    let set = plus(BackendKind::Postgres, "slow", PG_SLOW);
    let v = set.latest_version();
    let mut child = support::spawn_self("no_transaction_child", &[(CHILD_ENV, t.url.clone())]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !support::pg_in_sleep(&c).await {
        assert!(std::time::Instant::now() < deadline, "{}", child.describe());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let st = child.kill();
    assert!(support::killed_by_sigkill(&st), "{st:?}");
    // Started, not applied: the first index exists, the second does not.
    assert!(versions(&c).await.contains(&-v));
    assert_eq!(index_valid(&c, "sessions_first").await, Some(true));
    assert_eq!(index_valid(&c, "sessions_second").await, None);
    let status = t.db.migration_status_with(&set).await.unwrap();
    assert_eq!(
        status.last().map(|s| s.state),
        Some(MigrationState::Incomplete)
    );

    // The next migrator (the killed one's lock is gone once its backend
    // noticed the lost client) resumes from the first statement.
    c.batch_execute("UPDATE knob SET secs = 0").await.unwrap();
    let report = t.db.migrate_with(&set).await.unwrap();
    assert_eq!(
        report.applied.iter().map(|a| a.version).collect::<Vec<_>>(),
        [v]
    );
    assert_eq!(index_valid(&c, "sessions_first").await, Some(true));
    assert_eq!(index_valid(&c, "sessions_second").await, Some(true));
    assert_eq!(versions(&c).await, (1..=v).collect::<Vec<_>>());
    t.close().await;
}

/// The migrator's advisory lock key: the bytes of "persist\0" as an i64.
const MIGRATION_LOCK_KEY: i64 = 0x7065_7273_6973_7400;

/// A migrator waiting for the migration lock keeps no transaction open
/// between its tries, so the holder's concurrent index build (which waits
/// for every transaction that held an older snapshot when it looked) does
/// not wait for it. Before, the waiter sat in `pg_advisory_xact_lock`
/// inside a statement and the two waited for each other until the waiter's
/// lock wait ran out (a flaky hang of eight concurrent migrators).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_waiting_migrator_does_not_hold_up_the_lock_holders_index_build() {
    let pg = common::PgDatabase::create().await;
    let holder = client(&pg.url).await;
    holder
        .batch_execute("CREATE TABLE probe (a int); INSERT INTO probe VALUES (1), (2)")
        .await
        .unwrap();
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // The lock holder: the migration lock taken in a transaction left idle,
    // as a migrator's no-transaction step leaves it while its build runs.
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
        ))
        .await
        .unwrap();
    let config = persist::Config::from_url(&pg.url)
        .unwrap()
        .with_migration_lock_timeout(std::time::Duration::from_secs(60));
    let db = persist::open(&config).await.unwrap();
    let waiter = tokio::spawn(async move {
        let report = db.migrate().await;
        db.close().await;
        report
    });
    // Until the migrator is waiting for the lock.
    let watch = client(&pg.url).await;
    // Backends of the migrator (its connections are named "persist", the
    // test's are not) that have tried for the lock; with `$2`, those in a
    // transaction that began at or before it.
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = 'persist' AND pid <> $1 \
         AND (query LIKE '%advisory_xact_lock(%' OR query = 'ROLLBACK') \
         AND ($2::float8 IS NULL OR extract(epoch FROM xact_start)::float8 <= $2)";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let none: Option<f64> = None;
        let n: i64 = watch
            .query_one(waiting, &[&holder_pid, &none])
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the migrator never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A second later (tries are at most 250 ms apart), no transaction of
    // the waiter's began before it was first seen waiting.
    let seen: f64 = watch
        .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    for _ in 0..10 {
        let old: i64 = watch
            .query_one(waiting, &[&holder_pid, &Some(seen)])
            .await
            .unwrap()
            .get(0);
        assert_eq!(old, 0, "the waiter kept a transaction open between tries");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The holder's build, on a third connection: it completes while the
    // migrator still waits (bounded here so a regression fails, not hangs).
    let build = client(&pg.url).await;
    build
        .batch_execute("SET statement_timeout = 15000")
        .await
        .unwrap();
    let built = build
        .batch_execute("CREATE INDEX CONCURRENTLY probe_a ON probe (a)")
        .await;
    assert!(
        built.is_ok(),
        "the index build waited for the migrator: {built:?}"
    );
    assert_eq!(index_valid(&build, "probe_a").await, Some(true));
    assert!(
        !waiter.is_finished(),
        "the migrator did not wait for the lock"
    );
    // Released: the migrator applies every shipped migration.
    holder.batch_execute("COMMIT").await.unwrap();
    let report = waiter.await.unwrap().unwrap();
    let shipped = Migrations::embedded(BackendKind::Postgres).unwrap();
    assert_eq!(
        report.applied.iter().map(|a| a.version).collect::<Vec<_>>(),
        (1..=shipped.latest_version()).collect::<Vec<_>>()
    );
}
