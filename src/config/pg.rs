//! PostgreSQL settings as libpq finds them: the URL first, then libpq's
//! environment variables, the password file, and the files under
//! `~/.postgresql/`.

use std::fmt;
use std::path::PathBuf;

use super::pgpass;
use super::SslMode;
use crate::error::{Error, Result};

/// The accepted `sslmode` values, for error messages.
pub(super) const SSL_MODES: &str = "disable, allow, prefer, require, verify-ca, verify-full";

/// Where environment variables come from: the process, or (in tests) a map.
pub(crate) trait Env {
    /// The variable's value; `None` when unset, empty or not Unicode.
    fn var(&self, name: &str) -> Option<String>;
    /// The name of the operating-system user this process runs as (libpq's
    /// default user name).
    fn os_user(&self) -> Option<String>;
}

/// The process environment.
pub(crate) struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn os_user(&self) -> Option<String> {
        effective_user().or_else(|| self.var("USER"))
    }
}

/// The effective user's name, as libpq finds it (`getpwuid(geteuid())`):
/// the effective uid from `/proc/self/status`, its name from `/etc/passwd`.
fn effective_user() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    })
}

/// libpq's default socket directory (Debian's and most distributions').
pub(crate) const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// What libpq assumes when neither the URL nor the environment says: the
/// local socket in its default directory, and the operating-system user.
pub(super) fn libpq_defaults(pg: &mut tokio_postgres::Config, env: &dyn Env) {
    if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
        pg.host_path(DEFAULT_SOCKET_DIR);
    }
    if pg.get_user().is_none() {
        if let Some(user) = env.os_user() {
            pg.user(&user);
        }
    }
}

/// A fixed list of variables, for tests.
#[cfg(test)]
pub(crate) struct Vars<'a>(pub(crate) &'a [(&'a str, &'a str)]);

#[cfg(test)]
impl Env for Vars<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.is_empty())
    }

    fn os_user(&self) -> Option<String> {
        self.var("(os user)")
    }
}

/// The root certificates a server certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SslRootCert {
    /// A PEM file with one or more CA certificates (`sslrootcert=FILE`).
    File(PathBuf),
    /// The platform's trusted roots (`sslrootcert=system`, as in libpq 16):
    /// implies `sslmode=verify-full`, and a weaker explicit mode is refused.
    System,
}

/// Where a PostgreSQL password came from, in libpq's order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordSource {
    /// The URL (`user:password@` or `?password=`). Visible to other local
    /// users in the process list when passed on a command line.
    Url,
    /// The `PGPASSWORD` environment variable.
    Env,
    /// The password file (`PGPASSFILE`, default `~/.pgpass`).
    PasswordFile,
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PasswordSource::Url => "the URL",
            PasswordSource::Env => "PGPASSWORD",
            PasswordSource::PasswordFile => "the password file",
        })
    }
}

/// The TLS files of a PostgreSQL configuration. Paths only: the files are
/// read when connecting. None of them is a secret (a key's path is not);
/// the key's passphrase is, and its `Debug` hides it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) root_cert: Option<SslRootCert>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) key_password: Option<KeyPassword>,
}

/// The passphrase of an encrypted client key (`sslpassword`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KeyPassword(pub(crate) String);

impl fmt::Debug for KeyPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The TLS parameters found in the URL.
#[derive(Debug, Default)]
pub(super) struct UrlParams {
    pub(super) ssl_mode: Option<SslMode>,
    pub(super) root_cert: Option<String>,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) key_password: Option<String>,
    pub(super) pooler: Option<super::Pooler>,
}

/// Fills host, port, user and database from `PGHOST`, `PGPORT`, `PGUSER`
/// and `PGDATABASE` where the URL left them out.
pub(super) fn complete_from_env(pg: &mut tokio_postgres::Config, env: &dyn Env) -> Result<()> {
    if pg.get_hosts().is_empty() {
        if let Some(hosts) = env.var("PGHOST") {
            for h in hosts.split(',').filter(|h| !h.is_empty()) {
                pg.host(h);
            }
        }
    }
    if pg.get_ports().is_empty() {
        if let Some(ports) = env.var("PGPORT") {
            for p in ports.split(',') {
                let port = p
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| Error::Config(format!("PGPORT is not a port number: {p:?}")))?;
                pg.port(port);
            }
        }
    }
    if pg.get_user().is_none() {
        if let Some(user) = env.var("PGUSER") {
            pg.user(&user);
        }
    }
    if pg.get_dbname().is_none_or(str::is_empty) {
        if let Some(db) = env.var("PGDATABASE") {
            pg.dbname(&db);
        }
    }
    Ok(())
}

/// The host name a password file line is matched against: as libpq does, a
/// socket in a default socket directory counts as `localhost`.
fn pgpass_host(host: &tokio_postgres::config::Host) -> String {
    match host {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => {
            let p = p.to_string_lossy();
            match p.trim_end_matches('/') {
                "/var/run/postgresql" | "/run/postgresql" | "/tmp" => "localhost".into(),
                other => other.into(),
            }
        }
    }
}

