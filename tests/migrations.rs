//! The migration runner, on both backends: fresh migrate and no-op re-run,
//! concurrent migrator processes, rollback of a failing migration, drift and
//! database-ahead refusal (library and CLI), CRLF-normalised checksums, status,
//! and caller-supplied sets that are malformed or of the wrong dialect.

mod common;

use common::{stderr, stdout};

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Backend, PgDatabase, Place};
use persist::{BackendKind, Config, Db, Error, Migration, MigrationState, Migrations};

const BIN: &str = env!("CARGO_BIN_EXE_persist");

/// The tables migration 0001 creates.
const CANON_TABLES: &[&str] = &[
    "accounts",
    "army_loadouts",
    "progression",
    "sessions",
    "user_unlocks",
];

/// The advisory lock key of the PostgreSQL migrator ("persist\0" as an i64).
const PG_LOCK_KEY: i64 = 0x7065_7273_6973_7400;

both_backends! {
    backend fresh_migrate_records_each_migration_and_rerun_is_a_noop,
    backend eight_concurrent_migrator_processes_apply_each_migration_once,
    backend failing_migration_rolls_back_schema_and_history,
    backend edited_migration_is_refused_and_changes_nothing,
    backend edited_migration_is_refused_by_cli_migrate_and_status,
    backend database_ahead_is_refused_by_migrate_and_status,
    backend crlf_checkout_is_not_drift,
    backend status_is_pending_on_fresh_db_then_applied,
    backend wrong_dialect_set_is_refused,
    backend migration_lock_wait_is_bounded_and_lock_is_freed,
    backend upgrade_from_0001_keeps_every_session_and_reaches_the_fresh_schema,
    backend upgrade_to_0003_recomputes_keys_and_refuses_collisions,
}

/// A fresh, empty, not migrated database of one backend.
struct Fresh {
    kind: Backend,
    url: String,
    _place: Place,
}

async fn fresh(kind: Backend) -> Fresh {
    match kind {
        Backend::Sqlite => {
            let (url, dir) = common::sqlite_url();
            Fresh {
                kind,
                url,
                _place: Place::Sqlite(dir),
            }
        }
        Backend::Postgres => {
            let pg = PgDatabase::create().await;
            Fresh {
                kind,
                url: pg.url.clone(),
                _place: Place::Postgres(pg),
            }
        }
    }
}

impl Fresh {
    fn config(&self) -> Config {
        Config::from_url(&self.url).expect("test URL parses")
    }

    async fn open(&self) -> Db {
        self.open_with(self.config()).await
    }

