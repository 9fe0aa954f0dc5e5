//! SQLite backend: connections, the pool, and the per-table SQL.
//!
//! Statements run on the calling task, without a thread hop: a point read
//! costs a few microseconds, far less than a hand-off to another thread. One
//! writer connection (reached through an async gate, so in-process writers
//! queue without ever meeting `SQLITE_BUSY`) and up to `pool_size` reader
//! connections (WAL lets them read while the writer writes). Waits on locks
//! held by *other processes* use SQLite's busy timeout.

pub(crate) mod accounts;
pub(crate) mod copy;
pub(crate) mod error;
pub(crate) mod ids;
pub(crate) mod introspect;
pub(crate) mod loadouts;
pub(crate) mod migrate;
pub(crate) mod progression;
pub(crate) mod rekey;
pub(crate) mod sessions;
pub(crate) mod unlocks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::{Config, Durability, Target};
use crate::error::{after, Error, Result};

/// Statements cached per connection (the repositories use fewer than this).
const STATEMENT_CACHE: usize = 64;

#[derive(Clone, Copy)]
struct Settings {
    busy_timeout: Duration,
    acquire_timeout: Duration,
    durability: Durability,
    /// `Config::with_sqlite_max_size`, in bytes.
    max_size: Option<u64>,
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
}

