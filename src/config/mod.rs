//! Database configuration, parsed from a URL and, for PostgreSQL, completed
//! from libpq's environment variables and password file.

mod migration;
mod pg;
mod pgpass;
mod replicas;
mod sweep;
mod timeouts;
mod topology;
mod url;

#[cfg(test)]
mod env_tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub(crate) use crate::backend::BackendKind;
use crate::error::{Error, Result};

pub(crate) use pg::TlsFiles;
pub use pg::{PasswordSource, SslRootCert};
pub(crate) use timeouts::deadline_after;
pub use topology::Pooler;

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

/// PostgreSQL `sslmode`, with libpq's six values and meanings.
///
/// Only [`SslMode::VerifyFull`] protects against an active man in the
/// middle: it checks that the server's certificate chains to a trusted root
/// ([`SslRootCert`]) *and* names the host connected to. [`SslMode::VerifyCa`]
/// checks the chain only. The weaker modes encrypt without authenticating the
/// server, except that, as in libpq, a root certificate given with
/// `sslrootcert` (or found at `~/.postgresql/root.crt`) makes them check the
/// chain too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Plaintext first; TLS only when the server refuses a plaintext
    /// connection.
    Allow,
    /// TLS when the server offers it, else plaintext; also plaintext when the
    /// server refuses the TLS connection. The default, as in libpq.
    #[default]
    Prefer,
    /// TLS or nothing. The certificate is not checked unless a root
    /// certificate is given (then as [`SslMode::VerifyCa`]).
    Require,
    /// TLS, and the server certificate must chain to a trusted root.
    VerifyCa,
    /// TLS, the certificate must chain to a trusted root and name the host
    /// (a DNS name or IP address in its subject alternative names).
    VerifyFull,
}

impl SslMode {
    /// libpq's name of the mode (`verify-full`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The mode named `s` (libpq's names), if any.
    pub(crate) fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
///   in the host part, or as `?host=/var/run/postgresql`); `sslmode` is one
///   of libpq's six ([`SslMode`]); `sslrootcert=FILE|system`,
///   `sslcert=FILE`, `sslkey=FILE`, `sslpassword=PASSPHRASE` (an encrypted
///   PKCS#8 key) and `channel_binding=disable|prefer|require`
///   as in libpq; `pooler=none|session|transaction` ([`Pooler`]);
///   `target_session_attrs=any|read-write|read-only`;
///   `replica=HOST[:PORT]` (repeatable) names a read replica
///   ([`Config::with_replica_url`]). Any other parameter is refused, naming it.
/// - `postgres:///database` and `postgres://host/database`: as libpq, the
///   socket directory `/var/run/postgresql` and the operating-system user
///   where neither the URL nor the environment gives them.
///
/// For PostgreSQL, what the URL leaves out is taken, as libpq does, from
/// `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`,
/// `PGSSLCERT` and `PGSSLKEY`; the password from the URL, else `PGPASSWORD`,
/// else the password file (`PGPASSFILE`, default `~/.pgpass`; see
/// [`PasswordSource`]).
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
    pub(crate) statement_lock_timeout: Duration,
    pub(crate) lock_retries: u32,
    pub(crate) durability: Durability,
    pub(crate) ssl_mode: SslMode,
    pub(crate) tls: TlsFiles,
    pub(crate) password_source: Option<PasswordSource>,
    pub(crate) sqlite_max_size: Option<u64>,
    pub(crate) shared_reads: usize,
    pub(crate) read_only: bool,
    pub(crate) pooler: Pooler,
    pub(crate) session_settings: Vec<(String, String)>,
    /// Read replicas (PostgreSQL only; see `replicas.rs`).
    pub(crate) replicas: Vec<Config>,
    pub(crate) replica_max_lag: Duration,
    pub(crate) replica_check_interval: Duration,
    /// See `sweep.rs`.
    pub(crate) sqlite_sweep_autocheckpoint: bool,
}

