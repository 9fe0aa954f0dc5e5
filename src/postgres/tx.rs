//! Units of work on a PostgreSQL connection.

use tokio_postgres::Client;

use super::error::map;
use crate::error::Result;

/// Commits a unit of work. `COMMIT` of an aborted transaction answers as a
/// rollback without an error; the `SELECT` fails in that state, which stops
/// the batch before `COMMIT` and reports it.
pub(crate) async fn commit(c: &Client) -> Result<()> {
    c.batch_execute("SELECT 1; COMMIT").await.map_err(map)
}

/// Rolls back a unit of work.
pub(crate) async fn rollback(c: &Client) -> Result<()> {
    c.batch_execute("ROLLBACK").await.map_err(map)
}