    async fn open_with(&self, config: Config) -> Db {
        persist::open(&config)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    async fn raw(&self) -> Raw {
        match self.kind {
            Backend::Sqlite => {
                let config = self.config();
                let path = config.sqlite_path().expect("file database");
                Raw::Sqlite(rusqlite::Connection::open(path).expect("raw sqlite connection"))
            }
            Backend::Postgres => {
                let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                    .await
                    .expect("raw postgres connection");
                tokio::spawn(conn);
                Raw::Postgres(client)
            }
        }
    }
}

/// A row of `schema_migrations`: (version, name, checksum, applied_at, execution_ms).
type Row = (i64, String, String, i64, i64);

/// A plain driver connection, beside the handle under test.
enum Raw {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl Raw {
    async fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(c) => c
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Raw::Postgres(c) => c
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// The user tables (SQLite internal tables excluded).
    async fn tables(&self) -> BTreeSet<String> {
        match self {
            Raw::Sqlite(c) => {
                let mut st = c
                    .prepare(
                        "SELECT name FROM sqlite_schema \
                         WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                    )
                    .unwrap();
                st.query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap()
            }
            Raw::Postgres(c) => c
                .query(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
        }
    }

    /// Every row of `schema_migrations`, in version order.
    async fn rows(&self) -> Vec<Row> {
        const SQL: &str = "SELECT version, name, checksum, applied_at, execution_ms \
                           FROM schema_migrations ORDER BY version";
        match self {
            Raw::Sqlite(c) => {
                let mut st = c.prepare(SQL).unwrap();
                st.query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
            }
            Raw::Postgres(c) => c
                .query(SQL, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect(),
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn embedded(kind: Backend) -> Migrations {
    Migrations::embedded(kind.dialect()).expect("shipped set is valid")
}

fn set(kind: Backend, list: Vec<Migration>) -> Migrations {
    Migrations::new(kind.dialect(), list).expect("valid set")
}

/// Runs the real binary against `url` (no `DATABASE_URL`, no `RUST_LOG`).
async fn cli(url: &str, args: &[&str]) -> Output {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("--database-url")
            .arg(&url)
            .args(&args)
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .output()
            .expect("run persist")
    })
    .await
    .unwrap()
}

/// Asserts that stderr is exactly one `error:` line, without panic or backtrace.
fn one_error_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr must be one line: {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err:?}"
    );
    lines[0].to_string()
}

// ---------------------------------------------------------------------------

async fn fresh_migrate_records_each_migration_and_rerun_is_a_noop(kind: Backend) {
    let f = fresh(kind).await;
    let db = f.open().await;
    let shipped = embedded(kind);

    let before = now();
    let report = db.migrate().await.expect("migrate");
    let after = now();
    let applied: Vec<(i64, &str)> = report
        .applied
        .iter()
        .map(|m| (m.version, m.name.as_str()))
        .collect();
    let expected: Vec<(i64, &str)> = shipped.iter().map(|m| (m.version(), m.name())).collect();
    assert_eq!(applied, expected);
    assert_eq!(applied[0], (1, "init"));
    assert_eq!(report.version, shipped.latest_version());

    let raw = f.raw().await;
    let rows = raw.rows().await;
    assert_eq!(rows.len(), shipped.iter().count());
    for (row, m) in rows.iter().zip(shipped.iter()) {
        let (version, name, checksum, applied_at, execution_ms) = row;
        assert_eq!(*version, m.version());
        assert_eq!(name, m.name());
        assert_eq!(checksum, m.checksum());
        assert_eq!(checksum.len(), 64, "hex SHA-256");
        assert!(
            (before..=after).contains(applied_at),
            "applied_at {applied_at} not in {before}..={after}"
        );
        assert!(*execution_ms >= 0, "execution_ms {execution_ms}");
    }
    let first = &rows[0];
    assert_eq!((first.0, first.1.as_str()), (1, "init"));
    assert_eq!(first.2, shipped.iter().next().unwrap().checksum());
    assert!(first.3 > 0);
    let tables = raw.tables().await;
    for t in CANON_TABLES.iter().chain(["schema_migrations"].iter()) {
        assert!(tables.contains(*t), "table {t} missing: {tables:?}");
    }

    // Re-run, on the same handle and on a new one: nothing applied, nothing changed.
    let again = db.migrate().await.expect("re-run");
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.version, shipped.latest_version());
    db.close().await;
    let db2 = f.open().await;
    let again = db2.migrate().await.expect("re-run on a new handle");
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(raw.rows().await, rows);
    assert_eq!(raw.tables().await, tables);
    db2.close().await;
}

async fn eight_concurrent_migrator_processes_apply_each_migration_once(kind: Backend) {
    let f = fresh(kind).await;
    let url = match kind {
        Backend::Sqlite => {
            let config = f.config();
            let path = config.sqlite_path().unwrap().to_path_buf();
            assert!(!path.exists(), "the SQLite file must not exist beforehand");
            // Created concurrently by the migrators themselves.
            f.url.clone()
        }
        Backend::Postgres => f.url.clone(),
    };
    let outputs = tokio::task::spawn_blocking(move || common::concurrent_migrators(&url, 8))
        .await
        .unwrap();

    let shipped = embedded(kind);
    for (i, o) in outputs.iter().enumerate() {
        assert_eq!(
            o.status.code(),
            Some(0),
            "migrator {i} failed: stdout {:?} stderr {:?}",
            stdout(o),
            stderr(o)
        );
        assert!(
            stdout(o).contains(&format!("schema at version {}", shipped.latest_version())),
            "{}",
            stdout(o)
        );
    }
    // Each migration was applied by exactly one of the processes.
    for m in shipped.iter() {
        let line = format!("applied {:04}_{} (", m.version(), m.name());
        let count: usize = outputs
            .iter()
            .map(|o| stdout(o).lines().filter(|l| l.starts_with(&line)).count())
            .sum();
        assert_eq!(count, 1, "{line:?} reported {count} times");
    }

    let raw = f.raw().await;
    let versions: Vec<i64> = raw.rows().await.iter().map(|r| r.0).collect();
    let expected: Vec<i64> = shipped.iter().map(|m| m.version()).collect();
    assert_eq!(versions, expected);
    let tables = raw.tables().await;
    for t in CANON_TABLES {
        assert!(tables.contains(*t), "table {t} missing: {tables:?}");
    }
    // And the database is usable through the library afterwards.
    let db = f.open().await;
    assert!(db.migrate().await.unwrap().applied.is_empty());
    let st = db.migration_status().await.unwrap();
    assert!(
        st.iter().all(|s| s.state == MigrationState::Applied),
        "{st:?}"
    );
    db.close().await;
}

async fn failing_migration_rolls_back_schema_and_history(kind: Backend) {
    let f = fresh(kind).await;
    let db = f.open().await;
    let v1 = Migration::new(1, "first", "CREATE TABLE first_t (a INT);");
    let bad = set(
        kind,
        vec![
            v1.clone(),
            Migration::new(
                2,
                "bad",
                "CREATE TABLE ok_t (x INT); SELECT * FROM no_such_table;",
            ),
        ],
    );

    let err = db.migrate_with(&bad).await.unwrap_err();
    let msg = err.to_string();
    match err {
        Error::MigrationFailed {
            version,
            file,
            message,
            ..
        } => {
            assert_eq!(version, 2);
            assert_eq!(file, "0002_bad.sql");
            assert!(message.contains("no_such_table"), "{message}");
            // Both backends name the failing statement, not the file's text.
            assert!(
                message.starts_with("statement 2 (SELECT * FROM no_such_table): "),
                "{message}"
            );
            assert!(!message.contains("CREATE TABLE ok_t"), "{message}");
        }
        other => panic!("expected MigrationFailed, got {other:?}"),
    }
    assert!(
        msg.contains("0002_bad.sql") && msg.contains("no_such_table"),
        "{msg}"
    );

    // Migration 1 committed; migration 2 left no trace: ok_t absent, no row.
    let raw = f.raw().await;
    let expected_tables: BTreeSet<String> = ["first_t", "schema_migrations"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(raw.tables().await, expected_tables);
    let rows = raw.rows().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].0, rows[0].1.as_str(), rows[0].2.as_str()),
        (1, "first", v1.checksum())
    );

