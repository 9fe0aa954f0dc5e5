//! Whether the linked SQLite shares one page cache across connections, and
//! the one-time warning when it does.

use rusqlite::Connection;

use super::error::map;
use crate::error::Result;

/// Logs once per process when the linked SQLite shares one page cache across
/// all connections (built with `SQLITE_ENABLE_MEMORY_MANAGEMENT`, the
/// `bundled` default): identical connections then read at different speeds
/// for their whole life (D-047). Builds in this repository undefine it.
pub(super) fn warn_if_shared_page_cache(c: &Connection) {
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
/// [`Error::Database`](crate::Error::Database) when SQLite cannot open an
/// in-memory database to ask.
pub fn sqlite_page_cache_per_connection() -> Result<bool> {
    let c = Connection::open_in_memory().map_err(map)?;
    let options = compile_options(&c).map_err(map)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