impl Config {
    /// Parses a database URL.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown scheme, a malformed URL, a PostgreSQL
    /// URL without host, user or database name (after the environment
    /// variables), an unsupported `sslmode`, `sslmode=verify-ca|verify-full`
    /// without a root certificate, a weak `sslmode` with
    /// `sslrootcert=system`, or an unknown SQLite parameter.
    pub fn from_url(url: &str) -> Result<Self> {
        replicas::parse(url, &pg::ProcessEnv)
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

    pub(crate) fn with_target(target: Target, ssl_mode: SslMode) -> Self {
        Config {
            target,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(30)),
            busy_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(60),
            statement_lock_timeout: Duration::from_secs(3),
            lock_retries: 5,
            durability: Durability::Full,
            ssl_mode,
            tls: TlsFiles::default(),
            password_source: None,
            sqlite_max_size: None,
            shared_reads: 2,
            read_only: false,
            pooler: Pooler::None,
            session_settings: Vec::new(),
            replicas: Vec::new(),
            replica_max_lag: replicas::DEFAULT_MAX_LAG,
            replica_check_interval: replicas::DEFAULT_CHECK_INTERVAL,
            sqlite_sweep_autocheckpoint: false,
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
                // A password from the URL, PGPASSWORD or the password file:
                // one is sent, so say so (never when there is none).
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
                let ssl = self.ssl_mode.as_str();
                let pooler = match self.pooler {
                    Pooler::None => String::new(),
                    p => format!("&pooler={p}"),
                };
                format!(
                    "postgres://{user}{pw}@{}/{}?sslmode={ssl}{pooler}",
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

    /// Inspection only: a SQLite file is opened read-only, must already exist
    /// (a missing file is [`Error::Unavailable`] naming it, never created) and
    /// keeps its journal mode; a database in a read-only directory can still be
    /// read. Writes fail. No effect on PostgreSQL and in-memory databases.
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Whether the handle is for inspection only (see [`Config::with_read_only`]).
    pub fn read_only(&self) -> bool {
        self.read_only
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

    /// Sets the PostgreSQL `sslmode` (as `?sslmode=` does).
    pub fn with_ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = mode;
        self
    }

    /// The root certificates the server's certificate is checked against
    /// (`sslrootcert`, `PGSSLROOTCERT`, or `~/.postgresql/root.crt` when it
    /// exists), if any.
    pub fn ssl_root_cert(&self) -> Option<&SslRootCert> {
        self.tls.root_cert.as_ref()
    }

    /// Sets the root certificates (as `?sslrootcert=` does).
    pub fn with_ssl_root_cert(mut self, root: Option<SslRootCert>) -> Self {
        self.tls.root_cert = root;
        self
    }

    /// The client certificate and key files (`sslcert`, `sslkey`), if a
    /// client certificate is used.
    pub fn ssl_client_cert(&self) -> Option<(&Path, &Path)> {
        Some((self.tls.cert.as_deref()?, self.tls.key.as_deref()?))
    }

    /// Sets the client certificate (PEM, the first one the client's, the
    /// rest its chain) and its private key (PEM: PKCS#8, PKCS#1 or SEC1,
    /// unencrypted; refused when group- or world-readable, as libpq does).
    pub fn with_ssl_client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.tls.cert = Some(cert.into());
        self.tls.key = Some(key.into());
        self
    }

    /// Sets the passphrase of an encrypted client key (as `?sslpassword=`
    /// does; PKCS#8 `ENCRYPTED PRIVATE KEY` PEM, PBES2). Never shown by
    /// `Debug`, errors or logs.
    pub fn with_ssl_key_password(mut self, passphrase: impl Into<String>) -> Self {
        self.tls.key_password = Some(pg::KeyPassword(passphrase.into()));
        self
    }

    /// Where the PostgreSQL password came from, if there is one.
    pub fn password_source(&self) -> Option<PasswordSource> {
        self.password_source
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
            .field("statement_lock_timeout", &self.statement_lock_timeout)
            .field("lock_retries", &self.lock_retries)
            .field("durability", &self.durability)
            .field("sqlite_max_size", &self.sqlite_max_size)
            .field("shared_reads", &self.shared_reads)
            .field("pooler", &self.pooler)
            .field("password_source", &self.password_source)
            .field("ssl_root_cert", &self.tls.root_cert)
            .field("ssl_cert", &self.tls.cert)
            .field("ssl_key", &self.tls.key)
            .field("ssl_key_password", &self.tls.key_password)
            .field("replicas", &self.replica_urls())
            .finish()
    }
}