    // Running it again fails the same way and still changes nothing.
    let err = db.migrate_with(&bad).await.unwrap_err();
    assert!(
        matches!(&err, Error::MigrationFailed { version: 2, file, .. } if file == "0002_bad.sql"),
        "{err:?}"
    );
    assert_eq!(raw.tables().await, expected_tables);
    assert_eq!(raw.rows().await, rows);

    // Status: 1 applied, 2 still pending.
    let st = db.migration_status_with(&bad).await.unwrap();
    let states: Vec<(i64, MigrationState)> = st.iter().map(|s| (s.version, s.state)).collect();
    assert_eq!(
        states,
        [(1, MigrationState::Applied), (2, MigrationState::Pending)]
    );
    db.close().await;
}

async fn edited_migration_is_refused_and_changes_nothing(kind: Backend) {
    let f = fresh(kind).await;
    let db = f.open().await;
    let a = set(
        kind,
        vec![Migration::new(1, "one", "CREATE TABLE t1 (a INT);")],
    );
    let report = db.migrate_with(&a).await.unwrap();
    assert_eq!(report.applied.len(), 1);
    let raw = f.raw().await;
    let rows = raw.rows().await;
    let tables = raw.tables().await;

    let b = set(
        kind,
        vec![
            Migration::new(1, "one", "CREATE TABLE t1 (a INT, b INT);"),
            Migration::new(2, "two", "CREATE TABLE t2 (a INT);"),
        ],
    );
    let err = db.migrate_with(&b).await.unwrap_err();
    assert!(
        matches!(&err, Error::MigrationDrift { versions } if versions == &[1]),
        "{err:?}"
    );
    assert!(err.to_string().contains("0001"), "{err}");
    // Nothing changed: B's migration 2 not applied, history as it was.
    assert_eq!(raw.tables().await, tables);
    assert!(!tables.contains("t2"));
    assert_eq!(raw.rows().await, rows);

    let st = db.migration_status_with(&b).await.unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(
        (st[0].version, st[0].state, st[0].applied_at),
        (1, MigrationState::Drifted, Some(rows[0].3))
    );
    assert_eq!(
        (st[1].version, st[1].state, st[1].applied_at),
        (2, MigrationState::Pending, None)
    );
    // The original set still reads as applied.
    let st = db.migration_status_with(&a).await.unwrap();
    assert_eq!(st[0].state, MigrationState::Applied);
    db.close().await;
}

async fn edited_migration_is_refused_by_cli_migrate_and_status(kind: Backend) {
    let f = fresh(kind).await;
    let o = cli(&f.url, &["migrate"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let raw = f.raw().await;
    raw.exec("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        .await;
    let rows = raw.rows().await;
    let tables = raw.tables().await;

    let o = cli(&f.url, &["migrate"]).await;
    assert_eq!(o.status.code(), Some(4), "migrate on drift: {}", stderr(&o));
    let line = one_error_line(&o);
    assert!(line.contains("0001"), "{line}");

    let o = cli(&f.url, &["status"]).await;
    assert_eq!(o.status.code(), Some(4), "status on drift: {}", stderr(&o));
    let line = one_error_line(&o);
    assert!(line.contains("0001"), "{line}");
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("0001") && l.contains("init") && l.contains("drifted")),
        "{out}"
    );

    assert_eq!(raw.rows().await, rows);
    assert_eq!(raw.tables().await, tables);
    let db = f.open().await;
    let err = db.migrate().await.unwrap_err();
    assert!(
        matches!(&err, Error::MigrationDrift { versions } if versions == &[1]),
        "{err:?}"
    );
    db.close().await;
}

async fn database_ahead_is_refused_by_migrate_and_status(kind: Backend) {
    let f = fresh(kind).await;
    let db = f.open().await;
    db.migrate().await.unwrap();
    let raw = f.raw().await;
    raw.exec(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at, execution_ms) \
         VALUES (99, 'future', 'x', 1700000000, 0)",
    )
    .await;
    let rows = raw.rows().await;
    let tables = raw.tables().await;

    let err = db.migrate().await.unwrap_err();
    assert!(
        matches!(&err, Error::DatabaseAhead { versions } if versions == &[99]),
        "{err:?}"
    );
    assert!(err.to_string().contains("0099"), "{err}");
    let st = db.migration_status().await.unwrap();
    let last = st.last().unwrap();
    assert_eq!(
        (
            last.version,
            last.name.as_str(),
            last.state,
            last.applied_at
        ),
        (99, "future", MigrationState::Unknown, Some(1_700_000_000))
    );
    assert!(st[..st.len() - 1]
        .iter()
        .all(|s| s.state == MigrationState::Applied));
    db.close().await;

    let o = cli(&f.url, &["status"]).await;
    assert_eq!(
        o.status.code(),
        Some(5),
        "status when ahead: {}",
        stderr(&o)
    );
    let line = one_error_line(&o);
    assert!(line.contains("0099"), "{line}");
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("0099") && l.contains("future") && l.contains("unknown")),
        "{out}"
    );

    let o = cli(&f.url, &["migrate"]).await;
    assert_eq!(
        o.status.code(),
        Some(5),
        "migrate when ahead: {}",
        stderr(&o)
    );
    let line = one_error_line(&o);
    assert!(line.contains("0099"), "{line}");

    assert_eq!(raw.rows().await, rows);
    assert_eq!(raw.tables().await, tables);
}

