//! `persist verify`, run as a user would: the real binary against a real
//! SQLite file and a real PostgreSQL database. A freshly migrated database
//! exits 0; every hand edit (dropped index, added column, dropped table,
//! changed nullability, and more) is reported with exit 6, in text and JSON.

mod common;

use common::{assert_exit, stderr, stdout, Backend};

use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_persist");

fn verify(url: &str, json: bool) -> Output {
    verify_args(url, if json { &["--json"] } else { &[] })
}

fn verify_args(url: &str, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .arg("--database-url")
        .arg(url)
        .arg("verify")
        .args(args);
    c.output().expect("run persist")
}

/// `verify --json`: exit code and the parsed object, checked for the
/// documented fields.
fn verify_json(url: &str, code: i32, what: &str) -> Value {
    let o = verify(url, true);
    assert_exit(&o, code, what);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "one JSON line: {out:?}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let mut keys: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "backend",
            "database",
            "differences",
            "foreign_key_violations",
            "incomplete_copy",
            "integrity_check",
            "ok"
        ]
    );
    assert_eq!(v["ok"], Value::Bool(code == 0), "{what}");
    for d in v["differences"].as_array().expect("differences array") {
        let mut k: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        assert_eq!(k, ["detail", "kind", "object"]);
    }
    v
}

