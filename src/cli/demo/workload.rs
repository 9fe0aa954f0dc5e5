//! The demo workload behind `persist demo`: the game server's flows played by
//! synthetic players, through the public repositories, on either backend.
//!
//! [`run`] migrates the database, then plays one scripted life per player on
//! [`DemoOptions::tasks`] concurrent tasks:
//!
//! 1. **register**: one unit of work creating the account, its progression
//!    (level 1, xp 0) and an empty loadout, then a session is issued;
//! 2. one to three **visits**. A visit resumes the session kept from the
//!    previous visit when it has not expired (one lookup), else logs in
//!    (**login**, by email or by username in any letter case: the account is
//!    read, its hash compared, `last_login_at` stamped and a session issued;
//!    sometimes a wrong password first, **login_failed**), then makes several
//!    authenticated requests (**session_lookup**: the token is looked up and
//!    `expires_at` checked; a session that expired meanwhile is refused and
//!    the client logs in again), maybe opens the loadout screen (**loadout_save**:
//!    read the loadout with its version and save it expecting that version;
//!    one time in three on two devices at once, from two tasks: one save wins,
//!    the other must get `Conflict` and re-applies its edit on the new
//!    version), plays battles (**battle**: one unit of work applying the
//!    result exactly once under the player's own battle id with
//!    `battles().apply`, raising the level when the xp crosses the next
//!    thousand; one report in four is sent again and must apply nothing and
//!    answer the same), sometimes opens a profile screen (sessions and unlock
//!    flags read in keyset pages of two, counted in the calls) and usually
//!    ends with a **logout** (the token is deleted, then a lookup must miss);
//! 3. sometimes a **password_change** (one unit of work replacing the hash and
//!    deleting every session of the user) and, for about one player in twenty,
//!    an **account_delete** (after which the progression must be gone).
//!
//! The demo plays the auth layer too: password hashes are argon2id-shaped
//! strings and bearer tokens are 32 bytes base64url-encoded (43 characters),
//! both drawn from the seeded generator.
//!
//! # Determinism
//!
//! The final content of the database (accounts, hashes, timestamps, sessions,
//! loadouts and their versions, xp, levels, unlock flags, battle records) is
//! a function of the seed and the number of players only, whatever the
//! number of tasks and however they interleave (the two-device loadout races
//! included: the final loadout is the re-applied edit whoever won), on both
//! backends. Each player's script comes from its own
//! ChaCha8 stream (key from the seed, stream number = player index), touches
//! only that player's rows, and reads time from a simulated clock that
//! starts at [`SIMULATED_START`] (not the wall clock). The one exception is
//! `user_id`, which the database assigns in commit order: compare by
//! username. Player `i` of seed `s` is named [`player_username`]`(s, i)` with
//! email [`player_email`]`(s, i)`, so names never collide between players
//! or seeds.
//!
//! A run first deletes the accounts a previous run *with the same seed* left
//! (matched by both demo username and demo email), so re-running a seed on
//! the same database ends in the same content as a run on a fresh one.
//!
//! The simulated clock starts in the past, so every session the demo leaves
//! behind has expired by the wall clock; `persist sweep-sessions` removes
//! them.
//!
//!
//! # Consistency checks
//!
//! Every answer the script can predict is checked (the session found belongs
//! to the player and has the expected expiry, xp after `add_xp` equals the
//! script's own sum, `grant_many` reports exactly the new flags, a deleted
//! token or account is gone, ...). Failures are counted in
//! [`DemoReport::failed_checks`], never panicked on.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use persist::{BackendKind, DatabaseSize, Db, Error, MigrationReport, Result, Violation};

use super::player::play;
use super::retry::again;

/// Default number of players of `persist demo`.
pub const DEFAULT_PLAYERS: u32 = 200;
/// Default seed of `persist demo`.
pub const DEFAULT_SEED: u64 = 42;
/// Default number of concurrent tasks of `persist demo`.
pub const DEFAULT_TASKS: u32 = 8;
/// Most players one run accepts.
pub const MAX_PLAYERS: u32 = 1_000_000;
/// Most concurrent tasks one run accepts.
pub const MAX_TASKS: u32 = 1_024;
/// Where the simulated clock starts (2023-11-14T22:13:20Z), in seconds since
/// the Unix epoch. Player `i` starts `i` seconds later.
pub const SIMULATED_START: i64 = 1_700_000_000;
/// Lifetime of a session the demo issues, in seconds (one day).
pub const SESSION_TTL: i64 = 86_400;