async fn crlf_checkout_is_not_drift(kind: Backend) {
    let f = fresh(kind).await;
    let db = f.open().await;
    let crlf = Migration::new(
        1,
        "init",
        "CREATE TABLE t (a INT);\r\nCREATE TABLE u (b INT);\r\n",
    );
    let lf = Migration::new(
        1,
        "init",
        "CREATE TABLE t (a INT);\nCREATE TABLE u (b INT);\n",
    );
    assert_eq!(crlf.checksum(), lf.checksum());
    assert_ne!(
        lf.checksum(),
        Migration::new(
            1,
            "init",
            "CREATE TABLE t (a INT);\nCREATE TABLE u (c INT);\n"
        )
        .checksum(),
        "content changes must change the checksum"
    );

    let report = db.migrate_with(&set(kind, vec![crlf])).await.unwrap();
    assert_eq!(report.applied.len(), 1);
    let raw = f.raw().await;
    let rows = raw.rows().await;
    assert_eq!(rows[0].2, lf.checksum());

    let lf_set = set(kind, vec![lf]);
    let report = db.migrate_with(&lf_set).await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(raw.rows().await, rows);
    let st = db.migration_status_with(&lf_set).await.unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].state, MigrationState::Applied);
    db.close().await;
}

async fn status_is_pending_on_fresh_db_then_applied(kind: Backend) {
    let f = fresh(kind).await;
    let db = f.open().await;
    let shipped = embedded(kind);

    let st = db.migration_status().await.unwrap();
    let expected: Vec<(i64, &str)> = shipped.iter().map(|m| (m.version(), m.name())).collect();
    assert_eq!(
        st.iter()
            .map(|s| (s.version, s.name.as_str()))
            .collect::<Vec<_>>(),
        expected
    );
    for s in &st {
        assert_eq!(
            (s.state, s.applied_at),
            (MigrationState::Pending, None),
            "{s:?}"
        );
    }
    // Status changes nothing: not even the version table is created.
    assert!(!f.raw().await.tables().await.contains("schema_migrations"));

    db.migrate().await.unwrap();
    let rows = f.raw().await.rows().await;
    let st = db.migration_status().await.unwrap();
    assert_eq!(st.len(), expected.len());
    for (s, row) in st.iter().zip(&rows) {
        assert_eq!(s.version, row.0);
        assert_eq!(
            (s.state, s.applied_at),
            (MigrationState::Applied, Some(row.3))
        );
    }
    db.close().await;
}

