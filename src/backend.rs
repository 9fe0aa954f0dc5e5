//! The backend enum: which database a configuration, a handle, a migration
//! set or an error belongs to.

use std::fmt;

/// Which database a [`Config`](crate::Config), the [`Db`](crate::Db) opened
/// from it, a [`Migrations`](crate::Migrations) set or a
/// [`DatabaseError`](crate::DatabaseError) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// SQLite, a local file or an in-memory database.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        })
    }
}
