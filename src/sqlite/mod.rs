//! SQLite backend: connections, the pool, and the per-table SQL.
//!
//! Statements run on the calling task, without a thread hop: a point read
//! costs a few microseconds, far less than a hand-off to another thread. One
//! writer connection (reached through an async gate, so in-process writers
//! queue without ever meeting `SQLITE_BUSY`) and up to `pool_size` reader
//! connections (WAL lets them read while the writer writes). Waits on locks
//! held by *other processes* use SQLite's busy timeout.

pub(crate) mod accounts;
pub(crate) mod battles;
mod busy;
mod connect;
pub(crate) mod copy;
mod ddl;
pub(crate) mod error;
mod files;
pub(crate) mod ids;
pub(crate) mod introspect;
pub(crate) mod loadouts;
pub(crate) mod migrate;
mod pagecache;
pub(crate) mod progression;
pub(crate) mod rekey;
mod script;
pub(crate) mod sessions;
pub(crate) mod size;
pub(crate) mod tx;
pub(crate) mod unlocks;
pub(crate) mod wal;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::{Config, Durability, Target};
use crate::error::{after, Error, Result};
use crate::observe;

/// The `db_system` label of this backend's metrics.
pub(crate) const SYSTEM: &str = "sqlite";
/// The `pool` labels of the writer gate and of the readers.
const WRITER: &str = "writer";
const READERS: &str = "readers";

pub(crate) use busy::set_busy_timeout;
use connect::{configure, open_reader, open_writer};
pub use pagecache::sqlite_page_cache_per_connection;

#[derive(Clone, Copy)]
struct Settings {
    busy_timeout: Duration,
    acquire_timeout: Duration,
    durability: Durability,
    /// `Config::with_sqlite_max_size`, in bytes.
    max_size: Option<u64>,
    /// `Config::with_read_only`.
    read_only: bool,
    /// The benchmark's "before" variant: sweep batches keep SQLite's
    /// automatic checkpoint inside the writer gate.
    sweep_autocheckpoint: bool,
}

/// The writer connection behind an async gate. The gate (one permit) orders
/// writers; the inner mutex is only ever taken by the gate holder, so it is
/// never contended: it exists to make the slot `Sync`.
pub(crate) struct WriterSlot {
    gate: Arc<Semaphore>,
    conn: Mutex<Option<Connection>>,
}

impl WriterSlot {
    /// Runs `f` on the writer connection. The caller must hold the gate.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(c) => f(c),
            None => Err(Error::Closed),
        }
    }
}

/// Holding the writer gate: exclusive use of the writer connection.
pub(crate) struct WriteGuard {
    slot: Arc<WriterSlot>,
    _permit: OwnedSemaphorePermit,
}

impl WriteGuard {
    pub(crate) fn slot(&self) -> &WriterSlot {
        &self.slot
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        // The pool was closed while this guard held the writer: close the
        // connection now that it is released.
        if self.slot.gate.is_closed() {
            self.slot
                .conn
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
    }
}

pub(crate) struct Pool {
    path: Option<PathBuf>,
    settings: Settings,
    writer: Arc<WriterSlot>,
    readers: Mutex<Vec<Connection>>,
    reader_slots: Semaphore,
    /// Most readers (`pool_size`).
    reader_slots_max: usize,
}

impl Pool {
    pub(crate) async fn open(config: &Config) -> Result<Self> {
        let settings = Settings {
            busy_timeout: config.busy_timeout,
            acquire_timeout: config.acquire_timeout,
            durability: config.durability,
            max_size: config.sqlite_max_size,
            read_only: config.read_only,
            sweep_autocheckpoint: config.sqlite_sweep_autocheckpoint,
        };
        let path = match &config.target {
            Target::SqliteFile(p) => Some(p.clone()),
            Target::SqliteMemory => None,
            Target::Postgres(_) => return Err(Error::Config("not a SQLite configuration".into())),
        };
        let writer = match &path {
            Some(p) => open_writer(p, settings).await?,
            None => {
                let c = Connection::open_in_memory().map_err(|e| {
                    Error::unavailable("cannot open in-memory SQLite database", Some(e.into()))
                })?;
                configure(&c, settings, false, Path::new(":memory:"))?;
                c
            }
        };
        observe::opened(SYSTEM, WRITER, 1);
        Ok(Pool {
            path,
            settings,
            writer: Arc::new(WriterSlot {
                gate: Arc::new(Semaphore::new(1)),
                conn: Mutex::new(Some(writer)),
            }),
            readers: Mutex::new(Vec::new()),
            reader_slots: Semaphore::new(config.pool_size),
            reader_slots_max: config.pool_size,
        })
    }

    /// Takes the writer gate, waiting at most the acquire timeout.
    pub(crate) async fn write_guard(&self) -> Result<WriteGuard> {
        self.write_guard_within(self.settings.acquire_timeout).await
    }

    /// Takes the writer gate, waiting at most `wait`.
    pub(crate) async fn write_guard_within(&self, wait: Duration) -> Result<WriteGuard> {
        let permit = match Arc::clone(&self.writer.gate).try_acquire_owned() {
            // Free at once: nothing recorded (the hot path of every call).
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(Error::Closed),
            Err(TryAcquireError::NoPermits) => {
                let waiting = observe::Waiting::start(SYSTEM, WRITER);
                let got =
                    tokio::time::timeout(wait, Arc::clone(&self.writer.gate).acquire_owned()).await;
                waiting.done();
                match got {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(Error::Closed),
                    Err(_) => {
                        return Err(Error::timeout(after(
                            "waiting for the SQLite writer connection",
                            wait,
                        )))
                    }
                }
            }
        };
        Ok(WriteGuard {
            slot: Arc::clone(&self.writer),
            _permit: permit,
        })
    }

