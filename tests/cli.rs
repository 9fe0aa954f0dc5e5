//! The `persist` binary, run as a user would: migrate, status, ping, the
//! database URL from the flag, `DATABASE_URL` or the default, exit codes and
//! one-line errors.

mod common;

use common::{assert_exit, stderr, stdout};

use std::path::Path;
use std::process::{Command, Output};

use common::{Backend, Place};
use persist::{BackendKind, Migrations};

const BIN: &str = env!("CARGO_BIN_EXE_persist");

/// A `persist` command with a clean environment for the variables it reads.
fn persist() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("DATABASE_URL").env_remove("RUST_LOG");
    c
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run persist")
}

fn with_url(url: &str, args: &[&str]) -> Output {
    let mut c = persist();
    c.arg("--database-url").arg(url).args(args);
    run(c)
}

/// Stderr is exactly one `error:` line, with no panic or backtrace.
fn assert_one_error_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr must be one line: {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "stack"] {
        assert!(!err.contains(bad), "{bad} in {err:?}");
    }
    lines[0].to_string()
}

/// The migrations this binary ships for `dialect`, as `NNNN_name`.
fn shipped(dialect: BackendKind) -> Vec<String> {
    Migrations::embedded(dialect)
        .unwrap()
        .iter()
        .map(|m| format!("{:04}_{}", m.version(), m.name()))
        .collect()
}

