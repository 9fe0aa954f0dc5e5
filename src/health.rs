//! Health checks for orchestrators: liveness and readiness in one struct a
//! web framework can serialise, cheap enough to call every second (one
//! trivial query and one read of `schema_migrations`).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::db::{Backend, Db};
use crate::error::{Error, Result};
use crate::migrate::MigrationState;

/// The deadline of [`Db::health`].
pub const DEFAULT_HEALTH_DEADLINE: Duration = Duration::from_secs(2);

/// What [`Db::health`] found. Serialises to one JSON object with these
/// field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The pool reached the database and it answered a trivial query within
    /// the deadline.
    pub live: bool,
    /// Live, the schema is up to date, and the database is not an
    /// incomplete copy or migration: the server may take traffic.
    pub ready: bool,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Time the check took, in microseconds.
    pub elapsed_us: u64,
    /// Highest migration version recorded in the database (0 when none);
    /// `None` when it could not be read.
    pub schema_version: Option<i64>,
    /// Highest migration version this binary ships.
    pub latest_version: i64,
    /// Shipped migrations not applied; `None` when unknown.
    pub pending_migrations: Option<usize>,
    /// Every shipped migration is applied unchanged and none is unknown.
    pub schema_up_to_date: bool,
    /// Why the database is an incomplete copy or migration, if it is.
    pub incomplete: Option<String>,
    /// The first error met: its kind ([`Error::kind`]) and message.
    pub error: Option<HealthError>,
}

/// An error a health check met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HealthError {
    /// [`Error::kind`]: `timeout`, `unavailable`, `closed`, ...
    pub kind: &'static str,
    /// The error's message (no secret: URLs are shown redacted).
    pub message: String,
}

impl From<&Error> for HealthError {
    fn from(e: &Error) -> Self {
        HealthError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl Db {
    /// Liveness and readiness within [`DEFAULT_HEALTH_DEADLINE`]; see
    /// [`Db::health_within`].
    pub async fn health(&self) -> Health {
        self.health_within(DEFAULT_HEALTH_DEADLINE).await
    }

    /// Liveness (the database answers a trivial query within `deadline`)
    /// and readiness (live, schema up to date, not an incomplete copy or
    /// migration). Never fails: what went wrong is in [`Health::error`].
    /// Also refreshes the pools' usage gauges and the schema gauges.
    pub async fn health_within(&self, deadline: Duration) -> Health {
        let start = Instant::now();
        let latest_version =
            crate::migrate::Migrations::embedded(self.backend()).map_or(0, |m| m.latest_version());
        let mut h = Health {
            live: false,
            ready: false,
            backend: match self.backend() {
                crate::backend::BackendKind::Sqlite => "sqlite",
                crate::backend::BackendKind::Postgres => "postgres",
            },
            elapsed_us: 0,
            schema_version: None,
            latest_version,
            pending_migrations: None,
            schema_up_to_date: false,
            incomplete: None,
            error: None,
        };
        let out = within(deadline, self.ping()).await;
        h.live = out.is_ok();
        if let Err(e) = &out {
            h.error = Some(e.into());
        }
        if h.live {
            let left = deadline.saturating_sub(start.elapsed());
            match within(left, self.schema_state()).await {
                Ok((version, pending, up_to_date, incomplete)) => {
                    h.schema_version = Some(version);
                    h.pending_migrations = Some(pending);
                    h.schema_up_to_date = up_to_date;
                    h.incomplete = incomplete;
                }
                Err(e) => h.error = Some((&e).into()),
            }
        }
        h.ready = h.live && h.schema_up_to_date && h.incomplete.is_none() && h.error.is_none();
        self.record_pool_metrics();
        h.elapsed_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        h
    }

    /// Highest version recorded, pending count, up to date, and the
    /// incomplete-copy-or-migration hook's answer.
    async fn schema_state(&self) -> Result<(i64, usize, bool, Option<String>)> {
        let status = self.migration_status().await?;
        let (version, pending) = crate::migrate::summary(&status);
        let up_to_date = status.iter().all(|s| s.state == MigrationState::Applied);
        Ok((version, pending, up_to_date, incomplete_copy(&status)))
    }

    /// Refreshes the usage gauges of every pool of this handle
    /// (`db_client_connections_usage`, `db_client_connections_max`). The
    /// PostgreSQL pool refreshes them at each checkout too; call this before
    /// rendering metrics for up-to-date SQLite gauges.
    pub fn record_pool_metrics(&self) {
        match self.live() {
            Ok(Backend::Sqlite(p)) => p.record_usage(),
            Ok(Backend::Postgres(p)) => p.record_usage(),
            Err(_) => {}
        }
    }
}

/// `Some(reason)` when the database is the target of a `persist copy` that
/// did not finish (its mark in `schema_migrations`): not ready, whatever
/// the rest of the schema says. A migration in progress holds its lock and
/// its transaction, so it shows as pending until it commits.
fn incomplete_copy(status: &[crate::migrate::MigrationStatus]) -> Option<String> {
    status.iter().any(|s| s.marks_incomplete_copy()).then(|| {
        "an unfinished copy: its target is incomplete until `persist copy --force` \
         finishes and verifies it"
            .to_string()
    })
}

async fn within<T>(d: Duration, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or_else(|_| Err(Error::timeout(crate::error::after("health check", d))))
}
