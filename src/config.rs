//! Database configuration, parsed from a URL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use crate::backend::BackendKind;
use crate::error::{Error, Result};

/// The URL used when neither a URL nor `DATABASE_URL` is given: a SQLite file
/// in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://persist.db";

/// SQLite durability level (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// `synchronous=FULL`: no acknowledged commit is lost on power loss
    /// (PostgreSQL's default behaviour). The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: in WAL mode the database stays consistent, but the
    /// last commits before a power loss (not a process crash) may be lost.
    Normal,
}

/// PostgreSQL `sslmode`, with libpq's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it. The default, as in libpq.
    #[default]
    Prefer,
    /// Require TLS; as in libpq, the server certificate is not verified.
    Require,
}

#[derive(Clone)]
pub(crate) enum Target {
    SqliteFile(PathBuf),
    SqliteMemory,
    Postgres(Box<tokio_postgres::Config>),
}

/// How to reach the database, and the knobs of the connection pool.
///
/// Built from a URL with [`Config::from_url`] (or [`Config::from_env`]), then
/// adjusted with the `with_*` methods. `Debug` never shows a password.
///
/// Accepted URLs:
/// - `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, `sqlite:path.db`
/// - `sqlite::memory:` (also `sqlite://:memory:`): a private in-memory database
/// - `postgres://` or `postgresql://user:password@host:port/database?sslmode=...`,
///   with `host` a name, an address, or a Unix socket directory (percent-encoded
///   in the host part, or as `?host=/var/run/postgresql`); `sslmode` is
///   `disable`, `prefer` (default) or `require`.
///
/// SQLite URLs also take `?synchronous=full|normal` (see [`Durability`]).
#[derive(Clone)]
pub struct Config {
    pub(crate) target: Target,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) acquire_timeout: Duration,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) busy_timeout: Duration,
    pub(crate) lock_timeout: Duration,
    pub(crate) durability: Durability,
    pub(crate) ssl_mode: SslMode,
    pub(crate) sqlite_max_size: Option<u64>,
    pub(crate) shared_reads: usize,
}

impl Config {
    /// Parses a database URL.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown scheme, a malformed URL, a PostgreSQL
    /// URL without host or database name, an unsupported `sslmode` or an
    /// unknown SQLite parameter.
    pub fn from_url(url: &str) -> Result<Self> {
        let url = url.trim();
        let (scheme, rest) = url.split_once(':').ok_or_else(|| {
            Error::Config(format!(
                "database URL has no scheme (expected sqlite:// or postgres://): {}",
                redact(url)
            ))
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => parse_sqlite(rest),
            "postgres" | "postgresql" => parse_postgres(url),
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

    /// Reads `DATABASE_URL`, or uses [`DEFAULT_DATABASE_URL`] when it is unset
    /// or empty.
    ///
    /// # Errors
    /// As [`Config::from_url`]; also [`Error::Config`] when `DATABASE_URL` is
    /// not valid Unicode.
    pub fn from_env() -> Result<Self> {
        match std::env::var("DATABASE_URL") {
            Ok(u) if !u.trim().is_empty() => Self::from_url(&u),
            Ok(_) | Err(std::env::VarError::NotPresent) => Self::from_url(DEFAULT_DATABASE_URL),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::Config("DATABASE_URL is not valid Unicode".into()))
            }
        }
    }

    fn with_target(target: Target, ssl_mode: SslMode) -> Self {
        Config {
            target,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(30)),
            busy_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(60),
            durability: Durability::Full,
            ssl_mode,
            sqlite_max_size: None,
            shared_reads: 2,
        }
    }

