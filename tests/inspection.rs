//! The tools must not lie about or touch what they inspect, and the files
//! they create are private: run as a user would, the real binary against
//! real SQLite files and a real PostgreSQL database.
//!
//! - new SQLite files (database, `-wal`, `-shm`, `copy` targets) are 0600;
//!   an existing file's mode is kept, with a warning when others can read it;
//! - `status`, `ping` and `verify` never create a file nor change its journal
//!   mode, and still read a database in a read-only directory;
//! - `migrate` refuses another application's SQLite file and another
//!   migration tool's `schema_migrations` (naming the tool), on both backends;
//! - `verify` on a damaged file exits 6 with the integrity findings, and
//!   `status` says the file is damaged.

mod common;

use common::persist_cli as persist;

use common::{assert_exit, create_private_file, stderr, stdout, Backend};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_persist");

fn url_of(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn side(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sqlite_files_are_owner_only_and_existing_modes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    assert_exit(&persist(&url_of(&db), &["migrate"]), 0, "migrate");
    assert_eq!(mode(&db), 0o600, "database file");

    // While a handle writes, the -wal and -shm files exist: owner-only too.
    let h = persist::open(&persist::Config::from_url(&url_of(&db)).unwrap())
        .await
        .unwrap();
    let new = persist::NewAccount {
        email: "ada@example.com",
        username: "ada",
        pass_hash: b"h",
        created_at: 1,
    };
    common::fixtures::register(&h, &new).await.unwrap();
    for suffix in ["-wal", "-shm"] {
        assert_eq!(mode(&side(&db, suffix)), 0o600, "{suffix}");
    }
    h.close().await;

    // A SQLite target of copy.
    let target = dir.path().join("copy.db");
    let o = Command::new(BIN)
        .env_remove("DATABASE_URL")
        .args(["copy", "--from", &url_of(&db), "--to", &url_of(&target)])
        .output()
        .unwrap();
    assert_exit(&o, 0, "copy");
    assert_eq!(mode(&target), 0o600, "copy target");

    // An existing file readable by others: left alone, with a warning.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = persist(&url_of(&db), &["migrate"]);
    assert_exit(&o, 0, "migrate an existing 0644 file");
    assert!(
        stderr(&o).contains("readable by other users"),
        "{}",
        stderr(&o)
    );
    assert_eq!(mode(&db), 0o644);
}

/// Another application's SQLite file: a table of its own, rollback journal.
fn foreign_sqlite_file(dir: &Path) -> PathBuf {
    let path = dir.join("other-app.db");
    create_private_file(&path);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = DELETE;
         CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO notes (body) VALUES ('keep me');",
    )
    .unwrap();
    path
}

fn journal_mode(path: &Path) -> String {
    rusqlite::Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap()
}

#[test]
fn read_only_commands_never_create_or_change_a_file() {
    let dir = tempfile::tempdir().unwrap();
    // A mistyped path: one clear error, nothing created.
    let missing = dir.path().join("typo.db");
    for args in [
        &["status"][..],
        &["ping"],
        &["verify"],
        &["status", "--json"],
    ] {
        let o = persist(&url_of(&missing), args);
        assert_exit(&o, 1, &format!("{args:?} on a missing file"));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("typo.db does not exist"), "{err}");
        assert!(!missing.exists(), "{args:?} created the file");
    }

    // Another application's file: read, never switched to WAL, unchanged.
    let other = foreign_sqlite_file(dir.path());
    let before = std::fs::read(&other).unwrap();
    assert_exit(&persist(&url_of(&other), &["status"]), 3, "status");
    assert_exit(&persist(&url_of(&other), &["ping"]), 0, "ping");
    assert_exit(&persist(&url_of(&other), &["verify"]), 6, "verify");
    assert_eq!(journal_mode(&other), "delete");
    assert!(std::fs::read(&other).unwrap() == before, "the file changed");
    assert!(!side(&other, "-wal").exists());

    // migrate refuses to add persist's tables to it.
    let o = persist(&url_of(&other), &["migrate"]);
    assert_exit(&o, 1, "migrate another application's file");
    let err = stderr(&o);
    assert!(err.contains("not a persist database"), "{err}");
    assert!(err.contains("notes"), "{err}");
    assert!(
        std::fs::read(&other).unwrap() == before,
        "migrate changed it"
    );
}

/// Runs `persist` as an unprivileged user when this runs as root (root
/// ignores directory permissions), else as the current user.
fn persist_unprivileged(url: &str, args: &[&str]) -> Output {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut c = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    c.env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .args(["--database-url", url])
        .args(args)
        .output()
        .expect("run persist")
}

