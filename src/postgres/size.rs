//! The size of a PostgreSQL database on disk.

use super::error::map;
use super::RawClient;
use crate::error::Result;

/// `pg_database_size(current_database())`, in bytes (an unnamed statement:
/// safe behind a transaction pooler).
pub(crate) async fn database(c: &RawClient) -> Result<u64> {
    let row = c
        .query_typed_one("SELECT pg_database_size(current_database())", &[])
        .await
        .map_err(map)?;
    let bytes: i64 = row.try_get(0).map_err(map)?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}
