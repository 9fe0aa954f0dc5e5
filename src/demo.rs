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
//!    read and save the whole loadout), plays battles (**battle**: one unit of
//!    work adding xp, raising the level when the xp crosses the next thousand,
//!    and granting unlock flags) and usually ends with a **logout** (the
//!    token is deleted, then a lookup must miss);
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
//! loadouts, xp, levels, unlock flags) is a function of the seed and the
//! number of players only, whatever the number of tasks and however they
//! interleave, on both backends. Each player's script comes from its own
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
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> persist::Result<()> {
//! use persist::demo::{self, DemoOptions, OpKind};
//!
//! let db = persist::open(&persist::Config::from_url("sqlite::memory:")?).await?;
//! let options = DemoOptions { players: 10, ..DemoOptions::default() };
//! let report = demo::run(&db, &options, |p| {
//!     println!("{}/{} players", p.players_done, p.players_total);
//! })
//! .await?;
//! assert_eq!(report.stats(OpKind::Register).map(|s| s.count), Some(10));
//! assert_eq!(report.failed_checks, 0);
//! db.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Consistency checks
//!
//! Every answer the script can predict is checked (the session found belongs
//! to the player and has the expected expiry, xp after `add_xp` equals the
//! script's own sum, `grant_many` reports exactly the new flags, a deleted
//! token or account is gone, ...). Failures are counted in
//! [`DemoReport::failed_checks`], never panicked on.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

use crate::config::BackendKind;
use crate::db::{Backend, Db};
use crate::error::{Error, Result, Violation};
use crate::migrate::MigrationReport;
use crate::models::{Loadout, NewAccount, PieceAbilities, Progression, Session, UserId};

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
    fn validate(&self) -> Result<()> {
        if !(1..=MAX_PLAYERS).contains(&self.players) {
            return Err(Error::invalid(
                "players",
                Violation::OutOfRange {
                    min: 1,
                    max: MAX_PLAYERS.into(),
                },
            ));
        }
        if !(1..=MAX_TASKS).contains(&self.tasks) {
            return Err(Error::invalid(
                "tasks",
                Violation::OutOfRange {
                    min: 1,
                    max: MAX_TASKS.into(),
                },
            ));
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

    fn index(self) -> usize {
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

/// Size of the database on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseSize {
    /// A SQLite file: the main file and its write-ahead log (0 when absent).
    Sqlite {
        /// Bytes of the database file.
        main_bytes: u64,
        /// Bytes of the `-wal` file.
        wal_bytes: u64,
    },
    /// A PostgreSQL database: `pg_database_size(current_database())`.
    Postgres {
        /// Bytes.
        bytes: u64,
    },
    /// An in-memory SQLite database: no size on disk.
    InMemory,
}

impl DatabaseSize {
    /// Total bytes on disk, `None` for an in-memory database.
    pub fn total_bytes(&self) -> Option<u64> {
        match *self {
            DatabaseSize::Sqlite {
                main_bytes,
                wal_bytes,
            } => Some(main_bytes.saturating_add(wal_bytes)),
            DatabaseSize::Postgres { bytes } => Some(bytes),
            DatabaseSize::InMemory => None,
        }
    }
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
    pub fn stats(&self, kind: OpKind) -> Option<&OpStats> {
        self.ops.iter().find(|s| s.kind == kind)
    }
}

/// Size of the database on disk: for SQLite the file plus its write-ahead
/// log, for PostgreSQL `pg_database_size(current_database())`.
///
/// # Errors
/// [`Error::Closed`]; [`Error::Unavailable`] when the SQLite file cannot be
/// read or the server does not answer; the driver's error for a failed query.
pub async fn database_size(db: &Db) -> Result<DatabaseSize> {
    match db.live()? {
        Backend::Sqlite(_) => {
            let Some(path) = db.config().sqlite_path() else {
                return Ok(DatabaseSize::InMemory);
            };
            let main_bytes = std::fs::metadata(path)
                .map_err(|e| {
                    Error::unavailable("cannot read the database file's size", Some(e.into()))
                })?
                .len();
            let mut wal = PathBuf::from(path).into_os_string();
            wal.push("-wal");
            let wal_bytes = match std::fs::metadata(&wal) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => {
                    return Err(Error::unavailable(
                        "cannot read the write-ahead log's size",
                        Some(e.into()),
                    ))
                }
            };
            Ok(DatabaseSize::Sqlite {
                main_bytes,
                wal_bytes,
            })
        }
        Backend::Postgres(pool) => {
            let client = pool.get().await?;
            let row = client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await
                .map_err(crate::postgres::error::map)?;
            let bytes: i64 = row.try_get(0).map_err(crate::postgres::error::map)?;
            Ok(DatabaseSize::Postgres {
                bytes: u64::try_from(bytes).unwrap_or(0),
            })
        }
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
/// player's username or email); the errors of [`database_size`].
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
    let size = database_size(db).await?;
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
        wall,
        size,
    })
}

const KINDS: usize = OpKind::ALL.len();

/// What one player's script (or the whole run) did.
#[derive(Default)]
struct Tally {
    count: [u64; KINDS],
    busy: [Duration; KINDS],
    calls: u64,
    checks: u64,
    failed: u64,
    first_failure: Option<String>,
    removed: u64,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        for i in 0..KINDS {
            self.count[i] += o.count[i];
            self.busy[i] += o.busy[i];
        }
        self.calls += o.calls;
        self.checks += o.checks;
        self.failed += o.failed;
        self.removed += o.removed;
        if self.first_failure.is_none() {
            self.first_failure = o.first_failure;
        }
    }
}

