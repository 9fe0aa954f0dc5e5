//! Resolution of PostgreSQL settings from the URL, libpq's environment
//! variables, the password file and `~/.postgresql/`, with explicit
//! environments (the process environment is never touched).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::pg::Vars;
use super::url::parse;
use super::{Config, PasswordSource, SslMode, SslRootCert, Target};
use crate::error::Error;

fn pg(c: &Config) -> &tokio_postgres::Config {
    match &c.target {
        Target::Postgres(pg) => pg,
        _ => panic!("not postgres"),
    }
}

fn ok(url: &str, env: &[(&str, &str)]) -> Config {
    parse(url, &Vars(env)).unwrap_or_else(|e| panic!("{url} with {env:?}: {e}"))
}

fn err(url: &str, env: &[(&str, &str)]) -> String {
    match parse(url, &Vars(env)) {
        Err(Error::Config(m)) => m,
        other => panic!("{url}: expected Error::Config, got {other:?}"),
    }
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

const ALL: &[(&str, &str)] = &[
    ("PGHOST", "envhost"),
    ("PGPORT", "7777"),
    ("PGUSER", "envuser"),
    ("PGDATABASE", "envdb"),
    ("PGPASSWORD", "envpw"),
    ("PGSSLMODE", "require"),
];

#[test]
fn the_url_wins_over_the_environment() {
    let c = ok("postgres://u:urlpw@h:1/db?sslmode=disable", ALL);
    let p = pg(&c);
    assert_eq!(
        p.get_hosts(),
        &[tokio_postgres::config::Host::Tcp("h".into())]
    );
    assert_eq!(p.get_ports(), &[1]);
    assert_eq!(p.get_user(), Some("u"));
    assert_eq!(p.get_dbname(), Some("db"));
    assert_eq!(p.get_password(), Some(&b"urlpw"[..]));
    assert_eq!(c.password_source(), Some(PasswordSource::Url));
    assert_eq!(c.ssl_mode(), SslMode::Disable);
}

#[test]
fn the_environment_fills_what_the_url_leaves_out() {
    let c = ok("postgres://", ALL);
    let p = pg(&c);
    assert_eq!(
        p.get_hosts(),
        &[tokio_postgres::config::Host::Tcp("envhost".into())]
    );
    assert_eq!(p.get_ports(), &[7777]);
    assert_eq!(p.get_user(), Some("envuser"));
    assert_eq!(p.get_dbname(), Some("envdb"));
    assert_eq!(p.get_password(), Some(&b"envpw"[..]));
    assert_eq!(c.password_source(), Some(PasswordSource::Env));
    assert_eq!(c.ssl_mode(), SslMode::Require);
    // Several hosts and ports, and a socket directory.
    let c = ok(
        "postgres://u@/db",
        &[("PGHOST", "a,/run/pg"), ("PGPORT", "5433,5434")],
    );
    assert_eq!(
        pg(&c).get_hosts(),
        &[
            tokio_postgres::config::Host::Tcp("a".into()),
            tokio_postgres::config::Host::Unix("/run/pg".into())
        ]
    );
    assert_eq!(pg(&c).get_ports(), &[5433, 5434]);
    // Hosts in the URL without a port take PGPORT's; a URL port wins.
    let c = ok("postgres://u@a,[::1]/db", &[("PGPORT", "6000")]);
    assert_eq!(pg(&c).get_ports(), &[6000, 6000]);
    let c = ok("postgres://u@a:1,b/db", &[("PGPORT", "6000")]);
    assert_eq!(pg(&c).get_ports(), &[1, 5432]);
    assert!(err("postgres://u@a,b,c/db", &[("PGPORT", "1,2")]).contains("2 ports for 3 hosts"));
    // Without the environment the same URLs are refused, naming what lacks.
    assert!(err("postgres://", &[]).contains("no host"));
    assert!(err("postgres://h", &[("PGUSER", "u")]).contains("no database name"));
    assert!(err("postgres://h/db", &[]).contains("no user name"));
    assert!(err("postgres://u@h/db", &[("PGPORT", "x")]).contains("PGPORT is not a port"));
    assert!(err("postgres://u@h/db", &[("PGSSLMODE", "sure")]).contains("unsupported PGSSLMODE"));
    // No password anywhere.
    let c = ok("postgres://u@h/db", &[]);
    assert_eq!((c.password_source(), pg(&c).get_password()), (None, None));
}

#[test]
fn the_password_file_comes_after_pgpassword() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    write(
        &dir.path().join(".pgpass"),
        "db.example:5432:game:alice:from\\:home\nlocalhost:*:*:*:socket\n",
        0o600,
    );
    let other = dir.path().join("other-pgpass");
    write(&other, "*:*:*:alice:from-passfile\n", 0o600);

    let c = ok("postgres://alice@db.example/game", &[("HOME", home)]);
    assert_eq!(pg(&c).get_password(), Some(&b"from:home"[..]));
    assert_eq!(c.password_source(), Some(PasswordSource::PasswordFile));
    // PGPASSWORD first.
    let c = ok(
        "postgres://alice@db.example/game",
        &[("HOME", home), ("PGPASSWORD", "envpw")],
    );
    assert_eq!(pg(&c).get_password(), Some(&b"envpw"[..]));
    // PGPASSFILE instead of ~/.pgpass.
    let c = ok(
        "postgres://alice@db.example/game",
        &[("HOME", home), ("PGPASSFILE", other.to_str().unwrap())],
    );
    assert_eq!(pg(&c).get_password(), Some(&b"from-passfile"[..]));
    // A socket in the default directory matches `localhost`.
    let c = ok(
        "postgres://bob@%2Fvar%2Frun%2Fpostgresql/x",
        &[("HOME", home)],
    );
    assert_eq!(pg(&c).get_password(), Some(&b"socket"[..]));
    // No line matches: no password.
    let c = ok("postgres://alice@db.example:6543/game", &[("HOME", home)]);
    assert_eq!(c.password_source(), None);
    // Group-readable: ignored.
    std::fs::set_permissions(
        dir.path().join(".pgpass"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let c = ok("postgres://alice@db.example/game", &[("HOME", home)]);
    assert_eq!((c.password_source(), pg(&c).get_password()), (None, None));
}

#[test]
fn tls_settings_from_url_environment_and_home() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    let file = |s: &str| SslRootCert::File(PathBuf::from(s));

    let c = ok(
        "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&sslcert=c.pem&sslkey=k.pem",
        &[("PGSSLROOTCERT", "/other.pem"), ("PGSSLMODE", "disable")],
    );
    assert_eq!(c.ssl_mode(), SslMode::VerifyFull);
    assert_eq!(c.ssl_root_cert(), Some(&file("/etc/ca.pem")));
    assert_eq!(
        c.ssl_client_cert(),
        Some((Path::new("c.pem"), Path::new("k.pem")))
    );
    let c = ok(
        "postgres://u@h/db",
        &[
            ("PGSSLROOTCERT", "/r.pem"),
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLCERT", "/c"),
            ("PGSSLKEY", "/k"),
        ],
    );
    assert_eq!(
        (c.ssl_mode(), c.ssl_root_cert()),
        (SslMode::VerifyCa, Some(&file("/r.pem")))
    );
    assert_eq!(
        c.ssl_client_cert(),
        Some((Path::new("/c"), Path::new("/k")))
    );

    // sslrootcert=system implies verify-full; a weaker explicit mode is refused.
    let c = ok("postgres://u@h/db?sslrootcert=system", &[]);
    assert_eq!(
        (c.ssl_mode(), c.ssl_root_cert()),
        (SslMode::VerifyFull, Some(&SslRootCert::System))
    );
    for weak in ["disable", "allow", "prefer", "require", "verify-ca"] {
        let m = err(
            &format!("postgres://u@h/db?sslrootcert=system&sslmode={weak}"),
            &[],
        );
        assert_eq!(
            m,
            format!(
                "weak sslmode {weak} may not be used with sslrootcert=system (use verify-full)"
            )
        );
    }
    // verify-* without roots: refused, saying what to give.
    for mode in ["verify-ca", "verify-full"] {
        let m = err(
            &format!("postgres://u@h/db?sslmode={mode}"),
            &[("HOME", home)],
        );
        assert!(
            m.starts_with(&format!("sslmode={mode} needs root certificates")),
            "{m}"
        );
        assert!(m.contains("sslrootcert=system"), "{m}");
    }
    // libpq's defaults under ~/.postgresql/, used when they exist.
    let c = ok("postgres://u@h/db?sslmode=require", &[("HOME", home)]);
    assert_eq!((c.ssl_root_cert(), c.ssl_client_cert()), (None, None));
    std::fs::create_dir(dir.path().join(".postgresql")).unwrap();
    let pgdir = dir.path().join(".postgresql");
    write(&pgdir.join("root.crt"), "x", 0o644);
    write(&pgdir.join("postgresql.crt"), "x", 0o644);
    let c = ok("postgres://u@h/db?sslmode=verify-full", &[("HOME", home)]);
    assert_eq!(
        c.ssl_root_cert(),
        Some(&SslRootCert::File(pgdir.join("root.crt")))
    );
    assert_eq!(
        c.ssl_client_cert(),
        Some((
            pgdir.join("postgresql.crt").as_path(),
            pgdir.join("postgresql.key").as_path()
        ))
    );
    // A certificate without a key and without HOME for the default.
    assert!(err("postgres://u@h/db?sslcert=c.pem", &[]).contains("no sslkey"));
    // A file parameter before the '@' is a piece of a password: refused.
    let m = err("postgres://u:pw?sslcert=se@h/db", &[]);
    assert!(
        m.contains("percent-encode '?'") && !m.contains("se@"),
        "{m}"
    );
}

#[test]
fn debug_shows_tls_paths_and_no_password_from_any_source() {
    let c = ok(
        "postgres://u@h/db?sslmode=verify-full&sslrootcert=ca.pem&sslcert=c.pem&sslkey=k.pem&sslpassword=Zx5cVb3n",
        &[("PGPASSWORD", "Qw8rTy6u")],
    );
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("Qw8rTy6u") && !dbg.contains("Zx5cVb3n"),
        "{dbg}"
    );
    assert!(
        dbg.contains("url: \"postgres://u:***@h:5432/db?sslmode=verify-full\""),
        "{dbg}"
    );
    assert!(
        dbg.ends_with(
            "password_source: Some(Env), ssl_root_cert: Some(File(\"ca.pem\")), \
             ssl_cert: Some(\"c.pem\"), ssl_key: Some(\"k.pem\"), ssl_key_password: Some(***) }"
        ),
        "{dbg}"
    );
}