/// The username of player `index` of a run with `seed`:
/// `demo-<seed in hex>-<index, at least 4 digits>` (at most 29 characters).
pub fn player_username(seed: u64, index: u32) -> String {
    format!("demo-{seed:x}-{index:04}")
}

/// The email of player `index` of a run with `seed`: the username at
/// `demo.invalid` (a reserved domain no real address can have).
pub fn player_email(seed: u64, index: u32) -> String {
    format!("{}@demo.invalid", player_username(seed, index))
}

/// What [`run`] plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoOptions {
    /// Number of synthetic players, `1..=`[`MAX_PLAYERS`].
    pub players: u32,
    /// Seed of every random choice: the same seed gives the same final
    /// database content.
    pub seed: u64,
    /// Concurrent tasks playing players, `1..=`[`MAX_TASKS`]. Does not change
    /// the final content.
    pub tasks: u32,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            players: DEFAULT_PLAYERS,
            seed: DEFAULT_SEED,
            tasks: DEFAULT_TASKS,
        }
    }
}

impl DemoOptions {
    pub(super) fn validate(&self) -> Result<()> {
        if !(1..=MAX_PLAYERS).contains(&self.players) {
            return Err(Error::InvalidInput {
                field: "players",
                violation: Violation::OutOfRange {
                    min: 1,
                    max: MAX_PLAYERS.into(),
                },
            });
        }
        if !(1..=MAX_TASKS).contains(&self.tasks) {
            return Err(Error::InvalidInput {
                field: "tasks",
                violation: Violation::OutOfRange {
                    min: 1,
                    max: MAX_TASKS.into(),
                },
            });
        }
        Ok(())
    }
}

/// The kinds of operation the demo counts: one flow step of the game server,
/// which may be several repository calls (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum OpKind {
    /// Account, progression and loadout in one unit of work, then a session.
    Register,
    /// Account read by email or username, `last_login_at` stamped, session
    /// issued.
    Login,
    /// Account read, password wrong: nothing written.
    LoginFailed,
    /// One authenticated request: a session looked up by token.
    SessionLookup,
    /// Loadout screen: the whole loadout read and saved.
    LoadoutSave,
    /// End of a battle: xp added (level raised when due) and unlock flags
    /// granted, in one unit of work.
    Battle,
    /// One session deleted.
    Logout,
    /// Hash replaced and every session of the user deleted, in one unit of
    /// work.
    PasswordChange,
    /// Account deleted with everything of the user.
    AccountDelete,
}

impl OpKind {
    /// Every kind, in the order of the summary table.
    pub const ALL: [OpKind; 9] = [
        OpKind::Register,
        OpKind::Login,
        OpKind::LoginFailed,
        OpKind::SessionLookup,
        OpKind::LoadoutSave,
        OpKind::Battle,
        OpKind::Logout,
        OpKind::PasswordChange,
        OpKind::AccountDelete,
    ];

    /// The kind's name in the summary table (`register`, `session_lookup`, ...).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Register => "register",
            OpKind::Login => "login",
            OpKind::LoginFailed => "login_failed",
            OpKind::SessionLookup => "session_lookup",
            OpKind::LoadoutSave => "loadout_save",
            OpKind::Battle => "battle",
            OpKind::Logout => "logout",
            OpKind::PasswordChange => "password_change",
            OpKind::AccountDelete => "account_delete",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Count and time of one kind of operation in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpStats {
    /// The kind.
    pub kind: OpKind,
    /// How many were played.
    pub count: u64,
    /// Time spent in them, summed over all tasks (waits for a connection or
    /// the SQLite writer included).
    pub busy: Duration,
}

impl OpStats {
    /// Mean time of one operation, `None` when none was played.
    pub fn mean(&self) -> Option<Duration> {
        let n = u32::try_from(self.count).ok().filter(|n| *n > 0)?;
        Some(self.busy / n)
    }
}

/// Progress of a run, reported after each finished player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoProgress {
    /// Players whose script has finished.
    pub players_done: u32,
    /// Players in the run.
    pub players_total: u32,
    /// Operations played so far.
    pub operations: u64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    /// The options it ran with.
    pub options: DemoOptions,
    /// The backend it ran on.
    pub backend: BackendKind,
    /// What the migration step before the workload applied.
    pub migrations: MigrationReport,
    /// One entry per kind, in [`OpKind::ALL`] order.
    pub ops: Vec<OpStats>,
    /// Repository calls made (a unit of work's calls counted one by one,
    /// begin and commit not counted).
    pub repository_calls: u64,
    /// Consistency checks made.
    pub checks: u64,
    /// Consistency checks that failed (0 unless the layer has a bug).
    pub failed_checks: u64,
    /// The first failed check, described without any value a log must not
    /// hold.
    pub first_failure: Option<String>,
    /// Accounts left by an earlier run with the same seed, deleted first.
    pub earlier_players_removed: u64,
    /// Calls run again after a retryable failure (a terminated backend, a
    /// restarting server), or whose unknown outcome was read back.
    pub retries: u64,
    /// Wall time of the workload (migration and size measurement excluded).
    pub wall: Duration,
    /// Size of the database after the run.
    pub size: DatabaseSize,
}

