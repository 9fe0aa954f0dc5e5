//! Opening and configuring SQLite connections: flags, pragmas applied and
//! verified, the size cap, the writer (switching the file to WAL) and the
//! readers.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::busy::set_busy_timeout;
use super::pagecache::warn_if_shared_page_cache;
use super::Settings;
use crate::config::Durability;
use crate::error::{Error, Result};

/// Statements cached per connection (the repositories use fewer than this).
const STATEMENT_CACHE: usize = 64;

pub(super) fn open_failed(path: &Path, e: rusqlite::Error) -> Error {
    Error::unavailable(
        format!("cannot open SQLite database {}: {e}", path.display()),
        Some(e.into()),
    )
}

pub(super) fn open_conn(path: &Path, s: Settings) -> Result<Connection> {
    if s.read_only {
        return super::files::open_read_only(path);
    }
    super::files::prepare(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags).map_err(|e| open_failed(path, e))
}

/// Applies and verifies the per-connection settings.
pub(super) fn configure(c: &Connection, s: Settings, wal: bool, path: &Path) -> Result<()> {
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

pub(super) async fn open_writer(path: &Path, s: Settings) -> Result<Connection> {
    let c = open_conn(path, s)?;
    if s.read_only {
        // Inspection: the journal mode stays whatever the file has.
        configure(&c, s, false, path)?;
        c.pragma_update(None, "query_only", true)
            .map_err(|e| open_failed(path, e))?;
        return Ok(c);
    }
    // Before the switch to WAL, which would change another application's
    // file for good.
    set_busy_timeout(&c, s.busy_timeout).map_err(|e| open_failed(path, e))?;
    super::migrate::refuse_foreign(&c).map_err(|e| match e {
        Error::ForeignDatabase(_) => e,
        // Not readable as a database at all: as any open failure.
        other => Error::unavailable(
            format!("cannot open SQLite database {}: {other}", path.display()),
            Some(Box::new(other)),
        ),
    })?;
    // Switching to WAL needs a moment of exclusive access; another process
    // opening the same new file at once can make the switch report the old
    // mode, or fail with SQLITE_BUSY without calling the busy handler (lock
    // upgrade deadlock avoidance), instead of waiting, so retry within the
    // busy timeout.
    let deadline = crate::config::deadline_after(s.busy_timeout);
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
    keep_journals_in_memory(&c, path)?;
    warn_if_shared_page_cache(&c);
    Ok(c)
}

/// `temp_store = MEMORY` on the writer (D-133): a unit of work opens a
/// savepoint right after `BEGIN IMMEDIATE` (D-062), so every page it changes
/// is first copied to the savepoint's sub-journal, which SQLite moves to a
/// temporary file past 64 KiB and then writes page by page. In memory the
/// sub-journal costs a page copy instead of a `pwrite`; it holds at most one
/// copy of each page the unit of work changed and is freed at commit. The
/// sorter of `CREATE INDEX` keeps its own temporary files (it ignores
/// `temp_store`).
fn keep_journals_in_memory(c: &Connection, path: &Path) -> Result<()> {
    c.pragma_update(None, "temp_store", 2)
        .map_err(|e| open_failed(path, e))?;
    let got: i64 = c
        .pragma_query_value(None, "temp_store", |r| r.get(0))
        .map_err(|e| open_failed(path, e))?;
    if got != 2 {
        return Err(Error::unavailable(
            format!(
                "SQLite database {}: temp_store = MEMORY did not take effect",
                path.display()
            ),
            None,
        ));
    }
    Ok(())
}

pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy)
    )
}

/// Page cache of one reader connection, in KiB: half of SQLite's default
/// (D-045). Readers cache the same hot pages (the B-trees' upper levels) side
/// by side, and the OS page cache behind them is shared, so two readers at
/// half size hold what one connection holds at the default.
pub(super) const READER_CACHE_KIB: i64 = 1000;

pub(super) fn open_reader(path: &Path, s: Settings) -> Result<Connection> {
    let c = open_conn(path, s)?;
    configure(&c, s, !s.read_only, path)?;
    c.pragma_update(None, "query_only", true)
        .map_err(|e| open_failed(path, e))?;
    c.pragma_update(None, "cache_size", -READER_CACHE_KIB)
        .map_err(|e| open_failed(path, e))?;
    Ok(c)
}
