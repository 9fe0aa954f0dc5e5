//! What `copy` and `content_checksum` take and return.

/// Row count and content checksum of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChecksum {
    /// The table.
    pub table: &'static str,
    /// Its number of rows.
    pub rows: u64,
    /// SHA-256 of its rows in primary-key order (see [`ContentChecksum`]), 64 hex characters.
    pub sha256: String,
}

/// Row counts and content checksums of every copied table.
///
/// # Format
///
/// Per table, SHA-256 over every row in primary-key order, each row the
/// concatenation of its values in column order (as the table declares them): NULL = byte
/// `0x00`; integer = `0x01` then the value as 8 bytes big-endian two's
/// complement; text = `0x02`, its UTF-8 length as 8 bytes big-endian, its
/// bytes; bytes = `0x03`, length as 8 bytes big-endian, the bytes. The
/// overall checksum is SHA-256 over `table NUL rows NUL table_sha256_hex LF`
/// for each table in copy order. Integers of any width hash alike, so both
/// dialects give the same checksums for the same content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentChecksum {
    /// One entry per copied table (`accounts`, `sessions`, `army_loadouts`,
    /// `progression`, `user_unlocks`), in that order.
    pub tables: Vec<TableChecksum>,
    /// SHA-256 over the per-table entries, 64 hex characters.
    pub sha256: String,
}

impl ContentChecksum {
    /// Total rows over all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Options of [`copy`](crate::copy()).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// Copy into a target that already holds rows, deleting them first (in
    /// one transaction, children first). Defaults to `false`: such a target
    /// is refused.
    pub force: bool,
    /// Rows per batch (1..=100000): one read and one write transaction each.
    /// Defaults to 1000.
    pub batch_size: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            force: false,
            batch_size: 1000,
        }
    }
}

/// Progress of [`copy`](crate::copy()), reported to its callback as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyEvent {
    /// The target had pending migrations and was migrated.
    TargetMigrated {
        /// The migrations applied, as `NNNN_name`.
        applied: Vec<String>,
        /// The schema version now.
        version: i64,
    },
    /// `force`: the target's rows were deleted.
    TargetEmptied {
        /// The tables that held rows.
        tables: Vec<String>,
    },
    /// A table starts.
    TableStarted {
        /// The table.
        table: &'static str,
        /// Rows to copy.
        rows: u64,
    },
    /// A batch was committed on the target.
    BatchCopied {
        /// The table.
        table: &'static str,
        /// Rows of this table copied so far.
        copied: u64,
        /// Rows of this table to copy.
        rows: u64,
    },
    /// The target's id counter was moved: new accounts get ids above this.
    IdCounterSet {
        /// The counter's value.
        user_id: i64,
    },
    /// Counting and checksumming both sides starts.
    Verifying,
}

/// What [`copy`](crate::copy()) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The schema version of both sides.
    pub schema_version: i64,
    /// Migrations applied to the target first, as `NNNN_name`.
    pub target_migrated: Vec<String>,
    /// Tables whose rows were deleted first (`force`).
    pub target_emptied: Vec<String>,
    /// The target's id counter after the copy: new accounts get larger ids.
    pub user_id_counter: i64,
    /// Row counts and checksums of the source, read in the copy's snapshot.
    pub source: ContentChecksum,
    /// Row counts and checksums of the target after the copy; equal to
    /// `source` (else the copy fails with [`Error::CopyMismatch`](crate::Error::CopyMismatch)).
    pub target: ContentChecksum,
}
