//! The settings of a PostgreSQL session, applied where a pooler keeps them.
//!
//! Nothing is sent in the startup packet's `options` (PgBouncer refuses the
//! parameter: `unsupported startup parameter: options`). Instead:
//! - direct and session-pooled connections: one `SET` batch right after
//!   connecting (one round trip per new connection, none per call);
//! - behind a transaction pooler: `SET LOCAL` in the batch that begins each
//!   unit of work (no extra round trip; the setting ends with the
//!   transaction, so none leaks to the pooler's other clients). Single
//!   statements outside a unit of work run with the role's or database's
//!   own settings (README "Production topologies": `ALTER ROLE ... SET
//!   statement_timeout`) and the client deadline.

use crate::config::Config;
use crate::error::{Error, Result};

/// The settings of one pool's sessions.
pub(crate) struct Setup {
    /// `name`, quoted value.
    settings: Vec<(String, String)>,
    per_transaction: bool,
}

impl Setup {
    pub(crate) fn new(config: &Config) -> Result<Self> {
        let timeout_ms = config.statement_timeout.map_or(0, |d| d.as_millis());
        let mut settings = vec![("statement_timeout".to_string(), format!("{timeout_ms}"))];
        for (name, value) in config.session_settings() {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(Error::Config(format!(
                    "not a PostgreSQL setting name: {name:?}"
                )));
            }
            if value.contains('\0') {
                return Err(Error::Config(format!(
                    "the value of setting {name} contains a NUL byte"
                )));
            }
            settings.push((name.clone(), format!("'{}'", value.replace('\'', "''"))));
        }
        Ok(Setup {
            settings,
            per_transaction: config.pooler.per_transaction(),
        })
    }

    fn sets(&self, local: &str) -> String {
        self.settings
            .iter()
            .map(|(n, v)| format!("SET {local}{n} = {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The batch run once on each new connection, if any.
    pub(crate) fn after_connect(&self) -> Option<String> {
        (!self.per_transaction).then(|| self.sets(""))
    }

    /// The batch that begins a unit of work.
    pub(crate) fn begin(&self) -> String {
        match self.per_transaction {
            true => format!("BEGIN; {}", self.sets("LOCAL ")),
            false => "BEGIN".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Setup;
    use crate::config::{Config, Pooler};

    fn config(pooler: Pooler) -> Config {
        Config::from_url("postgres://u@h/db")
            .unwrap()
            .with_pooler(pooler)
            .with_statement_timeout(Some(Duration::from_millis(1500)))
            .with_session_setting("search_path", "o'k")
    }

    #[test]
    fn settings_go_where_each_pooler_keeps_them() {
        for pooler in [Pooler::None, Pooler::Session] {
            let s = Setup::new(&config(pooler)).unwrap();
            assert_eq!(
                s.after_connect().as_deref(),
                Some("SET statement_timeout = 1500; SET search_path = 'o''k'")
            );
            assert_eq!(s.begin(), "BEGIN");
        }
        let s = Setup::new(&config(Pooler::Transaction)).unwrap();
        assert_eq!(s.after_connect(), None);
        assert_eq!(
            s.begin(),
            "BEGIN; SET LOCAL statement_timeout = 1500; SET LOCAL search_path = 'o''k'"
        );
        let off = Config::from_url("postgres://u@h/db")
            .unwrap()
            .with_statement_timeout(None);
        assert_eq!(
            Setup::new(&off).unwrap().after_connect().as_deref(),
            Some("SET statement_timeout = 0")
        );
    }

    #[test]
    fn a_bad_setting_name_is_a_config_error() {
        for name in ["", "a b", "x;DROP", "search-path"] {
            let c = Config::from_url("postgres://u@h/db")
                .unwrap()
                .with_session_setting(name, "v");
            assert!(
                matches!(Setup::new(&c), Err(crate::error::Error::Config(_))),
                "{name:?}"
            );
        }
    }
}
