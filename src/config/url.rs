//! Parsing of database URLs, and redaction of the URLs echoed in errors.

use std::path::PathBuf;

use super::pg::{self, Env};
use super::topology;
use super::{Config, Durability, SslMode, Target};
use crate::error::{Error, Result};

/// Parses a database URL, completing a PostgreSQL one from `env`.
pub(super) fn parse(url: &str, env: &dyn Env) -> Result<Config> {
    let url = url.trim();
    let (scheme, rest) = url.split_once(':').ok_or_else(|| {
        Error::Config(format!(
            "database URL has no scheme (expected sqlite:// or postgres://): {}",
            redact(url)
        ))
    })?;
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => parse_sqlite(rest),
        "postgres" | "postgresql" => parse_postgres(url, env),
        // Echo a scheme only when it is one (RFC 3986 characters): the
        // text before the first ':' of a key/value string may hold a
        // password ("host=h password=se:cret").
        other
            if other
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            Err(Error::Config(format!(
                "unknown database URL scheme {other:?} (expected sqlite or postgres)"
            )))
        }
        _ => Err(Error::Config(format!(
            "database URL has no valid scheme (expected sqlite:// or postgres://): {}",
            redact(url)
        ))),
    }
}

fn parse_sqlite(rest: &str) -> Result<Config> {
    let (path_part, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    // `sqlite:///abs` -> `/abs`; `sqlite://rel` -> `rel`; `sqlite:rel` -> `rel`.
    let path = path_part.strip_prefix("//").unwrap_or(path_part);
    // Percent-decoded, as in PostgreSQL URLs (`my%20game.db`).
    let path = percent_decode(path).ok_or_else(|| {
        Error::Config(format!(
            "SQLite path is not valid percent-encoded UTF-8 (write '%' as %25): {path}"
        ))
    })?;
    let target = match path.as_str() {
        ":memory:" => Target::SqliteMemory,
        "" => {
            return Err(Error::Config(
                "SQLite URL has no path (expected sqlite://path/to/file.db or sqlite::memory:)"
                    .into(),
            ))
        }
        p if p.contains('\0') => {
            return Err(Error::Config("SQLite path contains a NUL byte".into()))
        }
        p => Target::SqliteFile(PathBuf::from(p)),
    };
    let mut cfg = Config::with_target(target, SslMode::Disable);
    let mut seen: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| Error::Config(format!("SQLite URL parameter {what}"));
        let k = percent_decode(k).ok_or_else(|| bad("name is not valid percent-encoded UTF-8"))?;
        let v = percent_decode(v).ok_or_else(|| bad("value is not valid percent-encoded UTF-8"))?;
        if seen.contains(&k) {
            return Err(bad(&format!("{k:?} is given twice")));
        }
        seen.push(k.clone());
        match (k.as_str(), v.to_ascii_lowercase().as_str()) {
            ("synchronous", "full") => cfg.durability = Durability::Full,
            ("synchronous", "normal") => cfg.durability = Durability::Normal,
            ("synchronous", other) => {
                return Err(Error::Config(format!(
                    "unsupported SQLite synchronous={other:?} (expected full or normal)"
                )))
            }
            (k, _) => {
                return Err(Error::Config(format!(
                    "unknown SQLite URL parameter {k:?} (supported: synchronous)"
                )))
            }
        }
    }
    Ok(cfg)
}

/// The URL parameters read here rather than by tokio-postgres (which does
/// not know them, or knows only some of their values).
const OWN_PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "pooler",
];