async fn wrong_dialect_set_is_refused(kind: Backend) {
    let f = fresh(kind).await;
    let db = f.open().await;
    let other = match kind {
        Backend::Sqlite => BackendKind::Postgres,
        Backend::Postgres => BackendKind::Sqlite,
    };
    let wrong = Migrations::new(
        other,
        vec![Migration::new(1, "x", "CREATE TABLE x (a INT);")],
    )
    .unwrap();
    let err = db.migrate_with(&wrong).await.unwrap_err();
    assert!(matches!(err, Error::InvalidMigrations(_)), "{err:?}");
    let err = db.migration_status_with(&wrong).await.unwrap_err();
    assert!(matches!(err, Error::InvalidMigrations(_)), "{err:?}");
    let embedded_other = Migrations::embedded(other).unwrap();
    let err = db.migrate_with(&embedded_other).await.unwrap_err();
    assert!(matches!(err, Error::InvalidMigrations(_)), "{err:?}");
    // Nothing was created.
    assert!(f.raw().await.tables().await.is_empty());
    db.close().await;
}

async fn migration_lock_wait_is_bounded_and_lock_is_freed(kind: Backend) {
    let f = fresh(kind).await;
    let bound = Duration::from_millis(500);
    let db = f
        .open_with(f.config().with_migration_lock_timeout(bound))
        .await;
    // Another migrator (a plain connection) holds the lock.
    let holder = f.raw().await;
    match kind {
        Backend::Sqlite => holder.exec("BEGIN IMMEDIATE").await,
        Backend::Postgres => {
            holder
                .exec(&format!("SELECT pg_advisory_lock({PG_LOCK_KEY})"))
                .await
        }
    }
    let start = Instant::now();
    let err = db.migrate().await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        elapsed >= bound,
        "gave up after {elapsed:?}, before the bound"
    );
    assert!(
        elapsed < bound + Duration::from_secs(5),
        "waited {elapsed:?}"
    );
    // The holder goes away (its connection closes, as when a process dies):
    // the lock is freed and migrating works.
    drop(holder);
    db.close().await;
    let db = f.open().await;
    let report = db.migrate().await.unwrap();
    assert_eq!(report.applied.len(), embedded(kind).iter().count());
    db.close().await;
}

