//! `persist status --json`, run as a user would: one JSON object with the
//! documented fields and states, and the same exit codes as the table (0 up
//! to date, 3 pending, 4 drift, 5 ahead, 1 error), on a real SQLite file and
//! a real PostgreSQL database.

mod common;

use common::persist_cli as persist;

use common::{assert_exit, stderr, stdout};

use std::collections::BTreeSet;

use common::{Backend, PgDatabase};
use persist::{BackendKind, Migrations};
use serde_json::Value;

/// The documented top-level fields.
const FIELDS: [&str; 8] = [
    "backend",
    "url",
    "status",
    "up_to_date",
    "schema_version",
    "latest_version",
    "migrations",
    "health",
];
/// The documented fields of each migration.
const MIGRATION_FIELDS: [&str; 4] = ["version", "name", "state", "applied_at"];

/// `status --json`: exactly one line of stdout holding one object with
/// exactly the documented fields, of the documented types.
fn status_json(url: &str, code: i32, what: &str) -> (Value, String) {
    let o = persist(url, &["status", "--json"]);
    assert_exit(&o, code, what);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let obj = v.as_object().unwrap();
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, FIELDS.into_iter().collect(), "{out}");
    assert!(v["backend"].is_string() && v["url"].is_string() && v["status"].is_string());
    assert!(v["up_to_date"].is_boolean());
    // The health check: live, and ready exactly when up to date.
    assert_eq!(v["health"]["live"], Value::Bool(true), "{out}");
    assert_eq!(v["health"]["ready"], v["up_to_date"], "{out}");
    assert!(v["schema_version"].is_i64() && v["latest_version"].is_i64());
    for m in v["migrations"].as_array().unwrap() {
        let keys: BTreeSet<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, MIGRATION_FIELDS.into_iter().collect(), "{out}");
        assert!(m["version"].is_i64() && m["name"].is_string() && m["state"].is_string());
        assert!(m["applied_at"].is_i64() || m["applied_at"].is_null());
    }
    (v, stderr(&o))
}

