//! The database handle: open, ping, close, migrate.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::backend::BackendKind;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::migrate::{self, MigrationReport, MigrationStatus, Migrations};
use crate::observe;
use crate::replicas::{self, Replicas};
use crate::types::replica::{Position, ReplicaStats, ReplicaStatus};
use crate::{postgres, sqlite};

/// The next [`Db`]'s id.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) enum Backend {
    Sqlite(sqlite::Pool),
    Postgres(postgres::Pool),
}

struct Inner {
    /// Unique in the process: keys this handle's cached metric handles.
    id: u64,
    backend: Backend,
    closed: AtomicBool,
    config: Config,
    /// Read replicas, when the configuration names some (PostgreSQL).
    replicas: Option<Arc<Replicas>>,
}

/// Size of a database on disk ([`Db::database_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseSize {
    /// A SQLite file: the main file and its write-ahead log (0 when absent).
    Sqlite {
        /// Bytes of the database file.
        main_bytes: u64,
        /// Bytes of the `-wal` file.
        wal_bytes: u64,
    },
    /// A PostgreSQL database: `pg_database_size(current_database())`.
    Postgres {
        /// Bytes.
        bytes: u64,
    },
    /// An in-memory SQLite database: no size on disk.
    InMemory,
}

impl DatabaseSize {
    /// Total bytes on disk, `None` for an in-memory database.
    pub fn total_bytes(&self) -> Option<u64> {
        match *self {
            DatabaseSize::Sqlite {
                main_bytes,
                wal_bytes,
            } => Some(main_bytes.saturating_add(wal_bytes)),
            DatabaseSize::Postgres { bytes } => Some(bytes),
            DatabaseSize::InMemory => None,
        }
    }
}

/// An open database: a connection pool on the backend the URL chose.
///
/// Cheap to clone (clones share the pool). Every repository is reached from
/// here ([`Db::accounts`], [`Db::sessions`], ...) or from a unit of work
/// ([`Db::begin`]). After [`Db::close`], every call returns [`Error::Closed`].
///
/// Cancellation: dropping a call's future after its statement was sent does
/// not stop the statement on a PostgreSQL server, so a write may still land.
/// Inside a unit of work, a dropped call aborts it ([`Error::Aborted`] on
/// commit), so nothing half-known is committed.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
    /// A caller's write position that this handle's reads must reach
    /// ([`Db::reading_after`]); 0 for none.
    floor: u64,
}

/// Opens the database `config` describes and checks that it answers.
///
/// SQLite: creates the file if missing, switches it to WAL, and applies and
/// verifies `foreign_keys=ON`, the busy timeout and the durability level.
/// PostgreSQL: builds the pool and opens one connection.
///
/// # Errors
/// [`Error::Unavailable`] when the file cannot be opened or created or the
/// server cannot be reached within the connect timeout (also for a missing
/// database or failed authentication); [`Error::Config`] for an unusable
/// configuration.
pub async fn open(config: &Config) -> Result<Db> {
    if !config.replicas.is_empty() && config.backend() != BackendKind::Postgres {
        return Err(Error::Config(
            "read replicas are a PostgreSQL feature: a SQLite database has no replicas".into(),
        ));
    }
    let backend = match config.backend() {
        BackendKind::Sqlite => sqlite::Pool::open(config).await.map(Backend::Sqlite),
        BackendKind::Postgres => postgres::Pool::open(config).await.map(Backend::Postgres),
    }
    .map_err(|e| naming_target(e, config))?;
    tracing::debug!(url = %config.redacted_url(), "opened database");
    let replicas = if config.replicas.is_empty() {
        None
    } else {
        let set = Arc::new(Replicas::new(config)?);
        tokio::spawn(replicas::health::run(Arc::downgrade(&set)));
        Some(set)
    };
    Ok(Db {
        inner: Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            backend,
            closed: AtomicBool::new(false),
            config: config.clone(),
            replicas,
        }),
        floor: 0,
    })
}

/// An open failure names the database it was for (password hidden), so a
/// mistaken `DATABASE_URL` shows in the message.
fn naming_target(e: Error, config: &Config) -> Error {
    match e {
        Error::Unavailable { message, source } => {
            let url = config.redacted_url();
            let named = message.contains(&url)
                || config
                    .sqlite_path()
                    .is_some_and(|p| message.contains(&p.display().to_string()));
            let message = if named {
                message
            } else {
                format!("{url}: {message}")
            };
            Error::Unavailable { message, source }
        }
        other => other,
    }
}