    /// The backend this configuration selects.
    pub fn backend(&self) -> BackendKind {
        match self.target {
            Target::SqliteFile(_) | Target::SqliteMemory => BackendKind::Sqlite,
            Target::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The SQLite file path, for a file database.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.target {
            Target::SqliteFile(p) => Some(p),
            _ => None,
        }
    }

    /// The PostgreSQL database name, for a PostgreSQL configuration.
    pub fn postgres_database(&self) -> Option<&str> {
        match &self.target {
            Target::Postgres(c) => c.get_dbname(),
            _ => None,
        }
    }

    /// The URL with any password replaced by `***`, for logs and messages.
    pub fn redacted_url(&self) -> String {
        match &self.target {
            Target::SqliteMemory => "sqlite::memory:".to_string(),
            Target::SqliteFile(p) => format!("sqlite://{}", p.display()),
            Target::Postgres(c) => {
                let user = c.get_user().unwrap_or("");
                let pw = if c.get_password().is_some() {
                    ":***"
                } else {
                    ""
                };
                let hosts: Vec<String> = c
                    .get_hosts()
                    .iter()
                    .zip(c.get_ports().iter().chain(std::iter::repeat(&5432)))
                    .map(|(h, port)| match h {
                        tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                        tokio_postgres::config::Host::Unix(p) => {
                            format!("[{}]:{port}", p.display())
                        }
                    })
                    .collect();
                let ssl = match self.ssl_mode {
                    SslMode::Disable => "disable",
                    SslMode::Prefer => "prefer",
                    SslMode::Require => "require",
                };
                format!(
                    "postgres://{user}{pw}@{}/{}?sslmode={ssl}",
                    hosts.join(","),
                    c.get_dbname().unwrap_or("")
                )
            }
        }
    }

    /// Maximum number of pooled connections. PostgreSQL: the pool size.
    /// SQLite: the number of reader connections (there is always exactly one
    /// writer connection besides them). Defaults to 8. Values below 1 are
    /// raised to 1.
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// PostgreSQL: on how many pooled connections single-statement reads
    /// (every repository read outside a unit of work) may run *shared*,
    /// pipelined with other reads on the same connection, instead of each
    /// checking a connection out for itself. Defaults to 2; capped at the
    /// pool size minus one, so reads never hold every connection (a pool of
    /// one shares nothing); 0 gives every read a connection of its own.
    /// Ignored for SQLite.
    ///
    /// A shared connection counts against the pool size while reads are in
    /// flight on it and goes back to the pool when the last one ends. Writes,
    /// units of work and the migrator always get a connection of their own.
    /// A read takes a free pooled connection for a shared connection of its
    /// own only when one is free at once; otherwise it shares a busy one.
    /// The price of sharing: a read waits for the reads queued before it on
    /// the same connection (reads are short point and list queries), that
    /// wait counts against its client deadline (statement timeout + 2 s), and
    /// a connection that fails fails every read in flight on it.
    pub fn with_shared_read_connections(mut self, n: usize) -> Self {
        self.shared_reads = n;
        self
    }

    /// How long establishing one connection may take. Defaults to 5 s.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long a call may wait for a free pooled connection (or, on SQLite,
    /// for the writer connection). Defaults to 5 s.
    pub fn with_acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }

    /// PostgreSQL `statement_timeout`; `None` disables it. Defaults to 30 s.
    pub fn with_statement_timeout(mut self, d: Option<Duration>) -> Self {
        self.statement_timeout = d;
        self
    }

