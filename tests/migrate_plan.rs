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

/// A database migrated up to, not including, the last two shipped
/// migrations (0004's plain index build, with lint findings, and 0005's
/// concurrent one, a no-transaction file on PostgreSQL); those two.
async fn two_behind(backend: Backend) -> (String, common::Place, Vec<Migration>) {
    let (url, place) = backend.empty().await;
    let shipped = Migrations::embedded(backend.dialect()).unwrap();
    let all: Vec<Migration> = shipped.iter().cloned().collect();
    let (before, pending) = all.split_at(all.len() - 2);
    let db = persist::open(&Config::from_url(&url).unwrap())
        .await
        .unwrap();
    db.migrate_with(&Migrations::new(backend.dialect(), before.to_vec()).unwrap())
        .await
        .unwrap();
    db.close().await;
    (url, place, pending.to_vec())
}

fn header(m: &Migration) -> String {
    let how = if m.in_transaction() {
        "in a transaction"
    } else {
        "no transaction: one statement at a time"
    };
    format!("{:04}_{} ({how})", m.version(), m.name())
}

async fn plan_shows_the_pending_migrations_and_changes_nothing(backend: Backend) {
    let (url, _place, pending) = two_behind(backend).await;
    let last = pending.last().unwrap().clone();
    let status_before = stdout(&persist(&url, &["status"]));

    let o = persist(&url, &["migrate", "--plan"]);
    assert_exit(&o, 3, "migrate --plan with two pending");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], header(&pending[0]));
    assert!(lines.contains(&header(&last).as_str()), "{out}");
    assert_eq!(
        last.in_transaction(),
        backend.dialect() == BackendKind::Sqlite,
        "0005 runs without a transaction on PostgreSQL only"
    );
    let (lock_line, findings) = match backend.dialect() {
        BackendKind::Postgres => ("create index: SHARE on sessions", 3),
        BackendKind::Sqlite => ("database write lock on (database)", 0),
    };
    assert!(out.contains(lock_line), "{out}");
    assert_eq!(
        *lines.last().unwrap(),
        format!("2 pending migration(s), {findings} lint finding(s); nothing was changed")
    );
    if backend.dialect() == BackendKind::Postgres {
        assert!(
            out.contains("create index concurrently: SHARE UPDATE EXCLUSIVE on sessions"),
            "{out}"
        );
        assert!(
            out.contains("       lint create-index-not-concurrent (sessions): blocks every write"),
            "{out}"
        );
    }

    let o = persist(&url, &["migrate", "--plan", "--json"]);
    assert_exit(&o, 3, "migrate --plan --json with two pending");
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["backend"], backend.name());
    assert_eq!(v["findings"], findings);
    let listed = v["pending"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for (json, m) in listed.iter().zip(&pending) {
        assert_eq!(json["version"], m.version());
        assert_eq!(json["in_transaction"], m.in_transaction());
        let statements = json["statements"].as_array().unwrap();
        assert!(statements.iter().all(|s| s["sql"].is_string()
            && s["kind"].is_string()
            && s["locks"].is_array()
            && s["findings"].is_array()));
    }

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
    backend plan_shows_the_pending_migrations_and_changes_nothing,
}

#[test]
fn json_needs_plan() {
    let o = Command::new(BIN)
        .args(["--database-url", "sqlite::memory:", "migrate", "--json"])
        .output()
        .unwrap();
    assert_exit(&o, 2, "migrate --json without --plan");
}