impl Db {
    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        match self.inner.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// This handle's id, unique in the process (shared by its clones).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The backend, unless the handle is closed.
    pub(crate) fn live(&self) -> Result<&Backend> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(&self.inner.backend)
    }

    /// Checks that the database answers a trivial query.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`Db::close`]; [`Error::Unavailable`] or
    /// [`Error::Timeout`] when it does not answer.
    pub async fn ping(&self) -> Result<()> {
        match self.live()? {
            Backend::Sqlite(p) => p.ping().await,
            Backend::Postgres(p) => p.ping().await,
        }
    }

    /// True once [`Db::close`] has been called on this handle or a clone.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Closes the pool. Every later call on this handle and its clones returns
    /// [`Error::Closed`]; a unit of work already begun can still finish.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        match &self.inner.backend {
            Backend::Sqlite(p) => p.close(),
            Backend::Postgres(p) => p.close(),
        }
        if let Some(set) = &self.inner.replicas {
            set.close();
        }
    }

    /// The read replicas, shared, when configured.
    pub(crate) fn replica_arc(&self) -> Option<Arc<Replicas>> {
        self.inner.replicas.clone()
    }

    /// The read replicas, when configured.
    pub(crate) fn replica_set(&self) -> Option<&Replicas> {
        self.inner.replicas.as_deref()
    }

    /// The write position this handle's reads must reach beyond its own
    /// writes ([`Db::reading_after`]).
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// The write position of every write acknowledged through this handle
    /// (and its clones) so far, and of the position it was made to read
    /// after ([`Db::reading_after`]): hand it to another process (as text,
    /// [`Position`]'s `Display`) so that its reads see these writes.
    /// [`Position::ZERO`] on SQLite and without replicas (every read then
    /// goes to the one server that took the writes).
    pub fn position(&self) -> Position {
        match self.replica_set() {
            Some(set) => Position(set.fence().max(self.floor)),
            None => Position::ZERO,
        }
    }

    /// A clone of this handle whose reads see at least every write before
    /// `position` (one returned by [`Db::position`], maybe in another
    /// process): a replica answers them only once it has replayed that far,
    /// else the primary does. Writes and units of work are unchanged. On
    /// SQLite and without replicas, the same handle (every read already
    /// sees every acknowledged write).
    pub fn reading_after(&self, position: Position) -> Db {
        Db {
            inner: Arc::clone(&self.inner),
            floor: self.floor.max(position.0),
        }
    }

    /// Each read replica's state, replayed position and lag as last seen,
    /// and the reads it answered; empty without replicas.
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.replica_set().map(Replicas::status).unwrap_or_default()
    }

    /// Checks every read replica now (as the periodic check does) and
    /// returns their status; empty without replicas. For a one-off report
    /// such as `persist status`: the periodic check keeps the state current
    /// on its own.
    pub async fn check_replicas(&self) -> Vec<ReplicaStatus> {
        match self.replica_set() {
            Some(set) => set.check_now().await,
            None => Vec::new(),
        }
    }

    /// Where this handle's reads outside units of work went (replica or
    /// primary, and why the primary); all zero without replicas.
    pub fn replica_stats(&self) -> ReplicaStats {
        self.replica_set().map(Replicas::stats).unwrap_or_default()
    }

    /// Applies every pending migration embedded in this binary.
    ///
    /// Safe to run from any number of processes at once: each migration is
    /// applied exactly once. Each migration and its `schema_migrations` row
    /// commit in one transaction.
    ///
    /// # Errors
    /// [`Error::MigrationDrift`], [`Error::DatabaseAhead`],
    /// [`Error::InvalidMigrations`] (changing nothing);
    /// [`Error::MigrationFailed`] (that migration rolled back, earlier ones
    /// stay applied); [`Error::Timeout`] when the migration lock is not
    /// obtained within the lock timeout; [`Error::PendingOnStandby`] when
    /// the server is a read-only standby and something is pending (with
    /// nothing pending, a standby is only read).
    pub async fn migrate(&self) -> Result<MigrationReport> {
        self.migrate_with(&Migrations::embedded(self.backend())?)
            .await
    }

    /// Applies every pending migration of a caller-supplied set.
    ///
    /// # Errors
    /// As [`Db::migrate`]; also [`Error::InvalidMigrations`] when the set's
    /// dialect is not the backend's.
    pub async fn migrate_with(&self, set: &Migrations) -> Result<MigrationReport> {
        self.check_dialect(set)?;
        let started = std::time::Instant::now();
        let report = self.migrate_locked(set).await?;
        let sys = observe::system(self.backend());
        observe::migration_run(sys, started.elapsed());
        observe::schema(sys, report.version, 0);
        Ok(report)
    }

    async fn migrate_locked(&self, set: &Migrations) -> Result<MigrationReport> {
        let lock_timeout = self.inner.config.lock_timeout;
        match self.live()? {
            Backend::Sqlite(p) => {
                let mut m = sqlite::migrate::SqliteMigrator {
                    guard: p.write_guard_within(lock_timeout).await?,
                    busy_timeout: p.busy_timeout(),
                };
                migrate::run(&mut m, set, lock_timeout).await
            }
            Backend::Postgres(p) => {
                let c = &self.inner.config;
                let mut m = postgres::migrate::PgMigrator::new(
                    p.get().await?,
                    p,
                    c.statement_lock_timeout,
                    c.lock_retries,
                );
                migrate::run(&mut m, set, lock_timeout).await
            }
        }
    }

    /// The status of every embedded migration in this database, plus any
    /// recorded migration this binary does not ship. Changes nothing.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Unavailable`] and the like; never a
    /// migration error (drift and the like show up as states).
    pub async fn migration_status(&self) -> Result<Vec<MigrationStatus>> {
        self.migration_status_with(&Migrations::embedded(self.backend())?)
            .await
    }

    /// [`Db::migration_status`] for a caller-supplied set.
    ///
    /// # Errors
    /// As [`Db::migration_status`]; also [`Error::InvalidMigrations`] when the
    /// set's dialect is not the backend's.
    pub async fn migration_status_with(&self, set: &Migrations) -> Result<Vec<MigrationStatus>> {
        self.check_dialect(set)?;
        let applied = match self.live()? {
            Backend::Sqlite(p) => p.read(sqlite::migrate::applied).await?,
            Backend::Postgres(p) => postgres::migrate::applied(&p.get().await?).await?,
        };
        let status = migrate::status(set, &applied);
        let (version, pending) = migrate::summary(&status);
        observe::schema(observe::system(self.backend()), version, pending);
        Ok(status)
    }

    /// What [`Db::migrate`] would apply, without applying anything: each
    /// pending migration's statements, whether it runs in a transaction,
    /// the lock each statement takes on which table, and the DDL linter's
    /// findings (`persist migrate --plan`).
    ///
    /// # Errors
    /// As [`Db::migration_plan_with`].
    pub async fn migration_plan(&self) -> Result<migrate::MigrationPlan> {
        self.migration_plan_with(&Migrations::embedded(self.backend())?)
            .await
    }

    /// [`Db::migration_plan`] for a caller-supplied set.
    ///
    /// # Errors
    /// [`Error::MigrationDrift`], [`Error::DatabaseAhead`],
    /// [`Error::InvalidMigrations`] as [`Db::migrate`] would report them;
    /// [`Error::Closed`], [`Error::Unavailable`] and the like.
    pub async fn migration_plan_with(&self, set: &Migrations) -> Result<migrate::MigrationPlan> {
        self.check_dialect(set)?;
        let applied = match self.live()? {
            Backend::Sqlite(p) => p.read(sqlite::migrate::applied).await?,
            Backend::Postgres(p) => postgres::migrate::applied(&p.get().await?).await?,
        };
        let todo = migrate::pending(set, &applied)?;
        Ok(migrate::plan(self.backend(), &todo))
    }

    /// Size of the database on disk: for SQLite the file plus its
    /// write-ahead log, for PostgreSQL `pg_database_size(current_database())`.
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::Unavailable`] when the SQLite file cannot
    /// be read or the server does not answer; the driver's error for a failed
    /// query.
    pub async fn database_size(&self) -> Result<DatabaseSize> {
        match self.live()? {
            Backend::Sqlite(_) => match self.config().sqlite_path() {
                None => Ok(DatabaseSize::InMemory),
                Some(path) => {
                    let (main_bytes, wal_bytes) = sqlite::size::on_disk(path)?;
                    Ok(DatabaseSize::Sqlite {
                        main_bytes,
                        wal_bytes,
                    })
                }
            },
            Backend::Postgres(p) => Ok(DatabaseSize::Postgres {
                bytes: postgres::size::database(&*p.get().await?).await?,
            }),
        }
    }

    fn check_dialect(&self, set: &Migrations) -> Result<()> {
        if set.backend() != self.backend() {
            return Err(Error::InvalidMigrations(format!(
                "a {} migration set cannot run on a {} database",
                set.backend(),
                self.backend()
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("url", &self.inner.config.redacted_url())
            .field("closed", &self.is_closed())
            .finish()
    }
}