/// (version, name, state) of every migration in the JSON.
fn states(v: &Value) -> Vec<(i64, String, String)> {
    v["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["version"].as_i64().unwrap(),
                m["name"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn shipped(dialect: BackendKind) -> Vec<(i64, String)> {
    Migrations::embedded(dialect)
        .unwrap()
        .iter()
        .map(|m| (m.version(), m.name().to_string()))
        .collect()
}

fn with_state(list: &[(i64, String)], state: &str) -> Vec<(i64, String, String)> {
    list.iter()
        .map(|(v, n)| (*v, n.clone(), state.to_string()))
        .collect()
}

/// Fresh database: pending, exit 3; after `migrate`: up to date, exit 0.
fn fresh_then_migrated(backend: Backend) {
    let (url, _place) = backend.empty_blocking();
    let url = url.as_str();
    let list = shipped(backend.dialect());
    let latest = list.last().unwrap().0;

    let (v, err) = status_json(url, 3, "status --json on a fresh database");
    assert!(err.is_empty(), "{err}");
    assert_eq!(v["backend"], backend.name());
    assert_eq!(v["status"], "pending");
    assert_eq!(v["up_to_date"], false);
    assert_eq!(v["schema_version"], 0);
    assert_eq!(v["latest_version"], latest);
    assert_eq!(states(&v), with_state(&list, "pending"));
    for m in v["migrations"].as_array().unwrap() {
        assert!(m["applied_at"].is_null());
    }

    let o = persist(url, &["migrate"]);
    assert_exit(&o, 0, "migrate");

    let (v, err) = status_json(url, 0, "status --json after migrate");
    assert!(err.is_empty(), "{err}");
    assert_eq!(v["backend"], backend.name());
    assert_eq!(v["status"], "up_to_date");
    assert_eq!(v["up_to_date"], true);
    assert_eq!(v["schema_version"], latest);
    assert_eq!(v["latest_version"], latest);
    assert_eq!(states(&v), with_state(&list, "applied"));
    for m in v["migrations"].as_array().unwrap() {
        // Applied now, by the system clock (the one timestamp it takes).
        assert!(m["applied_at"].as_i64().unwrap() > 1_600_000_000, "{v}");
    }

    // The table is still the default output.
    let o = persist(url, &["status"]);
    assert_exit(&o, 0, "status");
    assert!(stdout(&o).starts_with("VERSION  NAME"), "{}", stdout(&o));

    if backend == Backend::Sqlite {
        // A SQLite URL holds no secret: shown as given.
        let (v, _) = status_json(url, 0, "again");
        assert_eq!(v["url"], url);
    }
}

both_backends! {
    blocking fresh_then_migrated,
}

/// A password in the URL is shown as `***`, never as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_url_in_json_hides_the_password() {
    let pg = PgDatabase::create().await;
    let (url, pw) = with_password(&pg.url);
    let o = persist(&url, &["status", "--json"]);
    assert_exit(&o, 3, "status --json");
    let out = stdout(&o);
    let v: Value = serde_json::from_str(&out).unwrap();
    let shown = v["url"].as_str().unwrap();
    assert!(shown.starts_with("postgres://"), "{shown}");
    assert!(shown.contains(":***@"), "{shown}");
    assert!(!out.contains(&pw), "{out}");
    assert!(!stderr(&o).contains(&pw));
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
    let pw = "s3cr3t-pw";
    (
        format!(
            "{scheme}://{userinfo}:{pw}@{host}{}",
            &rest[authority_end..]
        ),
        pw.to_string(),
    )
}

/// Drift (exit 4) and a database ahead of the binary (exit 5) show up as
/// states, with the same exit codes and stderr line as the table.
#[test]
fn sqlite_drift_and_ahead() {
    let (url, dir) = common::sqlite_url();
    let o = persist(&url, &["migrate"]);
    assert_exit(&o, 0, "migrate");
    let list = shipped(BackendKind::Sqlite);
    let latest = list.last().unwrap().0;
    let path = dir.path().join("test.db");

    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE schema_migrations SET checksum = 'edited' WHERE version = ?1",
        [latest],
    )
    .unwrap();
    let (v, err) = status_json(&url, 4, "status --json with drift");
    assert_eq!(v["status"], "drifted");
    assert_eq!(v["up_to_date"], false);
    assert_eq!(v["schema_version"], latest);
    let s = states(&v);
    assert_eq!(s.last().unwrap().2, "drifted");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: migration drift"), "{err}");

    // A newer binary's migration as well: "ahead" wins (exit 5).
    conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at, execution_ms)
         VALUES (?1, 'from_the_future', 'x', 1700000000, 1)",
        [latest + 1],
    )
    .unwrap();
    let (v, err) = status_json(&url, 5, "status --json when the database is ahead");
    assert_eq!(v["status"], "ahead");
    assert_eq!(v["up_to_date"], false);
    assert_eq!(v["schema_version"], latest + 1);
    assert_eq!(v["latest_version"], latest);
    let last = v["migrations"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["version"], latest + 1);
    assert_eq!(last["name"], "from_the_future");
    assert_eq!(last["state"], "unknown");
    assert_eq!(last["applied_at"], 1_700_000_000);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: database is newer than this binary"),
        "{err}"
    );
}

/// An unreachable database: exit 1, one error line, and on stdout one JSON
/// object with `error`, `up_to_date: false`, so `jq -e .up_to_date` fails
/// and a JSON consumer always has an object to read.
#[test]
fn unreachable_database_exits_1_with_an_error_object() {
    for (url, target) in [
        (
            "postgres://postgres@127.0.0.1:1/nothing",
            "postgres://postgres@127.0.0.1:1/nothing",
        ),
        ("sqlite:///nonexistent-dir/x.db", "/nonexistent-dir/x.db"),
    ] {
        let o = persist(url, &["status", "--json"]);
        assert_exit(&o, 1, "status --json on a closed port");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: database unavailable"), "{err}");
        assert!(err.contains(target), "the target is named: {err}");
        let out = stdout(&o);
        assert_eq!(out.lines().count(), 1, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["error", "kind", "status", "up_to_date"].into());
        assert_eq!(v["status"], "error");
        assert_eq!(v["up_to_date"], false);
        assert_eq!(v["kind"], "unavailable");
        assert_eq!(
            format!("error: {}", v["error"].as_str().unwrap()),
            err.trim_end()
        );
    }
}