// ---------------------------------------------------------------------------
// The shipped set itself (no database).

#[test]
fn shipped_sets_match_across_dialects_and_the_files_on_disk() {
    let names = |s: &Migrations| {
        s.iter()
            .map(|m| (m.version(), m.name().to_string()))
            .collect::<Vec<_>>()
    };
    let lite = Migrations::embedded(BackendKind::Sqlite).unwrap();
    let pg = Migrations::embedded(BackendKind::Postgres).unwrap();
    assert_eq!(names(&lite), names(&pg));
    assert_eq!(
        lite.iter().next().map(|m| m.file_name()).as_deref(),
        Some("0001_init.sql")
    );
    for (dialect, s) in [("sqlite", &lite), ("postgres", &pg)] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let shipped: Vec<String> = s.iter().map(|m| m.file_name()).collect();
        assert_eq!(files, shipped, "{dialect}");
        for m in s.iter() {
            let on_disk = std::fs::read_to_string(dir.join(m.file_name())).unwrap();
            assert_eq!(m.sql(), on_disk);
            assert_eq!(m.checksum(), Migration::new(1, "x", on_disk).checksum());
        }
    }
}

#[test]
fn gaps_duplicates_and_bad_versions_are_refused_naming_them() {
    let m = |v: i64| Migration::new(v, format!("m{v}"), "SELECT 1;");
    let msg = |list: Vec<Migration>| match Migrations::new(BackendKind::Sqlite, list) {
        Err(Error::InvalidMigrations(msg)) => msg,
        other => panic!("expected InvalidMigrations, got {other:?}"),
    };
    assert!(msg(vec![m(1), m(3)]).contains("0002"));
    assert!(msg(vec![m(2)]).contains("0001"));
    assert!(msg(vec![m(1), m(2), m(2)]).contains("0002"));
    assert!(msg(vec![m(0), m(1)]).contains("below 1"));
    let ok = Migrations::new(BackendKind::Postgres, vec![m(2), m(1)]).unwrap();
    assert_eq!(ok.iter().map(|m| m.version()).collect::<Vec<_>>(), [1, 2]);
}

/// A session token for the upgrade test (the 22-character floor applies).
fn upgrade_token(i: impl std::fmt::Display, j: impl std::fmt::Display) -> String {
    format!("upgrade-session-token-{i}-{j}")
}