/// A session the player holds (it exists in the database).
struct Held {
    token: String,
    expires_at: i64,
}

/// One player's script state. Every choice comes from `rng`; nothing read
/// back from the database (user ids included) influences a choice.
struct Player<'a> {
    db: &'a Db,
    index: u32,
    rng: ChaCha8Rng,
    now: i64,
    name: String,
    email: String,
    hash: String,
    user: UserId,
    /// Sessions of this user in the database, oldest first; the last one is
    /// the client's current session while `kept` or inside a visit.
    held: Vec<Held>,
    /// The client kept its session at the end of the last visit (no logout).
    kept: bool,
    level: i32,
    xp: i64,
    flags: BTreeSet<i32>,
    loadout: Option<Loadout>,
    tally: Tally,
}

/// Plays player `index`'s whole life.
async fn play(db: &Db, seed: u64, index: u32) -> Result<Tally> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index.into());
    let mut p = Player {
        db,
        index,
        rng,
        now: SIMULATED_START + i64::from(index),
        name: player_username(seed, index),
        email: player_email(seed, index),
        hash: String::new(),
        user: UserId(0),
        held: Vec::new(),
        kept: false,
        level: 1,
        xp: 0,
        flags: BTreeSet::new(),
        loadout: None,
        tally: Tally::default(),
    };
    p.remove_earlier_run().await?;
    p.register().await?;
    let visits = 1 + p.below(3);
    for visit in 0..visits {
        if visit > 0 {
            // Away for an hour to three days: a kept session may expire.
            p.advance(3_600, 3 * 86_400);
        }
        p.visit().await?;
    }
    if p.below(10) == 0 {
        p.advance(60, 3_600);
        p.change_password().await?;
    }
    if p.below(20) == 0 {
        p.advance(60, 3_600);
        p.delete_account().await?;
    }
    Ok(p.tally)
}

