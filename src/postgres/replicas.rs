//! The SQL of read replicas: the primary's write position after a write, a
//! standby's replayed position, and a standby's health probe.

use tokio_postgres::Client;

use super::error::map;
use crate::error::{Error, Result};

/// The primary's WAL insert position, as bytes from `0/0`: at or past the
/// commit record of every transaction this connection has committed (also
/// under `synchronous_commit=off`, where the write position may trail it).
const WRITE_POSITION: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint";

/// A standby's replayed position (0 when it never replayed anything).
const REPLAYED: &str =
    "SELECT (COALESCE(pg_last_wal_replay_lsn(), '0/0'::pg_lsn) - '0/0'::pg_lsn)::bigint";

/// A standby's health: in recovery, replayed position, postmaster start.
const PROBE: &str = "SELECT pg_is_in_recovery(), \
     (COALESCE(pg_last_wal_replay_lsn(), '0/0'::pg_lsn) - '0/0'::pg_lsn)::bigint, \
     (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint";

fn position(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The primary's write position (one cached prepared statement).
pub(crate) async fn write_position(c: &super::Client<'_>) -> Result<u64> {
    let row = c.query_one(WRITE_POSITION, &[]).await.map_err(map)?;
    Ok(position(row.try_get(0).map_err(map)?))
}

/// A standby's replayed position, in the simple protocol: the query is sent
/// when the future is first polled, so a statement sent after that poll on
/// the same connection runs after it and sees at least this position.
pub(crate) async fn replayed(c: &Client) -> Result<u64> {
    let messages = c.simple_query(REPLAYED).await.map_err(map)?;
    let value = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    value
        .and_then(|v| v.parse::<i64>().ok())
        .map(position)
        .ok_or_else(|| Error::Config("pg_last_wal_replay_lsn() gave no value".into()))
}

/// What one health check of a standby reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pub(crate) in_recovery: bool,
    pub(crate) replayed: u64,
    /// `pg_postmaster_start_time()` in microseconds: changes on a restart.
    pub(crate) started_us: i64,
}

pub(crate) async fn probe(c: &super::Client<'_>) -> Result<Probe> {
    let row = c.query_one(PROBE, &[]).await.map_err(map)?;
    Ok(Probe {
        in_recovery: row.try_get(0).map_err(map)?,
        replayed: position(row.try_get(1).map_err(map)?),
        started_us: row.try_get(2).map_err(map)?,
    })
}
