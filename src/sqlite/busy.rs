//! The busy handler: waiting for a lock another process holds, polled
//! finely. The crate's one `unsafe` block (D-035).

use std::time::{Duration, Instant};

use rusqlite::Connection;

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
// The crate's one unsafe block (D-035): a C callback through rusqlite's FFI,
// which has no safe wrapper for a busy handler with a context argument.
#[allow(unsafe_code)]
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