fn parse_postgres(url: &str, env: &dyn Env) -> Result<Config> {
    // Read sslmode and the TLS files ourselves: tokio-postgres accepts only
    // some sslmodes (its error does not say which) and no file parameters.
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (own, kept) = own_params(url, base, query)?;
    refuse_misplaced_at(url)?;
    // The parameters start at the first '?' after the credentials (a '?'
    // before the last '@' is part of the user name or password, which the
    // driver reads as such, and is never echoed).
    let params = match url.rfind('@') {
        Some(at) if at > base.len() => url[at..].split_once('?').map(|(_, q)| q),
        _ => query,
    };
    topology::check_params(params.unwrap_or(""), OWN_PARAMS)?;
    let stripped = match (query, kept.iter().any(|p| !p.is_empty())) {
        (Some(_), true) => format!("{base}?{}", kept.join("&")),
        _ => base.to_string(),
    };
    let stripped = pg::with_env_port(&stripped, env)?;
    let mut pg: tokio_postgres::Config = stripped.parse().map_err(|e: tokio_postgres::Error| {
        Error::Config(format!("malformed PostgreSQL URL {}: {e}", redact(url)))
    })?;
    pg::complete_from_env(&mut pg, env)?;
    pg::libpq_defaults(&mut pg, env);
    require_parts(&pg, url)?;
    let password_source = pg::find_password(&mut pg, env);
    let pooler = own.pooler.unwrap_or_default();
    let (ssl_mode, tls) = pg::resolve_tls(own, env)?;
    let mut config = Config::with_target(Target::Postgres(Box::new(pg)), ssl_mode);
    config.pooler = pooler;
    config.tls = tls;
    config.password_source = password_source;
    Ok(config)
}

/// The query parameters persist reads itself (sslmode and the TLS files),
/// and the others, kept for tokio-postgres.
fn own_params<'u>(
    url: &str,
    base: &str,
    query: Option<&'u str>,
) -> Result<(pg::UrlParams, Vec<&'u str>)> {
    let mut own = pg::UrlParams::default();
    let mut kept: Vec<&str> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !k.is_empty() && seen.contains(&k) {
            // Which one wins differs between parsers: refuse.
            return Err(Error::Config(format!(
                "PostgreSQL URL parameter {k:?} is given twice"
            )));
        }
        seen.push(k);
        if !OWN_PARAMS.contains(&k) {
            kept.push(pair);
            continue;
        }
        if k != "sslmode" && url.rfind('@') > Some(base.len()) {
            // The '?' is inside the user name or password: a file name
            // taken from there would be a piece of the password.
            return Err(question_mark_in_credentials(url));
        }
        if k == "pooler" {
            own.pooler = Some(topology::parse_pooler(v)?);
            continue;
        }
        if k == "sslmode" {
            own.ssl_mode = Some(SslMode::parse(v).ok_or_else(|| {
                // Echo nothing: the value may be a piece of a password that
                // contained "?sslmode=".
                Error::Config(format!(
                    "unsupported sslmode (supported: {})",
                    pg::SSL_MODES
                ))
            })?);
            continue;
        }
        if k == "sslpassword" {
            // A secret: never echoed, not even when malformed.
            own.key_password = Some(percent_decode(v).ok_or_else(|| {
                Error::Config("sslpassword is not valid percent-encoded UTF-8".into())
            })?);
            continue;
        }
        // sslrootcert, sslcert or sslkey: paths, not secrets.
        let v = percent_decode(v)
            .ok_or_else(|| Error::Config(format!("{k} is not valid percent-encoded UTF-8")))?;
        let v = (!v.is_empty()).then_some(v);
        match k {
            "sslrootcert" => own.root_cert = v,
            "sslcert" => own.cert = v.map(PathBuf::from),
            _ => own.key = v.map(PathBuf::from),
        }
    }
    Ok((own, kept))
}

fn question_mark_in_credentials(url: &str) -> Error {
    Error::Config(format!(
        "PostgreSQL URL has a '?' before its '@' (percent-encode '?' in a user name \
         or password as %3F): {}",
        redact(url)
    ))
}

/// tokio-postgres ends the credentials at the *first* `@`, wherever it is:
/// a raw `@` in a password (in the userinfo or a `password=` parameter)
/// would make part of the password the user, host or database name, which
/// are shown in logs. Refuse instead.
fn refuse_misplaced_at(url: &str) -> Result<()> {
    let misplaced_at = match url.find('@') {
        Some(at) => url[at + 1..].contains('@') || password_value(url).is_some_and(|v| v <= at),
        None => false,
    };
    if misplaced_at {
        return Err(Error::Config(format!(
            "PostgreSQL URL has an '@' that does not end the user name and password \
             (percent-encode '@' elsewhere as %40): {}",
            redact(url)
        )));
    }
    Ok(())
}