/// (kind, object) of every difference, in report order.
fn differences(v: &Value) -> Vec<(String, String)> {
    v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["object"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn detail_of(v: &Value, kind: &str, object: &str) -> String {
    v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == kind && d["object"] == object)
        .and_then(|d| d["detail"].as_str())
        .unwrap_or_else(|| panic!("no {kind} {object} in {v}"))
        .to_string()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Runs DDL/DML by hand, as an operator would with sqlite3 or psql.
async fn by_hand(kind: Backend, url: &str, sql: &str) {
    match kind {
        Backend::Sqlite => {
            let path = persist::Config::from_url(url)
                .unwrap()
                .sqlite_path()
                .unwrap()
                .to_path_buf();
            let c = rusqlite::Connection::open(path).unwrap();
            c.execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        Backend::Postgres => {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

/// Verifies a fresh database, then edits it by hand step by step; after each
/// step the full list of differences is exactly what was changed so far.
async fn hand_edits_are_reported(kind: Backend) {
    let t = kind.fresh().await;
    t.db.close().await;
    let url = t.url.clone();

    // Fresh: exit 0, in text and JSON.
    let o = verify(&url, false);
    assert_exit(&o, 0, "verify on a fresh database");
    let out = stdout(&o);
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("ok: the schema of "),
        "{out}"
    );
    let v = verify_json(&url, 0, "verify --json on a fresh database");
    assert_eq!(differences(&v), pairs(&[]));
    match kind {
        Backend::Sqlite => {
            assert_eq!(out.lines().count(), 3, "{out}");
            assert!(out.contains("integrity_check: ok\n"), "{out}");
            assert!(out.contains("foreign_key_check: ok\n"), "{out}");
            assert_eq!(v["backend"], "sqlite");
            assert_eq!(v["integrity_check"], "ok");
            assert_eq!(v["foreign_key_violations"], 0);
        }
        Backend::Postgres => {
            assert_eq!(out.lines().count(), 1, "{out}");
            assert_eq!(v["backend"], "postgres");
            assert!(v["integrity_check"].is_null());
            assert!(v["foreign_key_violations"].is_null());
        }
    }
    assert!(v["database"].as_str().unwrap().contains(match kind {
        Backend::Sqlite => "test.db",
        Backend::Postgres => t.url.rsplit('/').next().unwrap(),
    }));

    // 1. An index dropped.
    by_hand(kind, &url, "DROP INDEX sessions_expires_at_idx").await;
    let mut expected = vec![("missing_index", "sessions.sessions_expires_at_idx")];
    let v = verify_json(&url, 6, "after dropping an index");
    assert_eq!(differences(&v), pairs(&expected));
    assert_eq!(
        detail_of(&v, "missing_index", "sessions.sessions_expires_at_idx"),
        "expected index (expires_at)"
    );

    // 2. A column added.
    by_hand(kind, &url, "ALTER TABLE accounts ADD COLUMN nickname TEXT").await;
    expected.insert(0, ("extra_column", "accounts.nickname"));
    let v = verify_json(&url, 6, "after adding a column");
    assert_eq!(differences(&v), pairs(&expected));
    assert_eq!(
        detail_of(&v, "extra_column", "accounts.nickname"),
        match kind {
            Backend::Sqlite => "found TEXT NULL",
            Backend::Postgres => "found text NULL",
        }
    );

    // 3. A table dropped.
    by_hand(kind, &url, "DROP TABLE user_unlocks").await;
    expected.push(("missing_table", "user_unlocks"));
    let v = verify_json(&url, 6, "after dropping a table");
    assert_eq!(differences(&v), pairs(&expected));

    // 4. A column's nullability changed (SQLite: by rebuilding the table, the
    // only way it has).
    let nullable_xp = match kind {
        Backend::Sqlite => {
            "PRAGMA foreign_keys = OFF;
             BEGIN;
             CREATE TABLE progression_new (
                 user_id INTEGER NOT NULL PRIMARY KEY REFERENCES accounts (user_id) ON DELETE CASCADE,
                 level   INTEGER NOT NULL DEFAULT 0 CHECK (level BETWEEN 0 AND 2147483647),
                 xp      INTEGER DEFAULT 0 CHECK (xp >= 0),
                 version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1)
             ) STRICT;
             INSERT INTO progression_new SELECT * FROM progression;
             DROP TABLE progression;
             ALTER TABLE progression_new RENAME TO progression;
             COMMIT;"
        }
        Backend::Postgres => "ALTER TABLE progression ALTER COLUMN xp DROP NOT NULL",
    };
    by_hand(kind, &url, nullable_xp).await;
    expected.insert(1, ("changed_column", "progression.xp"));
    let v = verify_json(&url, 6, "after making a column nullable");
    assert_eq!(differences(&v), pairs(&expected));
    assert_eq!(
        detail_of(&v, "changed_column", "progression.xp"),
        "nullability: expected NOT NULL, found NULL"
    );

    // 5. An index added.
    by_hand(
        kind,
        &url,
        "CREATE INDEX accounts_created_at_idx ON accounts (created_at)",
    )
    .await;
    expected.insert(1, ("extra_index", "accounts.accounts_created_at_idx"));
    let v = verify_json(&url, 6, "after adding an index");
    assert_eq!(differences(&v), pairs(&expected));

    // 6. PostgreSQL: a CHECK constraint dropped, a foreign key's delete rule
    // changed, a column's type widened.
    if kind == Backend::Postgres {
        by_hand(
            kind,
            &url,
            "ALTER TABLE accounts DROP CONSTRAINT accounts_email_check;
             ALTER TABLE sessions DROP CONSTRAINT sessions_user_id_fkey,
               ADD CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id)
               REFERENCES accounts (user_id) ON DELETE RESTRICT;
             ALTER TABLE army_loadouts ALTER COLUMN item_1 TYPE bigint",
        )
        .await;
        expected = vec![
            ("extra_column", "accounts.nickname"),
            ("missing_check", "accounts.accounts_email_check"),
            ("extra_index", "accounts.accounts_created_at_idx"),
            ("changed_column", "army_loadouts.item_1"),
            ("changed_column", "progression.xp"),
            ("missing_foreign_key", "sessions(user_id)"),
            ("extra_foreign_key", "sessions(user_id)"),
            ("missing_index", "sessions.sessions_expires_at_idx"),
            ("missing_table", "user_unlocks"),
        ];
        let v = verify_json(&url, 6, "after more PostgreSQL edits");
        assert_eq!(differences(&v), pairs(&expected));
        // The scratch-schema mode finds the same differences, word for word.
        let o = verify_args(&url, &["--json", "--scratch"]);
        assert_exit(&o, 6, "verify --scratch after the edits");
        let scratch: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(scratch["differences"], v["differences"]);
        assert_eq!(
            detail_of(&v, "extra_foreign_key", "sessions(user_id)"),
            "found REFERENCES accounts (user_id) ON DELETE RESTRICT ON UPDATE NO ACTION"
        );
        assert_eq!(
            detail_of(&v, "changed_column", "army_loadouts.item_1"),
            "type: expected integer, found bigint"
        );
    }

    // The text form: one line per difference, in the same order, then the
    // integrity lines (SQLite) and the summary.
    let o = verify(&url, false);
    assert_exit(&o, 6, "verify (text) after the edits");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    for (i, (kind_name, object)) in expected.iter().enumerate() {
        assert!(
            lines[i].starts_with(&format!("{kind_name} {object}: ")),
            "line {i}: {:?} in {out}",
            lines[i]
        );
    }
    assert_eq!(
        *lines.last().unwrap(),
        format!(
            "mismatch: {} schema difference(s) in {}",
            expected.len(),
            v["database"].as_str().unwrap()
        )
    );
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));

    if kind == Backend::Postgres {
        assert_no_scratch_schema_left(&url).await;
    }
}

async fn assert_no_scratch_schema_left(url: &str) {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'persist\\_verify\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "scratch schemas left behind");
}

both_backends! {
    backend hand_edits_are_reported,
    backend unmigrated_databases_miss_every_table,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_foreign_key_violations_fail_verify_with_a_matching_schema() {
    let t = common::sqlite().await;
    t.db.close().await;
    // Foreign keys off, as a hand-run import might leave them.
    by_hand(
        Backend::Sqlite,
        &t.url,
        "PRAGMA foreign_keys = OFF;
         INSERT INTO progression (user_id, level, xp) VALUES (999, 1, 2);
         INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) VALUES (998, 1, 2), (998, 2, 2);",
    )
    .await;
    let v = verify_json(&t.url, 6, "verify with orphan rows");
    assert_eq!(differences(&v), pairs(&[]));
    assert_eq!(v["integrity_check"], "ok");
    assert_eq!(v["foreign_key_violations"], 3);
    let o = verify(&t.url, false);
    assert_exit(&o, 6, "verify (text) with orphan rows");
    let out = stdout(&o);
    assert!(
        out.contains("foreign_key_check: 3 violation(s) (progression: 1, user_unlocks: 2)\n"),
        "{out}"
    );
    assert_eq!(
        out.lines().last().unwrap(),
        format!(
            "mismatch: 0 schema difference(s) in {}, integrity check failed",
            v["database"].as_str().unwrap()
        )
    );
}

/// A new, empty database (SQLite: a new file) misses every table, and
/// (PostgreSQL) verify leaves no scratch schema behind.
async fn unmigrated_databases_miss_every_table(backend: Backend) {
    let (url, _place) = backend.empty().await;
    let v = verify_json(&url, 6, &format!("verify on an empty {backend:?} database"));
    let want = pairs(&[
        ("missing_table", "accounts"),
        ("missing_table", "army_loadouts"),
        ("missing_table", "battle_results"),
        ("missing_table", "progression"),
        ("missing_table", "schema_migrations"),
        ("missing_table", "sessions"),
        ("missing_table", "user_unlocks"),
    ]);
    assert_eq!(differences(&v), want);
    if backend == Backend::Postgres {
        assert_no_scratch_schema_left(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_an_error() {
    // Port 1: nothing listens; refused at once.
    let o = verify(
        "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable",
        true,
    );
    assert_exit(&o, 1, "verify on an unreachable server");
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
}