impl Pool {
    pub(crate) async fn open(config: &Config) -> Result<Self> {
        let settings = Settings {
            busy_timeout: config.busy_timeout,
            acquire_timeout: config.acquire_timeout,
            durability: config.durability,
            max_size: config.sqlite_max_size,
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
        Ok(Pool {
            path,
            settings,
            writer: Arc::new(WriterSlot {
                gate: Arc::new(Semaphore::new(1)),
                conn: Mutex::new(Some(writer)),
            }),
            readers: Mutex::new(Vec::new()),
            reader_slots: Semaphore::new(config.pool_size),
        })
    }

    /// Takes the writer gate, waiting at most the acquire timeout.
    pub(crate) async fn write_guard(&self) -> Result<WriteGuard> {
        self.write_guard_within(self.settings.acquire_timeout).await
    }

    /// Takes the writer gate, waiting at most `wait`.
    pub(crate) async fn write_guard_within(&self, wait: Duration) -> Result<WriteGuard> {
        let permit = match Arc::clone(&self.writer.gate).try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(Error::Closed),
            Err(TryAcquireError::NoPermits) => {
                match tokio::time::timeout(wait, Arc::clone(&self.writer.gate).acquire_owned())
                    .await
                {
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
                match tokio::time::timeout(wait, self.reader_slots.acquire()).await {
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
            None => open_reader(path, self.settings)?,
        };
        let out = f(&conn);
        // Checked under the lock that close() clears the list under, so a
        // reader is never put back after close.
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.reader_slots.is_closed() {
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

    /// Closes every connection; connections in use close when released.
    pub(crate) fn close(&self) {
        self.reader_slots.close();
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
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

    pub(crate) fn busy_timeout(&self) -> Duration {
        self.settings.busy_timeout
    }
}

fn open_failed(path: &Path, e: rusqlite::Error) -> Error {
    Error::unavailable(
        format!("cannot open SQLite database {}: {e}", path.display()),
        Some(e.into()),
    )
}

fn open_conn(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags).map_err(|e| open_failed(path, e))
}

/// Applies and verifies the per-connection settings.
fn configure(c: &Connection, s: Settings, wal: bool, path: &Path) -> Result<()> {
    let fail = |e| open_failed(path, e);
    set_busy_timeout(c, s.busy_timeout).map_err(fail)?;
    c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let sync = match s.durability {
        Durability::Full => 2,
        Durability::Normal => 1,
    };
    c.pragma_update(None, "synchronous", sync).map_err(fail)?;
    c.pragma_update(None, "foreign_keys", true).map_err(fail)?;
    let got_sync: i64 = c
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .map_err(fail)?;
    let got_fk: i64 = c
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .map_err(fail)?;
    let mode: String = c
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .map_err(fail)?;
    if got_sync != sync || got_fk != 1 || (wal && !mode.eq_ignore_ascii_case("wal")) {
        return Err(Error::unavailable(
            format!(
                "SQLite database {}: settings did not take effect \
                 (synchronous={got_sync}, foreign_keys={got_fk}, journal_mode={mode})",
                path.display()
            ),
            None,
        ));
    }
    if let Some(bytes) = s.max_size {
        cap_size(c, bytes, path)?;
    }
    Ok(())
}

/// SQLite's largest page number (`max_page_count` cannot go higher).
const MAX_PAGE_COUNT: u64 = 4_294_967_294;

/// Applies the size cap as `PRAGMA max_page_count` and checks it took. SQLite
/// never sets the cap below the database's current page count: a database
/// already larger than the cap is held at its size, which is logged.
fn cap_size(c: &Connection, bytes: u64, path: &Path) -> Result<()> {
    let fail = |e| open_failed(path, e);
    let page_size: i64 = c
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .map_err(fail)?;
    let page_size = u64::try_from(page_size).unwrap_or(1).max(1);
    let want = (bytes / page_size).clamp(1, MAX_PAGE_COUNT);
    let want = i64::try_from(want).unwrap_or(i64::MAX);
    // `PRAGMA max_page_count = N` answers with the cap now in force.
    let got: i64 = c
        .pragma_update_and_check(None, "max_page_count", want, |r| r.get(0))
        .map_err(fail)?;
    if got < want {
        return Err(Error::unavailable(
            format!(
                "SQLite database {}: size cap did not take effect \
                 (max_page_count={got}, wanted {want})",
                path.display()
            ),
            None,
        ));
    }
    if got > want {
        tracing::warn!(
            path = %path.display(),
            cap_pages = want,
            pages = got,
            "SQLite database is already larger than its size cap; held at its current size"
        );
    }
    Ok(())
}

async fn open_writer(path: &Path, s: Settings) -> Result<Connection> {
    let c = open_conn(path)?;
    set_busy_timeout(&c, s.busy_timeout).map_err(|e| open_failed(path, e))?;
    // Switching to WAL needs a moment of exclusive access; another process
    // opening the same new file at once can make the switch report the old
    // mode, or fail with SQLITE_BUSY without calling the busy handler (lock
    // upgrade deadlock avoidance), instead of waiting, so retry within the
    // busy timeout.
    let deadline = Instant::now() + s.busy_timeout;
    loop {
        let mode: String =
            match c.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0)) {
                Ok(mode) => mode,
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(e) => return Err(open_failed(path, e)),
            };
        if mode.eq_ignore_ascii_case("wal") {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::unavailable(
                format!(
                    "cannot switch SQLite database {} to WAL mode (journal_mode stays {mode})",
                    path.display()
                ),
                None,
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    configure(&c, s, true, path)?;
    warn_if_shared_page_cache(&c);
    Ok(c)
}

/// Logs once per process when the linked SQLite shares one page cache across
/// all connections (built with `SQLITE_ENABLE_MEMORY_MANAGEMENT`, the
/// `bundled` default): identical connections then read at different speeds
/// for their whole life (D-047). Builds in this repository undefine it.
fn warn_if_shared_page_cache(c: &Connection) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(options) = compile_options(c) {
            if shares_page_cache(&options) {
                tracing::warn!(
                    "SQLite was built with SQLITE_ENABLE_MEMORY_MANAGEMENT: all connections \
                     share one page cache and some read much slower than others; build with \
                     LIBSQLITE3_FLAGS=-USQLITE_ENABLE_MEMORY_MANAGEMENT (see the README)"
                );
            }
        }
    });
}

/// Whether the SQLite linked into this program gives each connection a page
/// cache of its own, as persist is meant to run (built with
/// `LIBSQLITE3_FLAGS=-USQLITE_ENABLE_MEMORY_MANAGEMENT`; see the README). An
/// application embedding persist can assert it in a test or at start-up,
/// whatever its log level.
///
/// # Errors
/// [`Error::Sqlite`](crate::Error) when SQLite cannot open an in-memory
/// database to ask.
pub fn sqlite_page_cache_per_connection() -> Result<bool> {
    let c = Connection::open_in_memory().map_err(error::map)?;
    let options = compile_options(&c).map_err(error::map)?;
    Ok(!shares_page_cache(&options))
}

/// The options the linked SQLite was compiled with (`PRAGMA compile_options`).
fn compile_options(c: &Connection) -> rusqlite::Result<Vec<String>> {
    c.prepare("PRAGMA compile_options")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Whether SQLite's compile options make its page cache process-wide.
fn shares_page_cache(options: &[String]) -> bool {
    options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT")
}

/// Longest sleep between two tries for a lock another process holds.
const BUSY_POLL: Duration = Duration::from_millis(1);

/// Makes `c` wait up to `timeout` for a lock another process holds, trying
/// again every millisecond (SQLite's busy timeout, polled finely).
///
/// SQLite's own handler (`sqlite3_busy_timeout`) backs off to 100 ms between
/// tries. A process whose writers commit back to back frees the write lock
/// only for microseconds between two transactions, so tries that sparse can
/// miss every such moment for the whole timeout: the waiter then fails with
/// `SQLITE_BUSY` although the lock was free hundreds of times
/// (`tests/reliability_writers.rs` saw it with 16 tasks and 4 processes).
pub(crate) fn set_busy_timeout(c: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    let ms = usize::try_from(timeout.as_millis()).unwrap_or(usize::MAX);
    // SAFETY: `c.handle()` is this open connection's handle, used for this
    // call only. The handler is a plain function, and its context argument
    // carries the timeout as an integer that is never dereferenced, so it
    // cannot dangle.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_busy_handler(
            c.handle(),
            Some(busy_wait),
            std::ptr::without_provenance_mut(ms),
        )
    };
    if rc == rusqlite::ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rc),
            None,
        ))
    }
}