impl DemoReport {
    /// Operations of every kind.
    pub fn total_ops(&self) -> u64 {
        self.ops.iter().map(|s| s.count).sum()
    }

    /// `count` operations per second of wall time (0 for an empty run).
    pub fn per_second(&self, count: u64) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            count as f64 / secs
        } else {
            0.0
        }
    }

    /// The stats of one kind.
    #[cfg(test)]
    pub fn stats(&self, kind: OpKind) -> Option<&OpStats> {
        self.ops.iter().find(|s| s.kind == kind)
    }
}

/// Migrates `db`, then plays the demo workload (see the [module docs](self))
/// and reports what it did. `progress` is called after each finished player,
/// on the calling task.
///
/// Dropping the returned future stops every task; units of work in flight
/// roll back.
///
/// # Errors
/// [`Error::InvalidInput`] for options out of range (nothing runs); any
/// error of [`Db::migrate`]; the first unexpected error of a repository call
/// (the run stops; [`Error::Conflict`] when a non-demo account holds a demo
/// player's username or email); the errors of [`Db::database_size`].
pub async fn run(
    db: &Db,
    options: &DemoOptions,
    mut progress: impl FnMut(&DemoProgress),
) -> Result<DemoReport> {
    options.validate()?;
    let migrations = db.migrate().await?;
    let start = Instant::now();
    let next = Arc::new(AtomicU32::new(0));
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Result<Tally>>();
    let mut tasks = JoinSet::new();
    for _ in 0..options.tasks.min(options.players) {
        let (db, next, sender) = (db.clone(), Arc::clone(&next), sender.clone());
        let (seed, players) = (options.seed, options.players);
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= players {
                    break;
                }
                let out = play(&db, seed, index).await;
                let failed = out.is_err();
                if sender.send(out).is_err() || failed {
                    break;
                }
            }
        });
    }
    drop(sender);

    let mut total = Tally::default();
    let mut done = 0u32;
    while let Some(out) = receiver.recv().await {
        match out {
            Ok(tally) => {
                total.merge(tally);
                done += 1;
                progress(&DemoProgress {
                    players_done: done,
                    players_total: options.players,
                    operations: total.count.iter().sum(),
                });
            }
            Err(e) => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                return Err(e);
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let wall = start.elapsed();
    let size = again(&mut total.retries, move || async move {
        db.database_size().await
    })
    .await?;
    Ok(DemoReport {
        options: *options,
        backend: db.backend(),
        migrations,
        ops: OpKind::ALL
            .iter()
            .map(|k| OpStats {
                kind: *k,
                count: total.count[k.index()],
                busy: total.busy[k.index()],
            })
            .collect(),
        repository_calls: total.calls,
        checks: total.checks,
        failed_checks: total.failed,
        first_failure: total.first_failure,
        earlier_players_removed: total.removed,
        retries: total.retries,
        wall,
        size,
    })
}

pub(super) const KINDS: usize = OpKind::ALL.len();

/// What one player's script (or the whole run) did.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) count: [u64; KINDS],
    pub(super) busy: [Duration; KINDS],
    pub(super) calls: u64,
    pub(super) checks: u64,
    pub(super) failed: u64,
    pub(super) first_failure: Option<String>,
    pub(super) removed: u64,
    /// Attempts made again after a retryable failure or an unknown outcome.
    pub(super) retries: u64,
}

impl Tally {
    pub(super) fn merge(&mut self, o: Tally) {
        for i in 0..KINDS {
            self.count[i] += o.count[i];
            self.busy[i] += o.busy[i];
        }
        self.calls += o.calls;
        self.checks += o.checks;
        self.failed += o.failed;
        self.removed += o.removed;
        self.retries += o.retries;
        if self.first_failure.is_none() {
            self.first_failure = o.first_failure;
        }
    }
}
