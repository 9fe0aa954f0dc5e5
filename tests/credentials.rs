//! Issue 14: credentials and connection settings as libpq finds them, end to
//! end: the `persist` binary, run with an explicit environment (nothing in
//! this process's environment changes), against a private cluster whose
//! `pg_hba.conf` requires SCRAM over TLS (`tests/common/tls_cluster.rs`).
//!
//! Order: the URL, `PGPASSWORD`, the password file (`PGPASSFILE`, default
//! `~/.pgpass`; wildcards and escapes; ignored when group- or
//! world-readable). `PGUSER`, `PGHOST`, `PGPORT`, `PGDATABASE`, `PGSSLMODE`
//! and `PGSSLROOTCERT` fill what the URL leaves out. A password given in
//! `--database-url` draws one warning on stderr.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::tls_cluster::{set_mode, ServerCert, TlsCluster, ALICE_PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_persist");
const WARNING: &str = "visible to other local users in the process list";

/// `persist ping` with exactly `env` (and a `HOME` of its own), and
/// `--database-url URL` when given.
fn ping(home: &Path, url: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().env("HOME", home).envs(env.iter().copied());
    if let Some(url) = url {
        cmd.args(["--database-url", url]);
    }
    cmd.arg("ping").output().expect("run persist")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output, what: &str, shown_url: &str) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{what}: failed: {stderr}");
    assert_eq!(stdout, format!("ok: {shown_url} answers\n"), "{what}");
    assert!(
        !stdout.contains("Al1ce") && !stderr.contains("Al1ce"),
        "{what}"
    );
}

#[track_caller]
fn assert_refused(out: &Output, what: &str, want: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{what}: connected");
    assert!(stderr.contains(want), "{what}: {stderr:?} lacks {want:?}");
    assert!(!stderr.contains("Al1ce"), "{what}: {stderr}");
}

