//! The subcommands of the `persist` binary: argument types, printing and exit
//! codes. The work itself is done by the library.

pub mod copy;
pub mod demo;
pub mod status;
pub mod sweep;
pub mod sweep_battles;
pub mod verify;

/// Exit codes of `persist`.
pub mod exit {
    /// Failure of any kind not listed below.
    pub const ERROR: u8 = 1;
    /// `status`: migrations are pending.
    pub const PENDING: u8 = 3;
    /// `status`/`migrate`: an applied migration was edited after it was applied.
    pub const DRIFT: u8 = 4;
    /// `status`/`migrate`: the database records migrations this binary does not ship.
    pub const AHEAD: u8 = 5;
    /// `verify`: the live schema differs from what the migrations produce, or
    /// an integrity check failed.
    pub const MISMATCH: u8 = 6;
    /// `status`: the database is the target of a `copy` that did not finish
    /// (`verify` reports it with [`MISMATCH`]).
    pub const INCOMPLETE: u8 = 7;
    /// A command that writes, run against a read-only server (a PostgreSQL
    /// hot standby): `migrate` with migrations pending, and every write.
    /// Run it against the primary.
    pub const READ_ONLY: u8 = 8;
    /// `status`: a no-transaction migration started and did not finish
    /// (`migrate` resumes it).
    pub const INTERRUPTED: u8 = 9;
}

/// The `error:` line for a database marked by an unfinished copy.
pub const INCOMPLETE_COPY: &str = "the database is the target of a copy that did not finish \
     (its checksums were never verified): do not use it; run `persist copy --force` into it again";