/// A database at 0001 with sessions in it, upgraded by `migrate()`: every
/// session is still found by its token with the same values, the rest of the
/// data is intact, cascades and the sweep still work, and the schema equals
/// the one a fresh database migrates to (on SQLite: `sessions` is now
/// WITHOUT ROWID).
async fn upgrade_from_0001_keeps_every_session_and_reaches_the_fresh_schema(kind: Backend) {
    let f = fresh(kind).await;
    let db = f.open().await;
    let first: Vec<Migration> = embedded(kind).iter().take(1).cloned().collect();
    assert_eq!(first[0].version(), 1);
    db.migrate_with(&set(kind, first)).await.unwrap();
    let mut users = Vec::new();
    for i in 0..3 {
        let a = db
            .accounts()
            .create(&persist::NewAccount {
                email: &format!("up{i}@example.com"),
                username: &format!("up{i}"),
                pass_hash: b"hash",
                created_at: 100,
            })
            .await
            .unwrap();
        for j in 0..4 {
            db.sessions()
                .create(&upgrade_token(i, j), a.user_id, 100 + j, 200 + 100 * j)
                .await
                .unwrap();
        }
        db.unlocks().grant(a.user_id, 7, 150).await.unwrap();
        users.push(a.user_id);
    }
    let before: Vec<_> = {
        let mut v = Vec::new();
        for u in &users {
            v.push(db.sessions().list_for_user(*u).await.unwrap());
        }
        v
    };

    let report = db.migrate().await.unwrap();
    assert_eq!(
        report.applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        (2..=embedded(kind).latest_version()).collect::<Vec<_>>()
    );
    for (i, u) in users.iter().enumerate() {
        assert_eq!(db.sessions().list_for_user(*u).await.unwrap(), before[i]);
        for j in 0..4 {
            let s = db
                .sessions()
                .find_by_token(&upgrade_token(i, j))
                .await
                .unwrap();
            assert_eq!(
                (s.user_id, s.created_at, s.expires_at),
                (*u, 100 + j, 200 + 100 * j)
            );
        }
        assert!(db.unlocks().has(*u, 7).await.unwrap());
    }
    // The sweep (expires_at <= 300: two sessions per user) and the cascade.
    assert_eq!(db.sessions().delete_expired(300, 1).await.unwrap(), 6);
    db.accounts().delete(users[0]).await.unwrap();
    assert!(db
        .sessions()
        .list_for_user(users[0])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.sessions().list_for_user(users[1]).await.unwrap().len(),
        2
    );

    let upgraded = persist::read_schema(&db).await.unwrap();
    let g = fresh(kind).await;
    let clean = g.open().await;
    clean.migrate().await.unwrap();
    assert_eq!(upgraded, persist::read_schema(&clean).await.unwrap());
    if kind == Backend::Sqlite {
        assert!(
            upgraded.tables["sessions"]
                .options
                .contains("WITHOUT ROWID"),
            "{:?}",
            upgraded.tables["sessions"].options
        );
    }
    clean.close().await;
    db.close().await;
}

