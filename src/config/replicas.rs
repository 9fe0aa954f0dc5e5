//! Read replicas in the configuration: the `replica=HOST[:PORT]` URL
//! parameter, [`Config::with_replica_url`] and the health options.
//!
//! Replicas are a PostgreSQL feature; a SQLite configuration refuses them.

use std::time::Duration;

use super::pg::Env;
use super::{url, BackendKind, Config};
use crate::error::{Error, Result};

/// Default bound on a replica's lag before it leaves the read rotation.
pub(crate) const DEFAULT_MAX_LAG: Duration = Duration::from_secs(2);
/// Default interval between two health checks of each replica.
pub(crate) const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// The URL parameter naming a replica (repeatable).
const PARAM: &str = "replica";

fn sqlite_refusal() -> Error {
    Error::Config(
        "read replicas are a PostgreSQL feature: a SQLite database has no replicas \
         (remove the replica URL or `replica=` parameter)"
            .into(),
    )
}

/// Parses a database URL with its `replica=HOST[:PORT]` parameters: each
/// replica is the primary's URL with the host and port replaced (same user,
/// password, database and TLS settings).
pub(super) fn parse(full: &str, env: &dyn Env) -> Result<Config> {
    let full = full.trim();
    let (primary_url, hosts) = split(full);
    if hosts.is_empty() {
        return url::parse(full, env);
    }
    let mut config = url::parse(&primary_url, env)?;
    if config.backend() != BackendKind::Postgres {
        return Err(sqlite_refusal());
    }
    for host in hosts {
        let replica_url = with_host(&primary_url, &host)?;
        let replica = url::parse(&replica_url, env)?;
        config.replicas.push(replica);
    }
    Ok(config)
}