#[test]
fn a_database_in_a_read_only_directory_can_be_inspected() {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("game.db");
    assert_exit(&persist(&url_of(&db), &["migrate"]), 0, "migrate");
    assert!(!side(&db, "-wal").exists() && !side(&db, "-shm").exists());
    // Readable (not writable) by the inspecting user, in a directory it
    // cannot write to.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    for d in [top.path(), dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let url = url_of(&db);
    let status = persist_unprivileged(&url, &["status"]);
    let ping = persist_unprivileged(&url, &["ping"]);
    let verify = persist_unprivileged(&url, &["verify"]);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_exit(&status, 0, "status in a read-only directory");
    assert_exit(&ping, 0, "ping in a read-only directory");
    assert_exit(&verify, 0, "verify in a read-only directory");
    let out = stdout(&verify);
    assert!(out.lines().last().unwrap().starts_with("ok:"), "{out}");
}

/// Damages the b-tree page of `table`: `cells` claims that many cells (at
/// offset 0, out of range); `None` overwrites the whole page with garbage.
fn damage(path: &Path, table: &str, cells: Option<u8>) {
    let (root, page_size): (i64, i64) = {
        let c = rusqlite::Connection::open(path).unwrap();
        let root = c
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        let size = c
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        (root, size)
    };
    let mut bytes = std::fs::read(path).unwrap();
    let start = usize::try_from((root - 1) * page_size).unwrap();
    let end = start + usize::try_from(page_size).unwrap();
    match cells {
        Some(n) => bytes[start + 3..start + 5].copy_from_slice(&[0, n]),
        None => {
            for (i, b) in bytes[start..end].iter_mut().enumerate() {
                *b = u8::try_from(i % 251).unwrap() ^ 0xA5;
            }
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn migrated_file(dir: &Path, name: &str) -> (PathBuf, String) {
    let db = dir.join(name);
    let url = url_of(&db);
    assert_exit(&persist(&url, &["migrate"]), 0, "migrate");
    (db, url)
}

#[test]
fn verify_reports_a_damaged_file_and_status_notices_it() {
    let dir = tempfile::tempdir().unwrap();
    // Pages SQLite cannot even read (integrity_check itself fails), a table
    // whose cells are out of range, and a child table of accounts (read by
    // foreign_key_check): exit 6 with the findings, in text and JSON.
    for (table, cells) in [
        ("accounts", None),
        ("accounts", Some(9)),
        ("sessions", Some(9)),
    ] {
        let (db, url) = migrated_file(dir.path(), &format!("{table}-{cells:?}.db"));
        damage(&db, table, cells);
        let what = format!("verify, {table} damaged ({cells:?})");
        let o = persist(&url, &["verify"]);
        assert_exit(&o, 6, &what);
        let out = stdout(&o);
        let findings = out
            .lines()
            .find(|l| l.starts_with("integrity_check: "))
            .unwrap_or_else(|| panic!("{what}: no findings: {out} / {}", stderr(&o)));
        assert_ne!(findings, "integrity_check: ok");
        assert!(out.contains("malformed") || out.contains("page"), "{out}");

        let o = persist(&url, &["verify", "--json"]);
        assert_exit(&o, 6, &format!("{what} --json"));
        let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["ok"], false);
        let rows = v["integrity_check"].as_str().unwrap();
        assert_ne!(rows, "ok");
        assert_eq!(
            rows.lines().next(),
            findings
                .strip_prefix("integrity_check: ")
                .unwrap()
                .lines()
                .next()
        );
    }

    // status reads schema_migrations: when SQLite finds it damaged, status
    // says the file is damaged and what lists the findings.
    let (db, url) = migrated_file(dir.path(), "status.db");
    damage(&db, "schema_migrations", None);
    for args in [&["status"][..], &["status", "--json"]] {
        let o = persist(&url, args);
        assert_exit(&o, 1, "status on a damaged file");
        let err = stderr(&o);
        assert!(err.contains("database file is damaged"), "{err}");
        assert!(err.contains("persist verify"), "{err}");
    }
}

/// golang-migrate's history table, where persist keeps its own.
fn other_tools_table(backend: Backend) {
    let (url, _place) = backend.empty_blocking();
    let sql = "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)";
    match backend {
        Backend::Sqlite => {
            rusqlite::Connection::open(url.strip_prefix("sqlite://").unwrap())
                .unwrap()
                .execute_batch(sql)
                .unwrap();
        }
        Backend::Postgres => common::block_on(async {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute(sql).await.unwrap();
        }),
    }
    for args in [&["migrate"][..], &["status"], &["status", "--json"]] {
        let o = persist(&url, args);
        assert_exit(&o, 1, &format!("{args:?} over golang-migrate's table"));
        let err = stderr(&o);
        assert!(err.contains("golang-migrate"), "{err}");
        assert!(err.contains("not a persist database"), "{err}");
        assert!(!err.contains("does not exist"), "{err}");
    }
    // Nothing was added.
    let o = persist(&url, &["verify", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap_or(Value::Null);
    let missing_accounts = v["differences"]
        .as_array()
        .map(|d| {
            d.iter()
                .any(|x| x["object"] == "accounts" && x["kind"] == "missing_table")
        })
        .unwrap_or(false);
    assert!(missing_accounts, "{v}");
}

both_backends! {
    blocking other_tools_table,
}