/// (user_id, email_key, username_key) of every account, read raw.
async fn stored_keys(raw: &Raw) -> Vec<(i64, String, String)> {
    const SQL: &str = "SELECT user_id, email_key, username_key FROM accounts ORDER BY user_id";
    match raw {
        Raw::Sqlite(c) => {
            let mut st = c.prepare(SQL).unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        }
        Raw::Postgres(c) => c
            .query(SQL, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
    }
}

/// A database at 0002 holding keys computed the old way (invisible characters
/// kept), upgraded to 0003: conflicts are refused, naming every pair and the
/// empty key, changing nothing; once they are resolved through the API, the
/// upgrade recomputes every key and the schema equals a fresh one.
async fn upgrade_to_0003_recomputes_keys_and_refuses_collisions(kind: Backend) {
    let f = fresh(kind).await;
    let db = f.open().await;
    let first_two: Vec<Migration> = embedded(kind).iter().take(2).cloned().collect();
    assert_eq!(first_two[1].version(), 2);
    db.migrate_with(&set(kind, first_two)).await.unwrap();
    assert!(
        embedded(kind).iter().any(|m| m.version() == 3),
        "0003 is shipped"
    );
    let hash = match kind {
        Backend::Sqlite => "X'01'",
        Backend::Postgres => "'\\x01'::bytea",
    };
    // Rows as the old key function stored them: invisible characters kept.
    let rows = [
        (1, "ada@example.com", "ada@example.com", "Ada", "ada"),
        (
            2,
            "a\u{200b}da@example.com",
            "a\u{200b}da@example.com",
            "ADA\u{200b}",
            "ada\u{200b}",
        ),
        (
            3,
            "bob@example.com",
            "bob@example.com",
            "Bo\u{ad}b",
            "bo\u{ad}b",
        ),
        (
            4,
            "zed@example.com",
            "zed@example.com",
            "\u{feff}",
            "\u{feff}",
        ),
        (5, "cy@example.com", "cy@example.com", "cy", "cy"),
    ];
    let raw = f.raw().await;
    for (id, email, email_key, username, username_key) in rows {
        raw.exec(&format!(
            "INSERT INTO accounts (user_id, email, email_key, username, username_key, \
             pass_hash, created_at) VALUES ({id}, '{email}', '{email_key}', '{username}', \
             '{username_key}', {hash}, 100)"
        ))
        .await;
    }
    if kind == Backend::Postgres {
        // Explicit ids leave the identity behind; move it past them.
        raw.exec("SELECT setval(pg_get_serial_sequence('accounts', 'user_id'), 5)")
            .await;
    }
    let before = stored_keys(&raw).await;

    let err = db.migrate().await.unwrap_err();
    let Error::MigrationFailed {
        version, message, ..
    } = &err
    else {
        panic!("expected MigrationFailed, got {err:?}");
    };
    assert_eq!(*version, 3);
    for part in [
        "found 3 conflict(s)",
        "accounts 1, 2 would have the same email",
        "accounts 1, 2 would have the same username",
        "the username of account 4 has no character left",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    // Nothing changed: not the keys, not the history.
    assert_eq!(stored_keys(&raw).await, before);
    let versions: Vec<i64> = raw.rows().await.iter().map(|r| r.0).collect();
    assert_eq!(versions, [1, 2]);
    let st = db.migration_status().await.unwrap();
    assert_eq!(st[2].state, MigrationState::Pending);

    // Resolve through the API (the new rules apply), then upgrade.
    db.accounts()
        .update_email(persist::UserId(2), "ada.two@example.com")
        .await
        .unwrap();
    db.accounts()
        .update_username(persist::UserId(2), "ada2")
        .await
        .unwrap();
    db.accounts().delete(persist::UserId(4)).await.unwrap();
    let report = db.migrate().await.unwrap();
    assert_eq!(
        report.applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        (3..=embedded(kind).latest_version()).collect::<Vec<_>>()
    );
    let after = stored_keys(&raw).await;
    for (id, email_key, username_key) in &after {
        let a = db.accounts().get(persist::UserId(*id)).await.unwrap();
        assert_eq!(email_key, &persist::canonical_key(&a.email), "{id}");
        assert_eq!(username_key, &persist::canonical_key(&a.username), "{id}");
    }
    assert_eq!(
        after
            .iter()
            .map(|r| (r.0, r.2.as_str()))
            .collect::<Vec<_>>(),
        [(1, "ada"), (2, "ada2"), (3, "bob"), (5, "cy")]
    );
    // The old look-alike is now the same name.
    assert_eq!(
        db.accounts()
            .find_by_username("bob")
            .await
            .unwrap()
            .user_id
            .0,
        3
    );
    assert!(matches!(
        db.accounts()
            .create(&persist::NewAccount {
                email: "new@example.com",
                username: "BOB",
                pass_hash: b"h",
                created_at: 1,
            })
            .await,
        Err(Error::Conflict(persist::UniqueKey::Username))
    ));
    // Re-running is a no-op; the schema is the fresh one.
    assert!(db.migrate().await.unwrap().applied.is_empty());
    let upgraded = persist::read_schema(&db).await.unwrap();
    let g = fresh(kind).await;
    let clean = g.open().await;
    clean.migrate().await.unwrap();
    assert_eq!(upgraded, persist::read_schema(&clean).await.unwrap());
    clean.close().await;
    db.close().await;
}
