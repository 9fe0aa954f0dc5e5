//! How the pool opens one connection, with libpq's `sslmode` fallbacks:
//! `allow` tries plaintext first and TLS when the server refuses it;
//! `prefer` tries TLS first (tokio-postgres already goes plaintext when the
//! server does not offer TLS) and plaintext when the server refuses the TLS
//! connection, or the TLS handshake fails. When both attempts fail, the
//! more telling error is reported. Unix sockets never use TLS (as libpq).

use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::Connect;
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config as PgConfig, Error as PgError, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::SslMode;

/// Opens connections for the pool; see the module docs.
#[derive(Clone)]
pub(crate) struct Connector {
    mode: SslMode,
    /// `None` only for `sslmode=disable`.
    tls: Option<MakeRustlsConnect>,
    /// The batch run on each new connection (its session settings).
    setup: Option<String>,
}

impl Connector {
    pub(crate) fn new(
        mode: SslMode,
        tls: Option<MakeRustlsConnect>,
        setup: Option<String>,
    ) -> Self {
        Connector { mode, tls, setup }
    }

    /// Opens one connection and runs the setup batch on it.
    async fn open(&self, pg_config: &PgConfig) -> Result<Opened, PgError> {
        let (client, conn) = self.attempt(pg_config).await?;
        if let Some(setup) = &self.setup {
            if let Err(e) = client.batch_execute(setup).await {
                conn.abort();
                return Err(e);
            }
        }
        Ok((client, conn))
    }
}

type Opened = (Client, JoinHandle<()>);

async fn plain(config: &PgConfig) -> Result<Opened, PgError> {
    let mut config = config.clone();
    config.ssl_mode(PgSslMode::Disable);
    let (client, conn) = config.connect(NoTls).await?;
    Ok((client, spawn(conn)))
}

async fn encrypted(
    config: &PgConfig,
    tls: &MakeRustlsConnect,
    mode: PgSslMode,
) -> Result<Opened, PgError> {
    let mut config = config.clone();
    config.ssl_mode(mode);
    let (client, conn) = config.connect(tls.clone()).await?;
    Ok((client, spawn(conn)))
}

fn spawn<F>(conn: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = Result<(), PgError>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(target: "persist::postgres", error = %e, "connection ended");
        }
    })
}

/// Of two failed attempts, the error to report: the second, unless it is
/// only a `pg_hba.conf` refusal of that kind of connection (28000), which
/// says less than the first (a wrong password, an unknown CA ...).
fn more_telling(first: PgError, second: PgError) -> PgError {
    if second.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) {
        first
    } else {
        second
    }
}

/// Whether the server answered the attempt and refused it (an error
/// response at startup, as for a `pg_hba.conf` line that does not allow this
/// kind of connection), or the TLS handshake failed: the cases where libpq
/// retries with the other kind of connection.
fn refused(e: &PgError) -> bool {
    e.as_db_error().is_some() || crate::postgres::tls::is_tls_error(e)
}

impl Connect for Connector {
    fn connect(
        &self,
        pg_config: &PgConfig,
    ) -> Pin<Box<dyn Future<Output = Result<Opened, PgError>> + Send + '_>> {
        let pg_config = pg_config.clone();
        Box::pin(async move { self.open(&pg_config).await })
    }
}

impl Connector {
    /// One connection attempt with the sslmode's fallbacks.
    async fn attempt(&self, pg_config: &PgConfig) -> Result<Opened, PgError> {
        // As libpq, no TLS over Unix sockets, whatever the sslmode
        // (the server offers none there).
        let all_unix = pg_config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, Host::Unix(_)));
        let tls = match (&self.tls, self.mode) {
            (None, _) | (_, SslMode::Disable) => return plain(pg_config).await,
            _ if all_unix => return plain(pg_config).await,
            (Some(tls), _) => tls,
        };
        match self.mode {
            SslMode::Allow => match plain(pg_config).await {
                Err(first) if first.as_db_error().is_some() => {
                    encrypted(pg_config, tls, PgSslMode::Require)
                        .await
                        .map_err(|second| more_telling(first, second))
                }
                other => other,
            },
            SslMode::Prefer => match encrypted(pg_config, tls, PgSslMode::Prefer).await {
                Err(first) if refused(&first) => plain(pg_config)
                    .await
                    .map_err(|second| more_telling(first, second)),
                other => other,
            },
            _ => encrypted(pg_config, tls, PgSslMode::Require).await,
        }
    }
}
