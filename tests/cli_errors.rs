//! Errors that help, run as a user would: a `DATABASE_URL` mistake shows
//! the target, SQLite URLs are percent-decoded like PostgreSQL ones, a
//! parameter given twice is refused, `copy` does not offer the
//! `--database-url` it would ignore, and a failed migration names its file
//! and statement instead of printing the whole file.

mod common;

use common::{assert_exit, stderr, stdout};

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_persist");

fn persist(args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run persist")
}

#[test]
fn sqlite_urls_are_percent_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/my%20game%23.db", dir.path().display());
    assert_exit(&persist(&["--database-url", &url, "migrate"]), 0, "migrate");
    assert!(dir.path().join("my game#.db").is_file());
    assert!(!dir.path().join("my%20game%23.db").exists());
    // A bad escape is a configuration error, not a file named with it.
    let bad = format!("sqlite://{}/100%.db", dir.path().display());
    let o = persist(&["--database-url", &bad, "migrate"]);
    assert_exit(&o, 1, "bad escape");
    assert!(stderr(&o).contains("percent-encoded"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_parameter_given_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    for url in [
        format!(
            "sqlite://{}?synchronous=full&synchronous=normal",
            path.display()
        ),
        "postgres://postgres@127.0.0.1:1/db?sslmode=disable&sslmode=require".to_string(),
        "postgres://postgres@127.0.0.1:1/db?application_name=a&application_name=b".to_string(),
    ] {
        let o = persist(&["--database-url", &url, "migrate"]);
        assert_exit(&o, 1, &url);
        let err = stderr(&o);
        assert!(err.contains("given twice"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!path.exists());
}

#[test]
fn copy_does_not_offer_database_url_and_the_others_take_it_after_the_subcommand() {
    let o = persist(&["copy", "--help"]);
    assert_exit(&o, 0, "copy --help");
    assert!(stdout(&o).contains("--from"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("--database-url"), "{}", stdout(&o));
    // Given before `copy`, it is refused rather than ignored.
    let o = persist(&[
        "--database-url",
        "sqlite::memory:",
        "copy",
        "--from",
        "sqlite::memory:",
        "--to",
        "sqlite::memory:",
    ]);
    assert_exit(&o, 1, "--database-url with copy");
    assert!(stderr(&o).contains("no --database-url"), "{}", stderr(&o));

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/after.db", dir.path().display());
    for cmd in ["migrate", "status", "ping", "verify", "sweep-sessions"] {
        let o = persist(&[cmd, "--database-url", &url]);
        assert_exit(&o, 0, &format!("{cmd} --database-url"));
        assert!(!stdout(&o).is_empty(), "{cmd}");
        let o = persist(&[cmd, "--help"]);
        assert!(
            stdout(&o).contains("--database-url"),
            "{cmd}: {}",
            stdout(&o)
        );
    }
    assert!(dir.path().join("after.db").is_file());
}

#[test]
fn connection_errors_name_the_target() {
    let o = Command::new(BIN)
        .env("DATABASE_URL", "postgres://app:sekret@127.0.0.1:1/gamedb")
        .env_remove("RUST_LOG")
        .arg("ping")
        .output()
        .unwrap();
    assert_exit(&o, 1, "ping an unreachable server");
    let err = stderr(&o);
    assert!(
        err.contains("postgres://app:***@127.0.0.1:1/gamedb"),
        "{err}"
    );
    assert!(!err.contains("sekret"), "{err}");

    // A database that does not exist on a live server.
    let missing = common::with_database(&common::pg_admin_url(), "persist_no_such_database");
    let o = persist(&["--database-url", &missing, "ping"]);
    assert_exit(&o, 1, "ping a missing database");
    assert!(
        stderr(&o).contains("/persist_no_such_database"),
        "{}",
        stderr(&o)
    );
}
