//! The size of a SQLite database on disk: the main file and its write-ahead
//! log.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Bytes of the database file at `path` and of its `-wal` file (0 when
/// absent).
pub(crate) fn on_disk(path: &Path) -> Result<(u64, u64)> {
    let main_bytes = std::fs::metadata(path)
        .map_err(|e| Error::unavailable("cannot read the database file's size", Some(e.into())))?
        .len();
    let mut wal = PathBuf::from(path).into_os_string();
    wal.push("-wal");
    let wal_bytes = match std::fs::metadata(&wal) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            return Err(Error::unavailable(
                "cannot read the write-ahead log's size",
                Some(e.into()),
            ))
        }
    };
    Ok((main_bytes, wal_bytes))
}