/// A `.pgpass` line for `alice`'s password, escaped as the format wants.
fn escaped_password() -> String {
    ALICE_PASSWORD.replace('\\', "\\\\").replace(':', "\\:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_password_source_in_libpq_order() {
    let tls = TlsCluster::start(Some(ServerCert::Good)).await;
    let home = tempfile::tempdir().unwrap();
    let port = tls.port().to_string();
    let bare = tls.url("alice", "127.0.0.1", "tlsdb", "sslmode=require");
    let shown = format!("postgres://alice:***@127.0.0.1:{port}/tlsdb?sslmode=require");

    // In the URL on the command line: works, with one warning.
    let with_pw = tls.alice_url("127.0.0.1", "tlsdb", "sslmode=require");
    let out = ping(home.path(), Some(&with_pw), &[]);
    assert_ok(&out, "URL password", &shown);
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches(WARNING).count(), 1, "{stderr}");
    assert!(
        stderr.contains("PGPASSWORD") && stderr.contains(".pgpass"),
        "{stderr}"
    );
    // The same URL from DATABASE_URL: no warning.
    let out = ping(home.path(), None, &[("DATABASE_URL", &with_pw)]);
    assert_ok(&out, "DATABASE_URL password", &shown);
    assert!(!text(&out.stderr).contains(WARNING));

    // No password anywhere: the server's SCRAM request goes unanswered.
    let out = ping(home.path(), Some(&bare), &[]);
    assert_refused(&out, "no password", "password missing");

    // PGPASSWORD.
    let out = ping(home.path(), Some(&bare), &[("PGPASSWORD", ALICE_PASSWORD)]);
    assert_ok(&out, "PGPASSWORD", &shown);
    assert!(!text(&out.stderr).contains(WARNING));
    let out = ping(home.path(), Some(&bare), &[("PGPASSWORD", "wrong")]);
    assert_refused(&out, "wrong PGPASSWORD", "password authentication failed");
    // The URL wins over PGPASSWORD.
    let out = ping(
        home.path(),
        None,
        &[("DATABASE_URL", &with_pw), ("PGPASSWORD", "wrong")],
    );
    assert_ok(&out, "URL over PGPASSWORD", &shown);

    // ~/.pgpass: a line for another database first, then one with escapes
    // for this one; a wildcard line for `localhost`.
    let pgpass = home.path().join(".pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "# test\n127.0.0.1:{port}:otherdb:alice:wrong\n\
             127.0.0.1:{port}:tlsdb:alice:{pw}\n*:*:*:alice:{pw}\n",
            pw = escaped_password()
        ),
    )
    .unwrap();
    set_mode(&pgpass, 0o600);
    let out = ping(home.path(), Some(&bare), &[]);
    assert_ok(&out, "~/.pgpass", &shown);
    let local = tls.url("alice", "localhost", "tlsdb", "sslmode=require");
    let out = ping(home.path(), Some(&local), &[]);
    assert_ok(
        &out,
        "~/.pgpass wildcard",
        &format!("postgres://alice:***@localhost:{port}/tlsdb?sslmode=require"),
    );
    // PGPASSWORD comes before the file.
    let out = ping(home.path(), Some(&bare), &[("PGPASSWORD", "wrong")]);
    assert_refused(
        &out,
        "PGPASSWORD over ~/.pgpass",
        "password authentication failed",
    );
    // Group-readable: ignored, as libpq does.
    set_mode(&pgpass, 0o640);
    let out = ping(home.path(), Some(&bare), &[]);
    assert_refused(&out, "group-readable ~/.pgpass", "password missing");
    set_mode(&pgpass, 0o604);
    let out = ping(home.path(), Some(&bare), &[]);
    assert_refused(&out, "world-readable ~/.pgpass", "password missing");

    // PGPASSFILE instead of ~/.pgpass.
    let other = tls.pki.dir().join("passfile");
    std::fs::write(&other, format!("*:{port}:tlsdb:*:{}\n", escaped_password())).unwrap();
    set_mode(&other, 0o600);
    let out = ping(
        home.path(),
        Some(&bare),
        &[("PGPASSFILE", other.to_str().unwrap())],
    );
    assert_ok(&out, "PGPASSFILE", &shown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_variables_fill_what_the_url_leaves_out() {
    let tls = TlsCluster::start(Some(ServerCert::Good)).await;
    let home = tempfile::tempdir().unwrap();
    let port = tls.port().to_string();
    let ca = tls.pki.path("ca.crt");
    let other_ca = tls.pki.path("other-ca.crt");
    let base = [
        ("PGHOST", "localhost"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "alice"),
        ("PGDATABASE", "tlsdb"),
        ("PGPASSWORD", ALICE_PASSWORD),
        ("PGSSLMODE", "verify-full"),
    ];
    let with = |extra: &[(&'static str, &str)]| -> Vec<(&str, String)> {
        base.iter()
            .map(|(k, v)| (*k, v.to_string()))
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .chain(extra.iter().map(|(k, v)| (*k, v.to_string())))
            .collect()
    };
    let run = |url: &str, env: &[(&str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ping(home.path(), Some(url), &env)
    };
    let shown = format!("postgres://alice:***@localhost:{port}/tlsdb?sslmode=verify-full");
    let out = run(
        "postgres://",
        &with(&[("PGSSLROOTCERT", ca.to_str().unwrap())]),
    );
    assert_ok(&out, "every part from PG* variables", &shown);
    // Each variable is used: a wrong value of each is refused.
    let out = run(
        "postgres://",
        &with(&[("PGSSLROOTCERT", other_ca.to_str().unwrap())]),
    );
    assert_refused(&out, "PGSSLROOTCERT", "unknown CA");
    let out = run("postgres://", &with(&[]));
    assert_refused(
        &out,
        "no root",
        "sslmode=verify-full needs root certificates",
    );
    let out = run("postgres://", &with(&[("PGSSLMODE", "disable")]));
    assert_refused(&out, "PGSSLMODE", "no encryption");
    let out = run(
        "postgres://",
        &with(&[("PGSSLMODE", "require"), ("PGDATABASE", "nodb")]),
    );
    assert_refused(&out, "PGDATABASE", "\"nodb\"");
    let out = run(
        "postgres://",
        &with(&[("PGSSLMODE", "require"), ("PGUSER", "mallory")]),
    );
    assert_refused(&out, "PGUSER", "\"mallory\"");
    let out = run(
        "postgres://",
        &with(&[("PGSSLMODE", "require"), ("PGPORT", "1")]),
    );
    assert_refused(&out, "PGPORT", "refused");
    let out = run(
        "postgres://",
        &with(&[("PGSSLMODE", "require"), ("PGHOST", "127.0.0.2")]),
    );
    // Nothing listens on 127.0.0.2 (the base run showed PGHOST in its URL).
    assert_refused(&out, "PGHOST", "Connection refused");
    // What the URL gives wins over the variables.
    let url = tls.url(
        "alice",
        "127.0.0.1",
        "tlsdb",
        &format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
    );
    let out = run(
        &url,
        &with(&[
            ("PGHOST", "127.0.0.2"),
            ("PGPORT", "1"),
            ("PGUSER", "mallory"),
            ("PGDATABASE", "nodb"),
            ("PGSSLMODE", "disable"),
            ("PGSSLROOTCERT", other_ca.to_str().unwrap()),
        ]),
    );
    assert_ok(
        &out,
        "URL over PG* variables",
        &format!("postgres://alice:***@127.0.0.1:{port}/tlsdb?sslmode=verify-ca"),
    );
}
