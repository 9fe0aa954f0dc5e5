//! PostgreSQL backend: the pool, TLS, and the per-table SQL.
//!
//! A deadpool pool of tokio-postgres connections. Checkout does no round trip
//! (`RecyclingMethod::Fast` only checks that the connection is not closed);
//! statements are prepared once per connection and cached.

pub(crate) mod accounts;
pub(crate) mod copy;
pub(crate) mod error;
pub(crate) mod introspect;
pub(crate) mod loadouts;
pub(crate) mod migrate;
pub(crate) mod progression;
pub(crate) mod secret;
pub(crate) mod sessions;
pub(crate) mod tls;
pub(crate) mod unlocks;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, RecyclingMethod, Runtime};

use crate::config::{Config, SslMode, Target};
use crate::error::{Error, Result};

/// A pooled client; repositories take `&Client`.
pub(crate) type Client = deadpool_postgres::ClientWrapper;

pub(crate) struct Pool {
    pool: deadpool_postgres::Pool,
}

impl Pool {
    pub(crate) async fn open(config: &Config) -> Result<Self> {
        let Target::Postgres(pg) = &config.target else {
            return Err(Error::Config("not a PostgreSQL configuration".into()));
        };
        let mut pg = (**pg).clone();
        pg.connect_timeout(config.connect_timeout);
        pg.ssl_mode(match config.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require => tokio_postgres::config::SslMode::Require,
        });
        if pg.get_application_name().is_none() {
            pg.application_name("persist");
        }
        // statement_timeout rides in the startup packet: no extra round trip.
        let timeout_ms = config.statement_timeout.map_or(0, |d| d.as_millis());
        let options = match pg.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c statement_timeout={timeout_ms}"),
            _ => format!("-c statement_timeout={timeout_ms}"),
        };
        pg.options(&options);
        let mgr_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match config.ssl_mode {
            SslMode::Disable => Manager::from_config(pg, tokio_postgres::NoTls, mgr_config),
            SslMode::Prefer | SslMode::Require => {
                Manager::from_config(pg, tls::connector()?, mgr_config)
            }
        };
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.connect_timeout + Duration::from_millis(500)))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the connection pool: {e}")))?;
        let pool = Pool { pool };
        // Fail at open, not at the first query, when the server is unusable.
        drop(pool.get().await?);
        Ok(pool)
    }

    /// Checks a connection out of the pool.
    pub(crate) async fn get(&self) -> Result<Object> {
        self.pool.get().await.map_err(error::map_pool)
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let c = self.get().await?;
        c.simple_query("").await.map_err(error::map)?;
        Ok(())
    }

    pub(crate) fn close(&self) {
        self.pool.close();
    }
}