/// A host, a database name and a user name, after the environment filled
/// in what the URL left out.
fn require_parts(pg: &tokio_postgres::Config, url: &str) -> Result<()> {
    if pg.get_hosts().is_empty() {
        return Err(Error::Config(format!(
            "PostgreSQL URL has no host: {}",
            redact(url)
        )));
    }
    if matches!(pg.get_dbname(), None | Some("")) {
        return Err(Error::Config(format!(
            "PostgreSQL URL has no database name (expected postgres://user@host/DATABASE): {}",
            redact(url)
        )));
    }
    if pg.get_user().is_none() {
        return Err(Error::Config(format!(
            "PostgreSQL URL has no user name (expected postgres://USER@host/database): {}",
            redact(url)
        )));
    }
    Ok(())
}

/// Decodes `%XX` escapes (and nothing else: `+` stays `+`, as libpq reads
/// it); `None` when an escape is malformed or the bytes are not UTF-8.
pub(super) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Hides the password of a URL-shaped string for error messages, without
/// trusting that it parses. Two spans of the input are masked:
/// - after `scheme:` and any slashes, what follows the user name up to the
///   *last* `@` (the user name is kept);
/// - from the first `password` keyword on (any letter case, letters and `=`
///   possibly percent-encoded, spaces around `=` allowed), everything after
///   its `=`: where its value ends (`&`, whitespace, a closing quote) depends
///   on which syntax a parser would have taken, so nothing after it is shown.
fn redact(url: &str) -> String {
    let userinfo = url.split_once(':').and_then(|(scheme, rest)| {
        let body_at = scheme.len() + 1 + (rest.len() - rest.trim_start_matches('/').len());
        let body = &url[body_at..];
        let at = body.rfind('@')?;
        // No ':' before the '@': the URL has no password to hide.
        let user_len = body[..at].find(':')?;
        Some((body_at + user_len, body_at + at))
    });
    match (userinfo, password_value(url)) {
        (Some((start, _)), Some(v)) if v < start => format!("{}***", &url[..v]),
        (Some((start, end)), Some(v)) if v < end => format!("{}:***", &url[..start]),
        (Some((start, end)), Some(v)) => format!("{}:***{}***", &url[..start], &url[end..v]),
        (Some((start, end)), None) => format!("{}:***{}", &url[..start], &url[end..]),
        (None, Some(v)) => format!("{}***", &url[..v]),
        (None, None) => url.to_string(),
    }
}