impl Player<'_> {
    /// A uniform-enough number in `0..n` from the player's stream (Lemire's
    /// multiply-shift; only ChaCha8's output, which is portable, is used).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.rng.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn below_i32(&mut self, n: u32) -> i32 {
        i32::try_from(self.below(n.into())).unwrap_or(0)
    }

    fn advance(&mut self, min: i64, max: i64) {
        let span = u64::try_from(max - min + 1).unwrap_or(1);
        self.now += min + i64::try_from(self.below(span)).unwrap_or(0);
    }

    fn random_b64(&mut self, n: usize) -> String {
        let mut bytes = vec![0u8; n];
        self.rng.fill_bytes(&mut bytes);
        base64url(&bytes)
    }

    /// An argon2id-shaped encoded hash (what the auth layer would store).
    fn new_hash(&mut self) -> String {
        let salt = self.random_b64(16);
        let hash = self.random_b64(32);
        format!("$argon2id$v=19$m=19456,t=2,p=1${salt}${hash}")
    }

    fn check(&mut self, ok: bool, what: &str) {
        self.tally.checks += 1;
        if !ok {
            self.tally.failed += 1;
            if self.tally.first_failure.is_none() {
                self.tally.first_failure = Some(format!("player {}: {what}", self.index));
            }
        }
    }

    fn record(&mut self, kind: OpKind, started: Instant, calls: u64) {
        self.tally.count[kind.index()] += 1;
        self.tally.busy[kind.index()] += started.elapsed();
        self.tally.calls += calls;
    }

    /// Deletes this player's account if an earlier run with the same seed
    /// left it (same demo username and demo email).
    async fn remove_earlier_run(&mut self) -> Result<()> {
        self.tally.calls += 1;
        match self.db.accounts().find_by_username(&self.name).await {
            Ok(a) if a.email == self.email => {
                self.tally.calls += 1;
                self.db.accounts().delete(a.user_id).await?;
                self.tally.removed += 1;
                Ok(())
            }
            // Not a demo account: registering will report the conflict.
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn register(&mut self) -> Result<()> {
        self.hash = self.new_hash();
        let started = Instant::now();
        let tx = self.db.begin().await?;
        let account = tx
            .accounts()
            .create(&NewAccount {
                email: &self.email,
                username: &self.name,
                pass_hash: self.hash.as_bytes(),
                created_at: self.now,
            })
            .await?;
        self.user = account.user_id;
        tx.progression()
            .set(&Progression {
                user_id: self.user,
                level: self.level,
                xp: self.xp,
            })
            .await?;
        let loadout = Loadout::empty(self.user, self.now);
        tx.loadouts().save(&loadout).await?;
        tx.commit().await?;
        self.loadout = Some(loadout);
        self.issue_session().await?;
        self.record(OpKind::Register, started, 4);
        Ok(())
    }

    async fn issue_session(&mut self) -> Result<()> {
        let token = self.random_b64(32);
        let expires_at = self.now + SESSION_TTL;
        let s = self
            .db
            .sessions()
            .create(&token, self.user, self.now, expires_at)
            .await?;
        let ok = s.user_id == self.user && s.expires_at == expires_at;
        self.check(ok, "created session differs from the request");
        self.held.push(Held { token, expires_at });
        Ok(())
    }

    /// One visit; the current session is always the last held one.
    async fn visit(&mut self) -> Result<()> {
        // The client first tries the session it kept, if any.
        let kept = std::mem::take(&mut self.kept);
        let resumed = match self.held.last().filter(|_| kept) {
            Some(h) => {
                let (token, expires_at) = (h.token.clone(), h.expires_at);
                let s = self.lookup(&token).await?;
                let found = s.is_some_and(|s| s.user_id == self.user && s.expires_at == expires_at);
                self.check(found, "kept session not found as issued");
                found && expires_at > self.now
            }
            None => false,
        };
        if !resumed {
            if self.below(10) == 0 {
                self.failed_login().await?;
            }
            self.login().await?;
        }
        for _ in 0..2 + self.below(5) {
            self.advance(1, 30);
            self.request().await?;
        }
        if self.below(2) == 0 {
            self.advance(5, 120);
            self.loadout_screen().await?;
        }
        for _ in 0..self.below(4) {
            self.advance(60, 600);
            self.request().await?;
            self.battle().await?;
        }
        if self.below(5) != 0 {
            self.advance(1, 60);
            self.logout().await?;
        } else {
            self.kept = true;
        }
        Ok(())
    }

    /// A session lookup by token; `None` when there is none.
    async fn lookup(&mut self, token: &str) -> Result<Option<Session>> {
        let started = Instant::now();
        let out = match self.db.sessions().find_by_token(token).await {
            Ok(s) => Some(s),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        self.record(OpKind::SessionLookup, started, 1);
        Ok(out)
    }

    /// An authenticated request with the current session: it must be found
    /// as issued. A session that expired during the visit (the simulated
    /// clock passed `expires_at`) is refused, and the client logs in again.
    async fn request(&mut self) -> Result<()> {
        let Some(h) = self.held.last() else {
            self.check(false, "request without a session");
            return Ok(());
        };
        let (token, expires_at) = (h.token.clone(), h.expires_at);
        let s = self.lookup(&token).await?;
        let ok = s.is_some_and(|s| s.user_id == self.user && s.expires_at == expires_at);
        self.check(ok, "current session not found as issued");
        if expires_at <= self.now {
            self.login().await?;
        }
        Ok(())
    }

    async fn failed_login(&mut self) -> Result<()> {
        let typed = self.new_hash();
        let started = Instant::now();
        let account = self.db.accounts().find_by_username(&self.name).await?;
        self.record(OpKind::LoginFailed, started, 1);
        self.check(
            account.user_id == self.user && account.pass_hash != typed.as_bytes(),
            "wrong password accepted",
        );
        self.advance(2, 20);
        Ok(())
    }

    async fn login(&mut self) -> Result<()> {
        let how = self.below(4);
        let started = Instant::now();
        let accounts = self.db.accounts();
        let account = match how {
            0 => accounts.find_by_email(&self.email).await?,
            1 => accounts.find_by_email(&self.email.to_uppercase()).await?,
            2 => accounts.find_by_username(&self.name).await?,
            _ => accounts.find_by_username(&self.name.to_uppercase()).await?,
        };
        let ok = account.user_id == self.user && account.pass_hash == self.hash.as_bytes();
        self.check(ok, "login found another account or a stale hash");
        accounts.update_last_login(self.user, self.now).await?;
        self.issue_session().await?;
        self.record(OpKind::Login, started, 3);
        Ok(())
    }

    async fn loadout_screen(&mut self) -> Result<()> {
        let mut army = [0i32; 4];
        for slot in &mut army {
            *slot = self.below_i32(9); // 0 = empty, abilities 1..=8
        }
        let mut pieces = [0i32; 6];
        for slot in &mut pieces {
            *slot = self.below_i32(9);
        }
        let mut items = [0i32; 4];
        for slot in &mut items {
            *slot = self.below_i32(8); // 0 = empty, items 1..=7
        }
        let loadout = Loadout {
            user_id: self.user,
            element_id: self.below_i32(5),
            army_abilities: army,
            piece_abilities: PieceAbilities::from_array(pieces),
            items,
            updated_at: self.now,
        };
        let started = Instant::now();
        let current = self.db.loadouts().get(self.user).await?;
        self.db.loadouts().save(&loadout).await?;
        self.record(OpKind::LoadoutSave, started, 2);
        self.check(
            Some(current) == self.loadout,
            "loadout read back differs from the last save",
        );
        self.loadout = Some(loadout);
        Ok(())
    }

    async fn battle(&mut self) -> Result<()> {
        let delta = 10 + i64::try_from(self.below(191)).unwrap_or(0);
        let mut grant = Vec::new();
        for _ in 0..1 + self.below(3) {
            grant.push(1 + self.below_i32(24));
        }
        let expected_xp = self.xp + delta;
        let level = (1 + expected_xp / 1_000).min(i64::from(i32::MAX));
        let new_level = i32::try_from(level).unwrap_or(i32::MAX).max(self.level);
        let mut expected_new: Vec<i32> = grant
            .iter()
            .copied()
            .filter(|f| !self.flags.contains(f))
            .collect();
        expected_new.sort_unstable();
        expected_new.dedup();

        let started = Instant::now();
        let mut calls = 2;
        let tx = self.db.begin().await?;
        let after = tx.progression().add_xp(self.user, delta).await?;
        if new_level > self.level {
            calls += 1;
            tx.progression()
                .set(&Progression {
                    user_id: self.user,
                    level: new_level,
                    xp: after.xp,
                })
                .await?;
        }
        let granted = tx.unlocks().grant_many(self.user, &grant, self.now).await?;
        tx.commit().await?;
        self.record(OpKind::Battle, started, calls);

        self.check(after.xp == expected_xp, "xp after add_xp differs");
        self.check(granted == expected_new, "newly granted flags differ");
        self.xp = expected_xp;
        self.level = new_level;
        self.flags.extend(grant);
        Ok(())
    }

    async fn logout(&mut self) -> Result<()> {
        let Some(h) = self.held.pop() else {
            return Ok(());
        };
        let started = Instant::now();
        self.db.sessions().delete(&h.token).await?;
        self.record(OpKind::Logout, started, 1);
        let gone = self.lookup(&h.token).await?.is_none();
        self.check(gone, "session still found after logout");
        Ok(())
    }

    async fn change_password(&mut self) -> Result<()> {
        let hash = self.new_hash();
        let started = Instant::now();
        let tx = self.db.begin().await?;
        tx.accounts()
            .update_pass_hash(self.user, hash.as_bytes())
            .await?;
        let revoked = tx.sessions().delete_all_for_user(self.user).await?;
        tx.commit().await?;
        self.record(OpKind::PasswordChange, started, 2);
        let expected = u64::try_from(self.held.len()).unwrap_or(u64::MAX);
        self.check(revoked == expected, "password change revoked another count");
        self.held.clear();
        self.hash = hash;
        Ok(())
    }

    async fn delete_account(&mut self) -> Result<()> {
        let started = Instant::now();
        self.db.accounts().delete(self.user).await?;
        let gone = match self.db.progression().get(self.user).await {
            Ok(_) => false,
            Err(e) if e.is_not_found() => true,
            Err(e) => return Err(e),
        };
        self.record(OpKind::AccountDelete, started, 2);
        self.check(gone, "progression left after account deletion");
        self.held.clear();
        Ok(())
    }
}

/// Base64url without padding (RFC 4648 §5), as the auth layer encodes tokens.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[sextet as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(b"fooba"), "Zm9vYmE");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(&[0u8; 32]).len(), 43);
    }

    #[test]
    fn names_are_distinct_and_within_caps() {
        let longest = player_username(u64::MAX, MAX_PLAYERS - 1);
        assert_eq!(longest, "demo-ffffffffffffffff-999999");
        assert!(longest.chars().count() <= 32);
        assert_eq!(player_username(42, 7), "demo-2a-0007");
        assert_eq!(player_email(42, 7), "demo-2a-0007@demo.invalid");
        assert_ne!(player_username(1, 10), player_username(0x11, 0));
    }

    #[test]
    fn options_are_validated() {
        let ok = DemoOptions::default();
        assert!(ok.validate().is_ok());
        for bad in [
            DemoOptions { players: 0, ..ok },
            DemoOptions {
                players: MAX_PLAYERS + 1,
                ..ok
            },
            DemoOptions { tasks: 0, ..ok },
            DemoOptions {
                tasks: MAX_TASKS + 1,
                ..ok
            },
        ] {
            assert!(matches!(
                bad.validate(),
                Err(Error::InvalidInput {
                    violation: Violation::OutOfRange { .. },
                    ..
                })
            ));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_run_passes_every_check() {
        let db = crate::open(&crate::Config::from_url("sqlite::memory:").unwrap())
            .await
            .unwrap();
        let mut seen = Vec::new();
        let report = run(
            &db,
            &DemoOptions {
                players: 500,
                seed: 3,
                tasks: 3,
            },
            |p| seen.push(p.players_done),
        )
        .await
        .unwrap();
        assert_eq!(seen, (1..=500).collect::<Vec<_>>());
        assert_eq!(report.failed_checks, 0, "{:?}", report.first_failure);
        assert!(report.checks > 0);
        assert_eq!(report.stats(OpKind::Register).unwrap().count, 500);
        for kind in OpKind::ALL {
            assert!(report.stats(kind).unwrap().count > 0, "{kind}");
        }
        assert_eq!(report.size, DatabaseSize::InMemory);
        assert_eq!(report.earlier_players_removed, 0);
        db.close().await;
    }
}
