//! Issue 15, `persist migrate --plan [--json]`, run as a user would: the
//! pending migrations with their statements, transaction or not, the lock
//! each statement takes and the lint findings; exit 3 when something is
//! pending, 0 when nothing is; nothing is changed.

mod common;

use common::persist_cli as persist;

use std::process::Command;

use common::{assert_exit, stdout, Backend};
use persist::{BackendKind, Config, Migration, Migrations};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_persist");

/// A database migrated up to, not including, the last shipped migration.
async fn one_behind(backend: Backend) -> (String, common::Place, Migration) {
    let (url, place) = backend.empty().await;
    let shipped = Migrations::embedded(backend.dialect()).unwrap();
    let last = shipped.iter().last().unwrap().clone();
    let before: Vec<Migration> = shipped
        .iter()
        .filter(|m| m.version() < last.version())
        .cloned()
        .collect();
    let db = persist::open(&Config::from_url(&url).unwrap())
        .await
        .unwrap();
    db.migrate_with(&Migrations::new(backend.dialect(), before).unwrap())
        .await
        .unwrap();
    db.close().await;
    (url, place, last)
}

async fn plan_shows_the_pending_migration_and_changes_nothing(backend: Backend) {
    let (url, _place, last) = one_behind(backend).await;
    let status_before = stdout(&persist(&url, &["status"]));

    let o = persist(&url, &["migrate", "--plan"]);
    assert_exit(&o, 3, "migrate --plan with one pending");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("{:04}_{} (in a transaction)", last.version(), last.name())
    );
    let (lock_line, findings) = match backend.dialect() {
        BackendKind::Postgres => ("create index: SHARE on sessions", 3),
        BackendKind::Sqlite => ("database write lock on (database)", 0),
    };
    assert!(out.contains(lock_line), "{out}");
    assert_eq!(
        *lines.last().unwrap(),
        format!("1 pending migration(s), {findings} lint finding(s); nothing was changed")
    );
    if backend.dialect() == BackendKind::Postgres {
        assert!(
            out.contains("       lint create-index-not-concurrent (sessions): blocks every write"),
            "{out}"
        );
    }

    let o = persist(&url, &["migrate", "--plan", "--json"]);
    assert_exit(&o, 3, "migrate --plan --json with one pending");
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["backend"], backend.name());
    assert_eq!(v["findings"], findings);
    let pending = v["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["version"], last.version());
    assert_eq!(pending[0]["in_transaction"], true);
    let statements = pending[0]["statements"].as_array().unwrap();
    assert!(statements.iter().all(|s| s["sql"].is_string()
        && s["kind"].is_string()
        && s["locks"].is_array()
        && s["findings"].is_array()));

    // Nothing changed.
    assert_eq!(stdout(&persist(&url, &["status"])), status_before);
    assert_exit(&persist(&url, &["migrate"]), 0, "migrate");
    let o = persist(&url, &["migrate", "--plan"]);
    assert_exit(&o, 0, "migrate --plan when up to date");
    assert_eq!(
        stdout(&o),
        format!("nothing pending: schema at version {}\n", last.version())
    );
    let o = persist(&url, &["migrate", "--plan", "--json"]);
    assert_exit(&o, 0, "migrate --plan --json when up to date");
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["pending"], Value::Array(Vec::new()));
}

both_backends! {
    backend plan_shows_the_pending_migration_and_changes_nothing,
}

#[test]
fn json_needs_plan() {
    let o = Command::new(BIN)
        .args(["--database-url", "sqlite::memory:", "migrate", "--json"])
        .output()
        .unwrap();
    assert_exit(&o, 2, "migrate --json without --plan");
}
