//! What stands between the crate and PostgreSQL: a connection pooler
//! (`pooler=`), which server of a multi-host URL is wanted
//! (`target_session_attrs=`), and the URL parameters accepted at all.

use std::fmt;

use super::Config;
use crate::error::{Error, Result};

/// The connection pooler a PostgreSQL URL goes through, if any
/// (`?pooler=none|session|transaction`, [`Config::with_pooler`]).
///
/// What changes with each, and why direct is the default: README
/// "Production topologies".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pooler {
    /// No pooler, or one that keeps a server connection for the whole client
    /// connection. Statements are prepared once per connection and cached;
    /// the statement timeout is one `SET` after connecting. The default.
    #[default]
    None,
    /// A session pooler (PgBouncer `pool_mode = session`): as
    /// [`Pooler::None`]; named for clarity in URLs and logs.
    Session,
    /// A transaction pooler (PgBouncer `pool_mode = transaction`): each
    /// transaction may run on another server connection. No named prepared
    /// statement (every statement is sent unnamed, with its parameter types,
    /// in one round trip), no session setting, no shared read connections;
    /// the statement timeout is `SET LOCAL` in each unit of work, and the
    /// role's or database's own `statement_timeout` (plus the client
    /// deadline) bounds single statements.
    Transaction,
}

impl Pooler {
    /// The URL value (`none`, `session`, `transaction`).
    pub fn as_str(self) -> &'static str {
        match self {
            Pooler::None => "none",
            Pooler::Session => "session",
            Pooler::Transaction => "transaction",
        }
    }

    fn parse(v: &str) -> Option<Pooler> {
        match v {
            "none" => Some(Pooler::None),
            "session" => Some(Pooler::Session),
            "transaction" => Some(Pooler::Transaction),
            _ => None,
        }
    }

    /// Whether each transaction may land on another server connection.
    pub(crate) fn per_transaction(self) -> bool {
        self == Pooler::Transaction
    }
}

impl fmt::Display for Pooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Config {
    /// The connection pooler between this handle and PostgreSQL (see
    /// [`Pooler`]); as `?pooler=` does. Ignored for SQLite.
    pub fn with_pooler(mut self, pooler: Pooler) -> Self {
        self.pooler = pooler;
        self
    }

    /// The connection pooler (see [`Config::with_pooler`]).
    pub fn pooler(&self) -> Pooler {
        self.pooler
    }

    /// A PostgreSQL setting for every session of this handle (as `SET name =
    /// 'value'`), applied where a pooler keeps it: right after connecting,
    /// or, behind a transaction pooler, with `SET LOCAL` at the start of
    /// each unit of work (single statements outside one then run with the
    /// server's setting). The URL's `options` parameter, by contrast, rides
    /// in the startup packet, which PgBouncer refuses.
    pub fn with_session_setting(mut self, name: &str, value: &str) -> Self {
        self.session_settings.retain(|(n, _)| n != name);
        self.session_settings
            .push((name.to_string(), value.to_string()));
        self
    }

    /// The settings added with [`Config::with_session_setting`].
    pub fn session_settings(&self) -> &[(String, String)] {
        &self.session_settings
    }
}

/// The URL parameters tokio-postgres reads (persist reads `sslmode`, the TLS
/// files and `pooler` itself).
const DRIVER_PARAMS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// The `target_session_attrs` values the driver can honour (it checks
/// `transaction_read_only` after connecting and tries the next host).
const SESSION_ATTRS: &[&str] = &["any", "read-write", "read-only"];

/// Checks a URL's parameters (`query`, without the '?'): one that neither
/// persist (`own`) nor the driver reads, or a `target_session_attrs` value
/// the driver cannot honour, is refused by name (the driver's own error
/// says only "invalid connection string").
pub(super) fn check_params(query: &str, own: &[&str]) -> Result<()> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // Names and values are percent-decoded as the driver reads them.
        let (Some(k), Some(v)) = (super::url::percent_decode(k), super::url::percent_decode(v))
        else {
            return Err(Error::Config(
                "a PostgreSQL URL parameter is not valid percent-encoded UTF-8".into(),
            ));
        };
        let (k, v) = (k.as_str(), v.as_str());
        if own.contains(&k) {
            continue;
        }
        if !DRIVER_PARAMS.contains(&k) {
            // Named only when it is a plain name: anything else may be a
            // piece of a mistyped password.
            return Err(Error::Config(format!(
                "unsupported PostgreSQL URL parameter {} (supported: {}, sslmode, \
                 sslrootcert, sslcert, sslkey, sslpassword, pooler, replica)",
                shown(k, "its name"),
                DRIVER_PARAMS.join(", ")
            )));
        }
        if k == "target_session_attrs" && !SESSION_ATTRS.contains(&v) {
            return Err(Error::Config(format!(
                "unsupported target_session_attrs={} (supported: {}; \
                 primary, standby and prefer-standby are not)",
                shown(v, "the value"),
                SESSION_ATTRS.join(", ")
            )));
        }
    }
    Ok(())
}

/// Parses `pooler=VALUE`.
pub(super) fn parse_pooler(v: &str) -> Result<Pooler> {
    Pooler::parse(v).ok_or_else(|| {
        Error::Config(format!(
            "unsupported pooler={} (supported: none, session, transaction)",
            shown(v, "the value")
        ))
    })
}

/// A parameter name or value, quoted, for an error message: only when it
/// is a plain word (letters, digits, `_`, `-`, no "pass"); anything else
/// may be a piece of a mistyped password and is not shown.
fn shown(s: &str, what: &str) -> String {
    let plain = s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !s.to_ascii_lowercase().contains("pass");
    match plain {
        true => format!("{s:?}"),
        false => format!("({what} is not shown: it may hold a secret)"),
    }
}
