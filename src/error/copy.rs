//! Why a copy refused to start.

use std::fmt;

/// Why [`copy`](crate::copy()) refused to start ([`Error::CopyRefused`](super::Error::CopyRefused)). Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyRefusal {
    /// Source and target are the same database (copying would delete it with
    /// `force`, or duplicate it).
    SameDatabase,
    /// The target holds rows in these tables and `force` is off.
    TargetNotEmpty {
        /// The non-empty tables, in copy order.
        tables: Vec<String>,
    },
    /// The source is not exactly at this binary's schema version.
    SourceSchema {
        /// The migrations that are not applied as shipped, e.g. `0002_x pending`.
        detail: String,
    },
    /// The target cannot be brought to this binary's schema version.
    TargetSchema {
        /// The migrations in the way, e.g. `0001_init drifted`.
        detail: String,
    },
}

impl fmt::Display for CopyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyRefusal::SameDatabase => f.write_str("source and target are the same database"),
            CopyRefusal::TargetNotEmpty { tables } => write!(
                f,
                "the target already holds data (in {}); copy with force (--force) to delete it first",
                tables.join(", ")
            ),
            CopyRefusal::SourceSchema { detail } => write!(
                f,
                "the source is not at this binary's schema version ({detail}); migrate it first"
            ),
            CopyRefusal::TargetSchema { detail } => write!(
                f,
                "the target cannot be migrated to this binary's schema version ({detail})"
            ),
        }
    }
}
