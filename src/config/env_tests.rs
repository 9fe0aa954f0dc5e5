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
    // (The host defaults to libpq's socket directory.)
    assert!(err("postgres://", &[]).contains("no database name"));
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
             ssl_cert: Some(\"c.pem\"), ssl_key: Some(\"k.pem\"), ssl_key_password: Some(***), \
             replicas: [] }"
        ),
        "{dbg}"
    );
}

const OS_USER: &[(&str, &str)] = &[("(os user)", "alice")];

#[test]
fn libpq_defaults_local_socket_and_os_user() {
    let c = ok("postgres:///game", OS_USER);
    assert_eq!(
        pg(&c).get_hosts(),
        &[tokio_postgres::config::Host::Unix(
            super::pg::DEFAULT_SOCKET_DIR.into()
        )]
    );
    assert_eq!(pg(&c).get_user(), Some("alice"));
    assert_eq!(pg(&c).get_dbname(), Some("game"));
    let c = ok("postgres://dbhost/game", OS_USER);
    assert_eq!(
        pg(&c).get_hosts(),
        &[tokio_postgres::config::Host::Tcp("dbhost".into())]
    );
    assert_eq!(pg(&c).get_user(), Some("alice"));
    // The environment comes before libpq's built-in defaults.
    let c = ok(
        "postgres:///game",
        &[
            ("PGHOST", "envhost"),
            ("PGUSER", "bob"),
            ("(os user)", "alice"),
        ],
    );
    assert_eq!(
        pg(&c).get_hosts(),
        &[tokio_postgres::config::Host::Tcp("envhost".into())]
    );
    assert_eq!(pg(&c).get_user(), Some("bob"));
    // No OS user name found: still refused, naming what is missing.
    assert!(err("postgres:///game", &[]).contains("no user name"));
}

#[test]
fn unsupported_parameters_are_refused_by_name() {
    let m = err(
        "postgres://u@h/db?sslmode=disable&fallback_application_name=x",
        &[],
    );
    assert!(m.contains("\"fallback_application_name\""), "{m}");
    let m = err("postgres://u@h/db?target_session_attrs=prefer-standby", &[]);
    assert!(
        m.contains("\"prefer-standby\"") && m.contains("target_session_attrs"),
        "{m}"
    );
    for v in ["standby", "primary"] {
        let m = err(&format!("postgres://u@h/db?target_session_attrs={v}"), &[]);
        assert!(m.contains(&format!("{v:?}")), "{m}");
    }
    let m = err("postgres://u@h/db?pooler=statement", &[]);
    assert!(m.contains("\"statement\"") && m.contains("pooler"), "{m}");
    // A '?' inside the password is part of it; the parameters start after
    // the '@', and nothing of the password is echoed.
    let c = ok("postgres://u:se?cret=x@h/db", &[]);
    assert_eq!(pg(&c).get_password(), Some(&b"se?cret=x"[..]));
    let m = err("postgres://u:se?cret=x@h/db?foo=1", &[]);
    assert!(m.contains("\"foo\"") && !m.contains("cret"), "{m}");
}

#[test]
fn target_session_attrs_the_driver_honours_and_multi_host_urls() {
    for (v, want) in [
        ("any", tokio_postgres::config::TargetSessionAttrs::Any),
        (
            "read-write",
            tokio_postgres::config::TargetSessionAttrs::ReadWrite,
        ),
        (
            "read-only",
            tokio_postgres::config::TargetSessionAttrs::ReadOnly,
        ),
    ] {
        let c = ok(
            &format!("postgres://u@h1:5432,h2:5433/db?target_session_attrs={v}"),
            &[],
        );
        assert_eq!(pg(&c).get_target_session_attrs(), want);
        assert_eq!(pg(&c).get_ports(), &[5432, 5433]);
        assert!(
            c.redacted_url().contains("@h1:5432,h2:5433/db"),
            "{}",
            c.redacted_url()
        );
    }
}

#[test]
fn pooler_parameter() {
    use super::Pooler;
    assert_eq!(ok("postgres://u@h/db", &[]).pooler(), Pooler::None);
    for p in [Pooler::None, Pooler::Session, Pooler::Transaction] {
        let c = ok(&format!("postgres://u@h/db?pooler={p}"), &[]);
        assert_eq!(c.pooler(), p);
    }
    let c = ok("postgres://u@h/db?pooler=transaction", &[]);
    assert!(
        c.redacted_url().ends_with("&pooler=transaction"),
        "{}",
        c.redacted_url()
    );
    let c = c.with_pooler(Pooler::None);
    assert!(!c.redacted_url().contains("pooler"), "{}", c.redacted_url());
}

#[test]
fn redaction_never_invents_a_password() {
    // No password anywhere: no ":***".
    let m = err("postgres://u@h:bad/db", &[]);
    assert!(!m.contains("***"), "{m}");
    let c = ok("postgres://u@h/db", &[]);
    assert!(!c.redacted_url().contains("***"), "{}", c.redacted_url());
    // A password from the environment is sent: shown masked, never itself.
    let c = ok("postgres://u@h/db", &[("PGPASSWORD", "from-env")]);
    assert_eq!(c.password_source(), Some(PasswordSource::Env));
    assert!(c.redacted_url().contains("u:***@h"), "{}", c.redacted_url());
    assert!(!format!("{c:?}").contains("from-env"));
    // A password in the URL: masked.
    let m = err("postgres://u:pw@h:bad/db", &[]);
    assert!(m.contains("u:***@") && !m.contains("pw"), "{m}");
    let c = ok("postgres://u:pw@h/db", &[]);
    assert!(
        c.redacted_url().starts_with("postgres://u:***@h"),
        "{}",
        c.redacted_url()
    );
}