    /// SQLite busy timeout: how long a statement waits for a lock held by
    /// another process. Defaults to 5 s.
    pub fn with_busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }

    /// How long the migration runner waits for the migration lock held by
    /// another migrator. Defaults to 60 s.
    pub fn with_migration_lock_timeout(mut self, d: Duration) -> Self {
        self.lock_timeout = d;
        self
    }

    /// SQLite durability level. Defaults to [`Durability::Full`].
    pub fn with_durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Caps the size of a SQLite database at `bytes`; `None` (the default)
    /// sets no cap beyond SQLite's own limit. Ignored for PostgreSQL.
    ///
    /// Applied as `PRAGMA max_page_count` (the cap in whole pages of the
    /// database's page size, rounded down, at least one page) on every
    /// connection, and read back when the connection opens. A write that
    /// would grow the database past the cap fails with
    /// [`Error::StorageFull`]: the statement (and, inside a unit of work, the
    /// whole unit) is rolled back, the data already stored stays intact and
    /// readable, and writes that fit in free pages (space freed by deletes)
    /// keep working. To grow past it, open a handle with a larger cap.
    ///
    /// The cap bounds the main database file. The write-ahead log beside it
    /// (`-wal`) comes on top: up to about 4 MiB between automatic
    /// checkpoints, more while long reads hold a checkpoint back. A database
    /// already larger than the cap is never truncated: it is held at its
    /// current size (a warning is logged when it is opened).
    pub fn with_sqlite_max_size(mut self, bytes: Option<u64>) -> Self {
        self.sqlite_max_size = bytes;
        self
    }

    /// The SQLite size cap in bytes (see [`Config::with_sqlite_max_size`]).
    pub fn sqlite_max_size(&self) -> Option<u64> {
        self.sqlite_max_size
    }

    /// The pool size (see [`Config::with_pool_size`]).
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// The SQLite durability level.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The PostgreSQL `sslmode`.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }
}

impl FromStr for Config {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_url(s)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("busy_timeout", &self.busy_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("durability", &self.durability)
            .field("sqlite_max_size", &self.sqlite_max_size)
            .field("shared_reads", &self.shared_reads)
            .finish()
    }
}

fn parse_sqlite(rest: &str) -> Result<Config> {
    let (path_part, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    // `sqlite:///abs` -> `/abs`; `sqlite://rel` -> `rel`; `sqlite:rel` -> `rel`.
    let path = path_part.strip_prefix("//").unwrap_or(path_part);
    let target = match path {
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
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (k, v.to_ascii_lowercase().as_str()) {
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

fn parse_postgres(url: &str) -> Result<Config> {
    // Read sslmode ourselves: tokio-postgres accepts only a subset and its
    // error does not say which values are supported.
    let mut ssl_mode = SslMode::Prefer;
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix("sslmode=") {
                ssl_mode = match v {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    // Echo only libpq's own names: anything else may be a
                    // piece of a password that contained "?sslmode=".
                    other @ ("allow" | "verify-ca" | "verify-full") => {
                        return Err(Error::Config(format!(
                            "unsupported sslmode {other:?} (supported: disable, prefer, require)"
                        )))
                    }
                    _ => {
                        return Err(Error::Config(
                            "unsupported sslmode (supported: disable, prefer, require)".into(),
                        ))
                    }
                };
            }
        }
    }
    // tokio-postgres ends the credentials at the *first* `@`, wherever it is:
    // a raw `@` in a password (in the userinfo or a `password=` parameter)
    // would make part of the password the user, host or database name, which
    // are shown in logs. Refuse instead.
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
    let pg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        Error::Config(format!("malformed PostgreSQL URL {}: {e}", redact(url)))
    })?;
    if pg.get_hosts().is_empty() {
        return Err(Error::Config(format!(
            "PostgreSQL URL has no host: {}",
            redact(url)
        )));
    }
    match pg.get_dbname() {
        None | Some("") => {
            return Err(Error::Config(format!(
                "PostgreSQL URL has no database name (expected postgres://user@host/DATABASE): {}",
                redact(url)
            )))
        }
        Some(_) => {}
    }
    if pg.get_user().is_none() {
        return Err(Error::Config(format!(
            "PostgreSQL URL has no user name (expected postgres://USER@host/database): {}",
            redact(url)
        )));
    }
    Ok(Config::with_target(
        Target::Postgres(Box::new(pg)),
        ssl_mode,
    ))
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
        let user_len = body[..at].find(':').unwrap_or(at);
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
        assert!(config_err("postgres://localhost/db").contains("no user name"));
        assert!(config_err("postgres://u@h/db?sslmode=verify-full").contains("unsupported sslmode"));
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