/// The URL without its `replica=` parameters, and their values.
fn split(full: &str) -> (String, Vec<String>) {
    let Some((base, query)) = full.split_once('?') else {
        return (full.to_string(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut hosts = Vec::new();
    for p in query.split('&') {
        match p.split_once('=') {
            Some((k, v)) if k == PARAM => hosts.push(v.to_string()),
            _ => kept.push(p),
        }
    }
    if kept.iter().all(|p| p.is_empty()) {
        (base.to_string(), hosts)
    } else {
        (format!("{base}?{}", kept.join("&")), hosts)
    }
}

/// `url` with the host and port of its authority replaced by `host`.
fn with_host(url: &str, host: &str) -> Result<String> {
    let bad = |why: &str| Error::Config(format!("replica={host:?}: {why}"));
    if host.is_empty() || host.contains(['/', '@', '?', '&', ',']) {
        return Err(bad("expected HOST or HOST:PORT"));
    }
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    if query.is_some_and(|q| {
        q.split('&')
            .any(|p| p.starts_with("host=") || p.starts_with("hostaddr="))
    }) {
        return Err(bad(
            "the primary's host is a URL parameter; give the replica as a whole URL (Config::with_replica_url)",
        ));
    }
    let Some((scheme, rest)) = before_query.split_once("://") else {
        return Err(bad(
            "the primary URL has no authority (postgres://HOST/...)",
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let userinfo = match authority.rfind('@') {
        Some(i) => &authority[..=i],
        None => "",
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!("{scheme}://{userinfo}{host}{path}{query}"))
}

impl Config {
    /// Adds a read replica: a PostgreSQL streaming standby of the primary,
    /// given by its own URL (same syntax as [`Config::from_url`]; its user,
    /// password and TLS settings are its own). Repeatable; the order does not
    /// matter. With no replica (the default) nothing changes: every call goes
    /// to the primary.
    ///
    /// With replicas, reads outside a unit of work (session lookup, account,
    /// loadout, progression and unlock reads) may be answered by a healthy
    /// replica that has replayed every write acknowledged through this handle
    /// (see [`Db::position`](crate::Db::position)); writes, units of work,
    /// migrations and every read inside a unit of work go to the primary.
    ///
    /// The URL form is a repeatable `replica=HOST[:PORT]` parameter on the
    /// primary's URL: `postgres://app@primary/game?replica=standby1&replica=standby2:5433`
    /// (each replica inherits the primary's user, password, database and TLS
    /// settings).
    ///
    /// # Errors
    /// [`Error::Config`] when this configuration is for SQLite (replicas are a
    /// PostgreSQL feature), when `url` is not a PostgreSQL URL, or as
    /// [`Config::from_url`] for a malformed one.
    pub fn with_replica_url(mut self, url: &str) -> Result<Self> {
        if self.backend() != BackendKind::Postgres {
            return Err(sqlite_refusal());
        }
        let replica = Config::from_url(url)?;
        if replica.backend() != BackendKind::Postgres {
            return Err(Error::Config(format!(
                "a read replica must be a PostgreSQL URL, not {}",
                replica.redacted_url()
            )));
        }
        if !replica.replicas.is_empty() {
            return Err(Error::Config(
                "a replica URL cannot itself name replicas".into(),
            ));
        }
        self.replicas.push(replica);
        Ok(self)
    }

    /// The replicas' URLs, passwords replaced by `***`, in the order given.
    pub fn replica_urls(&self) -> Vec<String> {
        self.replicas.iter().map(Config::redacted_url).collect()
    }

    /// How far behind the primary a replica may fall before it leaves the
    /// read rotation (it comes back once it has caught up). Defaults to 2 s.
    /// The lag is measured against the primary's WAL position sampled at each
    /// health check, so it is exact to one check interval. This bounds how
    /// stale another user's data may look; a caller's own writes are never
    /// read stale, whatever this bound.
    pub fn with_replica_max_lag(mut self, d: Duration) -> Self {
        self.replica_max_lag = d;
        self
    }

    /// How often each replica's health is checked (one short query on the
    /// replica, one on the primary per check). Defaults to 250 ms. A replica
    /// that is unreachable, promoted, restarted or lagging leaves the
    /// rotation within one interval plus the connect timeout (at once when a
    /// read on it fails), and comes back at the first check that finds it
    /// healthy.
    pub fn with_replica_check_interval(mut self, d: Duration) -> Self {
        self.replica_check_interval = d.max(Duration::from_millis(10));
        self
    }

    /// The replica lag bound (see [`Config::with_replica_max_lag`]).
    pub fn replica_max_lag(&self) -> Duration {
        self.replica_max_lag
    }

    /// The replica health-check interval (see
    /// [`Config::with_replica_check_interval`]).
    pub fn replica_check_interval(&self) -> Duration {
        self.replica_check_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_parameters_are_split_off_and_take_the_primary_url() {
        let (base, hosts) =
            split("postgres://u:pw@p:5432/db?replica=r1&sslmode=disable&replica=r2:5433");
        assert_eq!(base, "postgres://u:pw@p:5432/db?sslmode=disable");
        assert_eq!(hosts, ["r1", "r2:5433"]);
        assert_eq!(
            with_host(&base, "r2:5433").unwrap(),
            "postgres://u:pw@r2:5433/db?sslmode=disable"
        );
        assert_eq!(
            with_host("postgres://p/db", "r1").unwrap(),
            "postgres://r1/db"
        );
        let (base, hosts) = split("postgres://p/db?replica=r1");
        assert_eq!((base.as_str(), hosts.len()), ("postgres://p/db", 1));
    }

    #[test]
    fn bad_replica_hosts_are_config_errors() {
        for host in ["", "a/b", "u@h", "h1,h2"] {
            assert!(matches!(
                with_host("postgres://p/db", host),
                Err(Error::Config(_))
            ));
        }
        assert!(matches!(
            with_host("postgres:///db?host=/run/pg", "r1"),
            Err(Error::Config(_))
        ));
    }
}