/// The busy handler: `ctx` is the timeout in milliseconds, `tries` how many
/// times it was called before for this wait (0 on the first call, when the
/// wait starts). Returns nonzero to try again.
extern "C" fn busy_wait(ctx: *mut std::ffi::c_void, tries: std::ffi::c_int) -> std::ffi::c_int {
    thread_local! {
        static SINCE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    let timeout = Duration::from_millis(u64::try_from(ctx.addr()).unwrap_or(u64::MAX));
    let now = Instant::now();
    // One wait runs on one thread: the statement's step blocks in here.
    let since = SINCE
        .try_with(|s| {
            if tries == 0 || s.get().is_none() {
                s.set(Some(now));
            }
            s.get()
        })
        .ok()
        .flatten()
        .unwrap_or(now);
    let left = timeout.saturating_sub(now.saturating_duration_since(since));
    if left.is_zero() {
        return 0;
    }
    std::thread::sleep(left.min(BUSY_POLL));
    1
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy)
    )
}

/// Page cache of one reader connection, in KiB: half of SQLite's default
/// (D-045). Readers cache the same hot pages (the B-trees' upper levels) side
/// by side, and the OS page cache behind them is shared, so two readers at
/// half size hold what one connection holds at the default.
const READER_CACHE_KIB: i64 = 1000;

fn open_reader(path: &Path, s: Settings) -> Result<Connection> {
    let c = open_conn(path)?;
    configure(&c, s, true, path)?;
    c.pragma_update(None, "query_only", true)
        .map_err(|e| open_failed(path, e))?;
    c.pragma_update(None, "cache_size", -READER_CACHE_KIB)
        .map_err(|e| open_failed(path, e))?;
    Ok(c)
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction on `c`: commits when it
/// succeeds, rolls back when it or the commit fails.
pub(crate) fn in_immediate_transaction<T>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    c.execute_batch("BEGIN IMMEDIATE").map_err(error::map)?;
    match f(c) {
        Ok(out) => match c.execute_batch("COMMIT") {
            Ok(()) => Ok(out),
            Err(e) => {
                rollback_quietly(c, "ROLLBACK");
                Err(error::map(e))
            }
        },
        Err(e) => {
            rollback_quietly(c, "ROLLBACK");
            Err(e)
        }
    }
}

/// Rolls back after a failure that is already being reported; a failing
/// rollback is logged, since the first error is the one the caller needs.
pub(crate) fn rollback_quietly(c: &Connection, sql: &str) {
    if let Err(e) = c.execute_batch(sql) {
        tracing::warn!(error = %e, "sqlite rollback failed");
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
    use super::*;

    /// Built with one page cache per connection (.cargo/config.toml, D-047):
    /// with SQLITE_ENABLE_MEMORY_MANAGEMENT, libsqlite3-sys's bundled default,
    /// every connection of the process shares one page-cache pool.
    #[test]
    fn sqlite_is_built_with_a_page_cache_per_connection() {
        assert!(sqlite_page_cache_per_connection().unwrap());
        let options = compile_options(&Connection::open_in_memory().unwrap()).unwrap();
        assert!(
            options.iter().any(|o| o.starts_with("THREADSAFE")),
            "{options:?}"
        );
        assert!(
            !shares_page_cache(&options),
            "built with a process-wide page cache: {options:?}"
        );
    }

    #[test]
    fn a_process_wide_page_cache_is_recognised_from_the_compile_options() {
        let opts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(shares_page_cache(&opts(&[
            "ENABLE_FTS5",
            "ENABLE_MEMORY_MANAGEMENT",
            "THREADSAFE=1"
        ])));
        assert!(!shares_page_cache(&opts(&["ENABLE_FTS5", "THREADSAFE=1"])));
        assert!(!shares_page_cache(&opts(&["ENABLE_MEMORY_MANAGEMENT_X"])));
    }

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
}
