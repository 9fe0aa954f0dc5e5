//! The database file on disk: created owner-only, an existing one's mode
//! checked, and the read-only open of an existing file for inspection.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::connect::open_failed;
use crate::error::{Error, Result};

/// Mode of a database file persist creates: owner read and write only. SQLite
/// gives the `-wal` and `-shm` files it creates the database file's mode.
#[cfg(unix)]
pub(super) const PRIVATE_MODE: u32 = 0o600;

/// Creates `path` empty and owner-only when it does not exist (SQLite opens
/// an empty file as a new database); warns when an existing file is readable
/// by other users, leaving its mode alone.
pub(super) fn prepare(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if meta.is_file() && mode & 0o044 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = %format!("{mode:04o}"),
                        "SQLite database file is readable by other users \
                         (chmod 600 it to keep accounts private)"
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let created = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(PRIVATE_MODE)
                    .open(path);
                match created {
                    Ok(_) => {}
                    // Another process created it meanwhile: it is theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(Error::unavailable(
                            format!("cannot create SQLite database {}: {e}", path.display()),
                            Some(e.into()),
                        ))
                    }
                }
            }
            // Let SQLite's open report it.
            Err(_) => {}
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Opens an existing database file read-only: never creates it, never
/// changes its journal mode.
pub(super) fn open_read_only(path: &Path) -> Result<Connection> {
    if !path.is_file() {
        let what = if path.exists() {
            "is not a file"
        } else {
            "does not exist"
        };
        return Err(Error::unavailable(
            format!(
                "SQLite database {} {what} (read-only commands never create one)",
                path.display()
            ),
            None,
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags).map_err(|e| open_failed(path, e))?;
    match c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(c),
        // A WAL database whose `-shm` cannot be created (read-only
        // directory): with no `-wal` beside it no connection has it open
        // in WAL mode, so it is read as immutable.
        Err(e) if cannot_create_side_files(&e) && !wal_path(path).exists() => {
            drop(c);
            tracing::debug!(path = %path.display(), "read-only directory: reading the database as immutable");
            Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
                .map_err(|e| open_failed(path, e))
        }
        Err(e) => Err(open_failed(path, e)),
    }
}

/// `SQLITE_READONLY_DIRECTORY` or `SQLITE_CANTOPEN`: the `-shm` could not
/// be created.
fn cannot_create_side_files(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    )
}

fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    p.into()
}

/// `file:PATH?immutable=1`, the path's `%`, `?` and `#` escaped.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for ch in path.to_string_lossy().chars() {
        match ch {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    uri
}
