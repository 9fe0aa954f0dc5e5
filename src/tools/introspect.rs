//! Reading a live schema from the catalogs into one normalised form.

use crate::db::{Backend, Db};
use crate::error::Result;
use crate::types::schema::Schema;
use crate::{postgres, sqlite};

/// Reads the schema of the database `db` is open on.
///
/// # Errors
/// [`Error::Closed`](crate::Error::Closed) after [`Db::close`];
/// [`Error::Unavailable`](crate::Error::Unavailable),
/// [`Error::Timeout`](crate::Error::Timeout) or a driver error when the
/// catalog cannot be read.
pub async fn read_schema(db: &Db) -> Result<Schema> {
    match db.live()? {
        Backend::Sqlite(p) => p.read(sqlite::introspect::schema).await,
        Backend::Postgres(p) => postgres::introspect::schema(&*p.get().await?).await,
    }
}