    /// Runs `f` on the writer connection (autocommit unless `f` begins a
    /// transaction).
    pub(crate) async fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let guard = self.write_guard().await?;
        guard.slot().with(f)
    }

    /// Runs `f` on a reader connection (the writer for an in-memory database,
    /// whose connections cannot share data).
    pub(crate) async fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let Some(path) = &self.path else {
            return self.write(f).await;
        };
        let _permit = match self.reader_slots.try_acquire() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(Error::Closed),
            Err(TryAcquireError::NoPermits) => {
                let wait = self.settings.acquire_timeout;
                let waiting = observe::Waiting::start(SYSTEM, READERS);
                let got = tokio::time::timeout(wait, self.reader_slots.acquire()).await;
                waiting.done();
                match got {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(Error::Closed),
                    Err(_) => {
                        return Err(Error::timeout(after(
                            "waiting for a SQLite reader connection",
                            wait,
                        )))
                    }
                }
            }
        };
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                let c = open_reader(path, self.settings)?;
                observe::opened(SYSTEM, READERS, 1);
                c
            }
        };
        let out = f(&conn);
        // Checked under the lock that close() clears the list under, so a
        // reader is never put back after close.
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if self.reader_slots.is_closed() {
            // In use when the handle closed: closes now.
            observe::closed(SYSTEM, READERS, 1);
        } else {
            idle.push(conn);
        }
        out
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(error::map)?;
            Ok(())
        })
        .await
    }

    /// Records the usage gauges of the writer gate and the readers.
    pub(crate) fn record_usage(&self) {
        let writer_used = usize::from(self.writer.gate.available_permits() == 0);
        observe::pool_usage(SYSTEM, WRITER, writer_used, 1 - writer_used, 1);
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let used = self
            .reader_slots_max
            .saturating_sub(self.reader_slots.available_permits());
        observe::pool_usage(SYSTEM, READERS, used, idle, self.reader_slots_max);
    }

    /// Closes every connection; connections in use close when released.
    pub(crate) fn close(&self) {
        self.reader_slots.close();
        let idle =
            std::mem::take(&mut *self.readers.lock().unwrap_or_else(PoisonError::into_inner));
        observe::closed(SYSTEM, READERS, idle.len() as u64);
        drop(idle);
        if !self.writer.gate.is_closed() {
            observe::closed(SYSTEM, WRITER, 1);
        }
        // No new writer can start once the gate is closed. If a guard is
        // out (a unit of work), its drop closes the connection; otherwise
        // close it here. Guards hold the only other references to the slot.
        self.writer.gate.close();
        if Arc::strong_count(&self.writer) == 1 {
            self.writer
                .conn
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
    }

    /// Whether sweep batches run without the automatic checkpoint, with
    /// [`Pool::checkpoint_passive`] between them: a file database opened
    /// for writing (an in-memory one has no log).
    pub(crate) fn sweep_checkpoints_off_gate(&self) -> bool {
        self.path.is_some() && !self.settings.read_only && !self.settings.sweep_autocheckpoint
    }

    /// A passive checkpoint on a reader connection, outside the writer gate:
    /// it never waits on nor blocks a writer.
    pub(crate) async fn checkpoint_passive(&self) -> Result<wal::Checkpoint> {
        self.read(wal::checkpoint_passive).await
    }

    pub(crate) fn busy_timeout(&self) -> Duration {
        self.settings.busy_timeout
    }
}

/// Whether a table named `name` exists in the database.
pub(crate) fn table_exists(c: &Connection, name: &str) -> Result<bool> {
    c.prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")
        .and_then(|mut st| st.exists([name]))
        .map_err(error::map)
}

#[cfg(test)]
mod tests {
    use super::connect::READER_CACHE_KIB;
    use super::*;

    #[tokio::test]
    async fn readers_use_half_the_default_page_cache_and_the_writer_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("cache.db").display());
        let pool = Pool::open(&Config::from_url(&url).unwrap()).await.unwrap();
        let cache = |c: &Connection| {
            c.pragma_query_value(None, "cache_size", |r| r.get::<_, i64>(0))
                .map_err(error::map)
        };
        assert_eq!(pool.read(cache).await.unwrap(), -READER_CACHE_KIB);
        // SQLite's compiled-in default (-2000: about 2 MiB).
        let default = Connection::open_in_memory()
            .and_then(|c| c.pragma_query_value(None, "cache_size", |r| r.get::<_, i64>(0)))
            .unwrap();
        assert_eq!(pool.write(cache).await.unwrap(), default);
        assert_eq!(default, -2 * READER_CACHE_KIB);
        pool.close();
    }

    /// D-133: a unit of work's savepoint journal stays in memory on the
    /// writer (the effect is measured by persist-bench's `insert_1000_tx`);
    /// the readers keep SQLite's default.
    #[tokio::test]
    async fn the_writer_keeps_savepoint_journals_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("temp.db").display());
        let pool = Pool::open(&Config::from_url(&url).unwrap()).await.unwrap();
        let temp_store = |c: &Connection| {
            c.pragma_query_value(None, "temp_store", |r| r.get::<_, i64>(0))
                .map_err(error::map)
        };
        assert_eq!(pool.write(temp_store).await.unwrap(), 2, "MEMORY");
        assert_eq!(pool.read(temp_store).await.unwrap(), 0, "DEFAULT");
        pool.close();
    }
}