/// Where the value of the first `password` keyword starts (see [`redact`]).
fn password_value(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    // One keyword byte at `i`, literal (any case) or `%XX`: its length.
    let letter = |i: usize, want: u8| -> Option<usize> {
        match b.get(i)? {
            c if c.eq_ignore_ascii_case(&want) => Some(1),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                let c = u8::from_str_radix(hex, 16).ok()?;
                c.eq_ignore_ascii_case(&want).then_some(3)
            }
            _ => None,
        }
    };
    let skip_ws = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    (0..b.len()).find_map(|start| {
        let mut i = start;
        for want in b"password" {
            i += letter(i, *want)?;
        }
        let i = skip_ws(i);
        Some(skip_ws(i + letter(i, b'=')?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendKind, DEFAULT_DATABASE_URL};
    use std::path::Path;

    fn config_err(url: &str) -> String {
        match Config::from_url(url) {
            Err(Error::Config(m)) => m,
            other => panic!("expected Error::Config for {url:?}, got {other:?}"),
        }
    }

    #[test]
    fn sqlite_forms() {
        let rel = Config::from_url("sqlite://data/game.db").unwrap();
        assert_eq!(rel.backend(), BackendKind::Sqlite);
        assert_eq!(rel.sqlite_path(), Some(Path::new("data/game.db")));
        let abs = Config::from_url("sqlite:///var/lib/game.db").unwrap();
        assert_eq!(abs.sqlite_path(), Some(Path::new("/var/lib/game.db")));
        let bare = Config::from_url("sqlite:game.db").unwrap();
        assert_eq!(bare.sqlite_path(), Some(Path::new("game.db")));
        for mem in ["sqlite::memory:", "sqlite://:memory:"] {
            let m = Config::from_url(mem).unwrap();
            assert!(matches!(m.target, Target::SqliteMemory), "{mem}");
            assert_eq!(m.sqlite_path(), None);
        }
        let normal = Config::from_url("sqlite://x.db?synchronous=normal").unwrap();
        assert_eq!(normal.durability(), Durability::Normal);
        assert_eq!(rel.durability(), Durability::Full);
        assert_eq!(rel.sqlite_max_size(), None);
        let capped = rel.clone().with_sqlite_max_size(Some(1 << 20));
        assert_eq!(capped.sqlite_max_size(), Some(1 << 20));
        assert!(format!("{capped:?}").contains("sqlite_max_size: Some(1048576)"));
        assert_eq!(capped.with_sqlite_max_size(None).sqlite_max_size(), None);
    }

    #[test]
    fn default_url_is_a_sqlite_file_in_the_working_directory() {
        let c = Config::from_url(DEFAULT_DATABASE_URL).unwrap();
        assert_eq!(c.sqlite_path(), Some(Path::new("persist.db")));
    }

    #[test]
    fn postgres_forms() {
        let c = Config::from_url("postgres://alice:s3cret@db.example:6543/game?sslmode=require")
            .unwrap();
        assert_eq!(c.backend(), BackendKind::Postgres);
        assert_eq!(c.postgres_database(), Some("game"));
        assert_eq!(c.ssl_mode(), SslMode::Require);
        let Target::Postgres(pg) = &c.target else {
            panic!("not postgres")
        };
        assert_eq!(pg.get_user(), Some("alice"));
        assert_eq!(pg.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(pg.get_ports(), &[6543]);

        let c = Config::from_url("postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/test").unwrap();
        let Target::Postgres(pg) = &c.target else {
            panic!("not postgres")
        };
        assert_eq!(
            pg.get_hosts(),
            &[tokio_postgres::config::Host::Unix(
                "/var/run/postgresql".into()
            )]
        );
        assert_eq!(c.ssl_mode(), SslMode::Prefer);
        let c = Config::from_url("postgres://postgres@localhost/test?sslmode=disable").unwrap();
        assert_eq!(c.ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn bad_urls_are_typed_errors_with_a_reason() {
        assert!(config_err("mysql://root@localhost/db").contains("unknown database URL scheme"));
        assert!(config_err("just-a-path.db").contains("no scheme"));
        assert!(config_err("sqlite://").contains("no path"));
        assert!(config_err("sqlite://x.db?journal=delete").contains("unknown SQLite URL parameter"));
        assert!(config_err("sqlite://x.db?synchronous=off").contains("synchronous"));
        assert!(config_err("postgres://postgres@localhost").contains("no database name"));
        assert!(config_err("postgres://postgres@localhost/").contains("no database name"));
        assert!(config_err("postgres://u@h/db?sslmode=verify-fool").contains("unsupported sslmode"));
        assert!(
            config_err("postgres://u@h/db?sslmode=verify-full").contains("needs root certificates")
        );
        assert!(config_err("postgres://u:pw@h:notaport/db").contains("malformed"));
    }

    #[test]
    fn debug_and_errors_never_show_the_password() {
        let c = Config::from_url("postgres://alice:hunter2@db/game").unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("alice:***@db:5432/game"), "{dbg}");
        let msg = config_err("postgres://alice:hunter2@db:bad/game");
        assert!(!msg.contains("hunter2"), "{msg}");
        for url in [
            "postgres://alice:hunter2@db",
            "postgres://u@h?password=hunter2",
            "postgres://u@h/?sslmode=disable&password=hunter2",
            "postgres://u:hun/ter2@h:bad/db",
            "postgres://u:hun?ter2@h:bad/db",
            "postgres:password=hunter2 host=x",
        ] {
            let msg = config_err(url);
            assert!(
                !msg.contains("hunter2") && !msg.contains("ter2"),
                "{url} -> {msg}"
            );
        }
    }
}