/// The full migrate/status/ping cycle a user runs on a fresh database.
fn migrate_status_ping_cycle(url: &str, dialect: BackendKind) {
    let names = shipped(dialect);
    assert_eq!(names[0], "0001_init");

    // status on a fresh database: pending, exit 3, changes nothing.
    let o = with_url(url, &["status"]);
    assert_exit(&o, 3, "status on a fresh database");
    let out = stdout(&o);
    for n in &names {
        let (version, name) = n.split_once('_').unwrap();
        assert!(
            out.lines()
                .any(|l| l.starts_with(version) && l.contains(name) && l.contains("pending")),
            "{out}"
        );
    }
    assert!(!out.contains("applied "), "{out}");
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));

    // migrate: applies every migration and says so.
    let o = with_url(url, &["migrate"]);
    assert_exit(&o, 0, "migrate");
    let out = stdout(&o);
    for n in &names {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("applied {n} ("))),
            "{out}"
        );
    }
    assert!(
        out.contains(&format!("({} applied now)", names.len())),
        "{out}"
    );
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));

    // Second run: nothing applied.
    let o = with_url(url, &["migrate"]);
    assert_exit(&o, 0, "second migrate");
    let out = stdout(&o);
    assert!(out.contains("(0 applied now)"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("applied ")), "{out}");

    // status: up to date, exit 0, every migration applied with a time.
    let o = with_url(url, &["status"]);
    assert_exit(&o, 0, "status when up to date");
    let out = stdout(&o);
    for n in &names {
        let (version, name) = n.split_once('_').unwrap();
        let line = out
            .lines()
            .find(|l| l.starts_with(version))
            .unwrap_or_else(|| panic!("no line for {version}: {out}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&fields[..3], [version, name, "applied"], "{line}");
        assert!(
            fields.len() > 3 && fields[3].chars().any(|c| c.is_ascii_digit()),
            "no applied_at: {line}"
        );
    }
    assert!(!out.contains("pending"), "{out}");

    let o = with_url(url, &["ping"]);
    assert_exit(&o, 0, "ping");
    assert!(stdout(&o).starts_with("ok"), "{}", stdout(&o));
}

/// The migrate / status / ping cycle on a fresh database of `backend`.
fn migrate_status_ping(backend: Backend) {
    let (url, place) = backend.empty_blocking();
    migrate_status_ping_cycle(&url, backend.dialect());
    if let Place::Sqlite(dir) = &place {
        assert!(dir.path().join("test.db").is_file());
    }
}

both_backends! {
    blocking migrate_status_ping,
}

/// The migrate / status / ping cycle through a private PgBouncer in `mode`
/// (no `ignore_startup_parameters`: nothing rides in the startup packet).
fn migrate_status_ping_through(mode: common::topology::PoolMode) {
    let pg = common::block_on(common::PgDatabase::behind(mode));
    migrate_status_ping_cycle(&pg.url, BackendKind::Postgres);
}

#[test]
fn migrate_status_ping_through_pgbouncer_transaction_mode() {
    migrate_status_ping_through(common::topology::PoolMode::Transaction);
}

#[test]
fn migrate_status_ping_through_pgbouncer_session_mode() {
    migrate_status_ping_through(common::topology::PoolMode::Session);
}

#[test]
fn database_url_env_is_used_when_no_flag_is_given() {
    let cwd = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let db = elsewhere.path().join("from-env.db");
    let url = format!("sqlite://{}", db.display());

    let mut c = persist();
    c.arg("migrate")
        .env("DATABASE_URL", &url)
        .current_dir(cwd.path());
    let o = run(c);
    assert_exit(&o, 0, "migrate with DATABASE_URL");
    assert!(stdout(&o).contains("applied 0001_init"), "{}", stdout(&o));
    assert!(db.is_file(), "DATABASE_URL was not used");
    assert!(
        !cwd.path().join("persist.db").exists(),
        "the default was used"
    );

    let mut c = persist();
    c.arg("status")
        .env("DATABASE_URL", &url)
        .current_dir(cwd.path());
    assert_exit(&run(c), 0, "status with DATABASE_URL");

    // The flag wins over the variable.
    let flagged = elsewhere.path().join("from-flag.db");
    let mut c = persist();
    c.arg("--database-url")
        .arg(format!("sqlite://{}", flagged.display()))
        .arg("status")
        .env("DATABASE_URL", &url)
        .current_dir(cwd.path());
    // status inspects: it used the flag's (missing) file, and did not create it.
    let o = run(c);
    assert_exit(&o, 1, "status with the flag on a missing file");
    assert!(
        stderr(&o).contains("from-flag.db does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(!flagged.exists(), "status created the file");
}

#[test]
fn default_is_persist_db_in_the_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let mut c = persist();
    c.arg("migrate").current_dir(cwd.path());
    let o = run(c);
    assert_exit(&o, 0, "migrate with no URL");
    assert!(stdout(&o).contains("applied 0001_init"), "{}", stdout(&o));
    assert!(cwd.path().join("persist.db").is_file());

    let mut c = persist();
    c.arg("status").current_dir(cwd.path());
    assert_exit(&run(c), 0, "status with no URL");

    // An empty DATABASE_URL counts as unset.
    let mut c = persist();
    c.arg("status")
        .env("DATABASE_URL", "")
        .current_dir(cwd.path());
    assert_exit(&run(c), 0, "status with an empty DATABASE_URL");
}

#[test]
fn bad_url_is_one_error_line_and_exit_1() {
    for (url, expected) in [
        ("mysql://root@localhost/db", "unknown database URL scheme"),
        ("postgres://postgres@127.0.0.1:5432", "no database name"),
        ("postgres://u:sekret@h:notaport/db", "malformed"),
    ] {
        for cmd in ["migrate", "status", "ping"] {
            let mut c = persist();
            c.arg("--database-url")
                .arg(url)
                .arg(cmd)
                .env("RUST_BACKTRACE", "1");
            let o = run(c);
            assert_exit(&o, 1, &format!("{cmd} {url}"));
            let line = assert_one_error_line(&o);
            assert!(line.contains(expected), "{line}");
            assert!(!line.contains("sekret"), "{line}");
            assert!(stdout(&o).is_empty(), "{}", stdout(&o));
        }
    }
    // The same for a bad DATABASE_URL.
    let mut c = persist();
    c.arg("status").env("DATABASE_URL", "nonsense");
    let o = run(c);
    assert_exit(&o, 1, "bad DATABASE_URL");
    assert!(assert_one_error_line(&o).contains("no scheme"));
}

#[test]
fn unreachable_postgres_is_one_error_line_and_exit_1() {
    for cmd in ["ping", "migrate", "status"] {
        let mut c = persist();
        // Through DATABASE_URL: a password in --database-url draws a
        // warning line of its own (tests/credentials.rs).
        c.env("DATABASE_URL", "postgres://postgres:sekret@127.0.0.1:1/x")
            .arg(cmd)
            .env("RUST_BACKTRACE", "1");
        let o = run(c);
        assert_exit(&o, 1, cmd);
        let line = assert_one_error_line(&o);
        assert!(line.contains("unavailable"), "{line}");
        assert!(!line.contains("sekret"), "{line}");
    }
}

#[test]
fn unwritable_sqlite_path_is_one_error_line_and_exit_1() {
    assert!(!Path::new("/nonexistent-dir").exists());
    let o = with_url("sqlite:///nonexistent-dir/x.db", &["migrate"]);
    assert_exit(&o, 1, "migrate to an unwritable path");
    let line = assert_one_error_line(&o);
    assert!(line.contains("/nonexistent-dir/x.db"), "{line}");
}

#[test]
fn usage_errors_do_not_panic() {
    let o = run(persist());
    assert_eq!(o.status.code(), Some(2), "no subcommand: clap usage error");
    assert!(!stderr(&o).contains("panicked"));
    let mut c = persist();
    c.arg("--help");
    let o = run(c);
    assert_exit(&o, 0, "--help");
    for cmd in ["migrate", "status", "ping", "--database-url"] {
        assert!(stdout(&o).contains(cmd), "{}", stdout(&o));
    }
}
