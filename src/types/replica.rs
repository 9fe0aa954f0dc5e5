//! What read replicas report: the write position a caller can carry
//! ([`Position`]), each replica's state ([`ReplicaStatus`]) and the read
//! counters ([`ReplicaStats`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};

/// A position in the primary's write-ahead log: "every write acknowledged
/// before this point". Opaque to callers; it prints and parses as
/// PostgreSQL's LSN text (`16/B374D848`) so it can travel in a cookie, a
/// header or a message to another process, which passes it to
/// [`Db::reading_after`](crate::Db::reading_after) to read its own writes
/// from there. On SQLite (no replicas) every position is already reached.
///
/// A position means something only for the primary (and its replicas) it
/// came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Position(pub(crate) u64);

impl Position {
    /// The start of the log: reached by every server.
    pub const ZERO: Position = Position(0);

    /// The later of two positions.
    pub fn max(self, other: Position) -> Position {
        Position(self.0.max(other.0))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Position {
    type Err = Error;

    /// Parses PostgreSQL's LSN text (`HI/LO`, hexadecimal).
    ///
    /// # Errors
    /// [`Error::Config`] for anything else.
    fn from_str(s: &str) -> Result<Position> {
        let bad = || {
            Error::Config(format!(
                "not a write position (expected HI/LO in hexadecimal): {s:?}"
            ))
        };
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let ok =
            |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok(hi) || !ok(lo) {
            return Err(bad());
        }
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Position((hi << 32) | lo))
    }
}

/// Where a replica stands in the read rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplicaState {
    /// Not checked yet: out of the rotation until the first check.
    Starting,
    /// In the rotation.
    Healthy,
    /// Behind the primary by more than the configured bound
    /// ([`Config::with_replica_max_lag`](crate::Config::with_replica_max_lag)).
    Lagging,
    /// Does not answer (down, restarting, network), or a read on it failed.
    Unreachable,
    /// Answers but is not in recovery: promoted (or not a standby at all).
    /// It no longer follows the primary, so it never serves a read again
    /// while it stays so.
    Promoted,
}

impl ReplicaState {
    /// The state's name (`healthy`, `lagging`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Starting => "starting",
            ReplicaState::Healthy => "healthy",
            ReplicaState::Lagging => "lagging",
            ReplicaState::Unreachable => "unreachable",
            ReplicaState::Promoted => "promoted",
        }
    }
}

/// One replica as the last health check and the reads left it
/// ([`Db::replicas`](crate::Db::replicas)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// Its URL, password replaced by `***`.
    pub url: String,
    /// Where it stands in the rotation.
    pub state: ReplicaState,
    /// The position it has replayed to, as last seen.
    pub replayed: Position,
    /// How far behind the primary it was at the last check, in time: at
    /// most the age of the newest primary position it had replayed (exact
    /// to one check interval); when it had replayed none of the positions
    /// sampled, at least the age of the oldest. `None` before it was
    /// measured.
    #[serde(serialize_with = "millis")]
    pub lag: Option<Duration>,
    /// Bytes of write-ahead log it had not replayed at the last check
    /// (the primary's position then minus its replayed one); `None` before
    /// a check reached both servers.
    pub behind_bytes: Option<u64>,
    /// Reads it answered through this handle.
    pub reads: u64,
    /// The last failure seen on it, if its state is not healthy.
    pub last_error: Option<String>,
}

fn millis<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

/// Where this handle's reads outside units of work went
/// ([`Db::replica_stats`](crate::Db::replica_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReplicaStats {
    /// Reads answered by a replica (all replicas).
    pub replica_reads: u64,
    /// Reads answered by the primary (all reads when no replica is
    /// configured or healthy).
    pub primary_reads: u64,
    /// Of those, reads sent to the primary because no healthy replica had
    /// replayed the reader's last write (the read-your-writes fence).
    pub fallback_behind: u64,
    /// Of those, reads sent to the primary because no replica was healthy.
    pub fallback_no_replica: u64,
    /// Of those, reads repeated on the primary after a replica failed them.
    pub fallback_error: u64,
    /// Of those, "not found" answers of a replica checked again on the
    /// primary (a row written elsewhere may not have reached the replica).
    pub not_found_rechecks: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_print_and_parse_as_lsn_text() {
        let p: Position = "16/B374D848".parse().unwrap();
        assert_eq!(p, Position((0x16 << 32) | 0xB374_D848));
        assert_eq!(p.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Position>().unwrap(), Position::ZERO);
        for bad in ["", "16", "/1", "1/", "g/1", "1/123456789", "1/2/3", " 1/2"] {
            assert!(
                matches!(bad.parse::<Position>(), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }
}