/// Sets the password from `PGPASSWORD` or the password file when the URL
/// gave none; returns where the password came from. With several hosts the
/// password file's first match for any of them, in order, is used
/// (tokio-postgres sends one password to every host).
pub(super) fn find_password(
    pg: &mut tokio_postgres::Config,
    env: &dyn Env,
) -> Option<PasswordSource> {
    if pg.get_password().is_some() {
        return Some(PasswordSource::Url);
    }
    if let Some(pw) = env.var("PGPASSWORD") {
        pg.password(pw);
        return Some(PasswordSource::Env);
    }
    let file = env
        .var("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env.var("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let user = pg.get_user()?.to_string();
    let db = pg.get_dbname()?.to_string();
    let ports = pg.get_ports().to_vec();
    let hosts: Vec<String> = pg.get_hosts().iter().map(pgpass_host).collect();
    let entries = pgpass::read(&file)?;
    let pw = hosts.iter().enumerate().find_map(|(i, host)| {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        pgpass::lookup(&entries, host, port, &db, &user)
    })?;
    pg.password(pw);
    Some(PasswordSource::PasswordFile)
}

/// The effective `sslmode` and TLS files: the URL's, else `PGSSLMODE`,
/// `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, else libpq's defaults under
/// `~/.postgresql/` when those files exist.
pub(super) fn resolve_tls(url: UrlParams, env: &dyn Env) -> Result<(SslMode, TlsFiles)> {
    let explicit_mode = match url.ssl_mode {
        Some(m) => Some(m),
        None => match env.var("PGSSLMODE") {
            Some(v) => Some(SslMode::parse(&v).ok_or_else(|| {
                Error::Config(format!("unsupported PGSSLMODE (supported: {SSL_MODES})"))
            })?),
            None => None,
        },
    };
    let home_file = |name: &str| {
        env.var("HOME")
            .map(|h| PathBuf::from(h).join(".postgresql").join(name))
    };
    let root_cert = match url.root_cert.or_else(|| env.var("PGSSLROOTCERT")) {
        Some(v) if v == "system" => Some(SslRootCert::System),
        Some(v) => Some(SslRootCert::File(PathBuf::from(v))),
        None => home_file("root.crt")
            .filter(|p| p.is_file())
            .map(SslRootCert::File),
    };
    let mode = match (explicit_mode, &root_cert) {
        (None, Some(SslRootCert::System)) => SslMode::VerifyFull,
        (Some(m), Some(SslRootCert::System)) if m != SslMode::VerifyFull => {
            return Err(Error::Config(format!(
                "weak sslmode {m} may not be used with sslrootcert=system (use verify-full)"
            )))
        }
        (m, _) => m.unwrap_or_default(),
    };
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        return Err(Error::Config(format!(
            "sslmode={mode} needs root certificates to check the server against: give \
             sslrootcert=FILE (PEM), or sslrootcert=system for the platform's trusted roots, \
             or put them in ~/.postgresql/root.crt"
        )));
    }
    let cert = url
        .cert
        .or_else(|| env.var("PGSSLCERT").map(PathBuf::from))
        .or_else(|| home_file("postgresql.crt").filter(|p| p.is_file()));
    let key = url
        .key
        .or_else(|| env.var("PGSSLKEY").map(PathBuf::from))
        .or_else(|| cert.as_ref().and_then(|_| home_file("postgresql.key")));
    if cert.is_some() && key.is_none() {
        return Err(Error::Config(
            "sslcert is given but no sslkey (and HOME is not set, so there is no default \
             ~/.postgresql/postgresql.key)"
                .into(),
        ));
    }
    // A key without a certificate is of no use (libpq ignores it too).
    let key = cert.as_ref().and(key);
    Ok((
        mode,
        TlsFiles {
            root_cert,
            cert,
            key_password: key.as_ref().and(url.key_password).map(KeyPassword),
            key,
        },
    ))
}

/// `url` with `PGPORT`'s port(s) added to its hosts when it names hosts but
/// no port (tokio-postgres would take 5432 for them). Hosts the URL leaves
/// out come from `PGHOST`, and their ports from `PGPORT`, later.
pub(super) fn with_env_port(url: &str, env: &dyn Env) -> Result<String> {
    let Some(ports) = env.var("PGPORT") else {
        return Ok(url.to_string());
    };
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return Ok(url.to_string());
    };
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let hosts_at = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    let hosts = &url[hosts_at..end];
    let query_port = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("port=")));
    let has_port = |h: &str| match h.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .is_some_and(|(_, p)| p.starts_with(':')),
        None => h.contains(':'),
    };
    if hosts.is_empty() || query_port || hosts.split(',').any(has_port) {
        return Ok(url.to_string());
    }
    let ports: Vec<&str> = ports.split(',').map(str::trim).collect();
    let names: Vec<&str> = hosts.split(',').collect();
    if ports.len() != 1 && ports.len() != names.len() {
        return Err(Error::Config(format!(
            "PGPORT lists {} ports for {} hosts",
            ports.len(),
            names.len()
        )));
    }
    let mut with_ports = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let port = ports[if ports.len() == 1 { 0 } else { i }];
        if port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
            return Err(Error::Config(format!(
                "PGPORT is not a port number: {port:?}"
            )));
        }
        with_ports.push(format!("{name}:{port}"));
    }
    Ok(format!(
        "{}{}{}",
        &url[..hosts_at],
        with_ports.join(","),
        &url[end..]
    ))
}
