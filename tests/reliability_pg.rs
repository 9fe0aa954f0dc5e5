mod common;

// Reliability promises 4 and 5 of issue 5, on PostgreSQL.
//
// 4. The pool heals: under load through ONE `Db` handle (opened once), every
//    backend is terminated, then the server is restarted (`pg_ctl restart -m
//    fast`, then `-m immediate`), then stopped for a while and started again.
//    Every failed call fails with a typed `Unavailable` (or `Timeout` for an
//    acquire wait) and within its configured timeouts; calls succeed again
//    without reopening the handle; every acknowledged write is still there and
//    the xp totals equal the acknowledged deltas (the one write in flight per
//    failed call is resolved exactly, see `User::check`). Runs on a private
//    throwaway cluster (tests/common/cluster.rs): the shared test server is
//    never killed or restarted.
// 5. Bounded waits: a write on a row locked by another connection fails with
//    `Error::Timeout` within the statement timeout; a unit of work dropped
//    mid-way leaves no `idle in transaction` connection behind and its writes
//    are not visible. Runs on a database of the shared test server (nothing is
//    killed).
//
// `PERSIST_RELIABILITY_LONG=1` runs the long setting (more faults and rounds).
// Each test prints one `reliability ...` figures line on stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use persist::{Config, Db, Entity, Error, NewAccount, Progression, UserId};

const HASH: &[u8] = b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
const T0: i64 = 1_700_000_000;

fn long_run() -> bool {
    std::env::var("PERSIST_RELIABILITY_LONG").is_ok_and(|v| v == "1")
}

/// Runs a blocking cluster operation (pg_ctl) off the runtime's workers.
async fn blocking<F: FnOnce() + Send + 'static>(f: F) {
    tokio::task::spawn_blocking(f)
        .await
        .expect("cluster operation panicked");
}

// ---------------------------------------------------------------------------
// Call accounting: latency and error variant of every API call.

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    ok: AtomicU64,
    max_latency_us: AtomicU64,
    /// Error kinds seen (`Error::kind`), with counts.
    errors: Mutex<BTreeMap<&'static str, u64>>,
    violations: Mutex<Vec<String>>,
}

impl Stats {
    fn violation(&self, msg: String) {
        let mut v = self.violations.lock().unwrap();
        if v.len() < 1000 {
            v.push(msg);
        }
    }
}

/// The only error variants a call may fail with while the server is being
/// killed or restarted.
fn is_fault_variant(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Timeout { .. })
}

/// Awaits one API call, recording its latency and outcome. A failure with
/// any variant but `Unavailable`/`Timeout`, or a call slower than `bound`, is
/// a violation.
async fn timed<T>(
    stats: &Stats,
    bound: Duration,
    what: &str,
    fut: impl std::future::Future<Output = persist::Result<T>>,
) -> persist::Result<T> {
    let start = Instant::now();
    let out = fut.await;
    let took = start.elapsed();
    stats.calls.fetch_add(1, Ordering::Relaxed);
    stats
        .max_latency_us
        .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    if took > bound {
        stats.violation(format!(
            "{what} took {} ms, over the bound of {} ms",
            took.as_millis(),
            bound.as_millis()
        ));
    }
    match &out {
        Ok(_) => {
            stats.ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            *stats.errors.lock().unwrap().entry(e.kind()).or_default() += 1;
            if !is_fault_variant(e) {
                stats.violation(format!("{what} failed with an untyped variant: {e:?}"));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Promise 4: the workload and its acknowledged log.

/// A write whose outcome is unknown (its call failed): it committed or not.
#[derive(Debug, Clone)]
enum Pending {
    /// Account + progression + first session, in one unit of work.
    Register { token: String },
    /// A plain `add_xp`.
    AddXp(i64),
    /// A plain `sessions.create`.
    Session(String),
    /// `add_xp(delta)` + `grant(flag)` in one unit of work.
    Battle { delta: i64, flag: i32 },
}

/// A user as the acknowledged log knows it. A user is used by one task only
/// and abandoned at its first failed write, so it has at most one write of
/// unknown outcome, and that write is its last.
#[derive(Debug)]
struct User {
    name: String,
    uid: Option<UserId>,
    xp: i64,
    tokens: Vec<String>,
    flags: BTreeSet<i32>,
    pending: Option<Pending>,
}

#[derive(Default)]
struct Resolved {
    committed: u64,
    not_committed: u64,
}

impl User {
    fn new(name: String) -> Self {
        User {
            name,
            uid: None,
            xp: 0,
            tokens: Vec::new(),
            flags: BTreeSet::new(),
            pending: None,
        }
    }

    /// Compares the database with the log: every acknowledged write is
    /// present, and the unknown write (if any) either fully committed or not
    /// at all. Reads go through the same `Db` handle as the workload.
    async fn check(&self, db: &Db, out: &mut Vec<String>, resolved: &mut Resolved) {
        let who = &self.name;
        let account = db.accounts().find_by_username(&self.name).await;
        let (uid, xp_base, mut tokens) = match (&self.uid, &self.pending, account) {
            (Some(uid), _, Ok(a)) if a.user_id == *uid => (*uid, self.xp, self.tokens.clone()),
            (Some(_), _, other) => {
                out.push(format!(
                    "{who}: acknowledged account lost or changed: {other:?}"
                ));
                return;
            }
            (None, Some(Pending::Register { .. }), Err(Error::NotFound(Entity::Account))) => {
                resolved.not_committed += 1;
                return;
            }
            (None, Some(Pending::Register { token }), Ok(a)) => {
                resolved.committed += 1;
                (a.user_id, 0, vec![token.clone()])
            }
            (None, p, other) => {
                out.push(format!(
                    "{who}: unregistered user in state {p:?}: {other:?}"
                ));
                return;
            }
        };
        let xp = match db.progression().get(uid).await {
            Ok(p) => p.xp,
            Err(e) => {
                out.push(format!("{who}: progression unreadable: {e:?}"));
                return;
            }
        };
        let flags: BTreeSet<i32> = match db.unlocks().list(uid).await {
            Ok(l) => l.iter().map(|u| u.flag_id).collect(),
            Err(e) => {
                out.push(format!("{who}: unlocks unreadable: {e:?}"));
                return;
            }
        };
        let mut want_xp = xp_base;
        let mut want_flags = if self.uid.is_some() {
            self.flags.clone()
        } else {
            BTreeSet::new()
        };
        match &self.pending {
            Some(Pending::AddXp(d)) => {
                if xp == xp_base + d {
                    want_xp += d;
                    resolved.committed += 1;
                } else {
                    resolved.not_committed += 1;
                }
            }
            Some(Pending::Battle { delta, flag }) => {
                // The tag flag commits with the xp or not at all.
                if flags.contains(flag) {
                    want_flags.insert(*flag);
                    want_xp += delta;
                    resolved.committed += 1;
                } else {
                    resolved.not_committed += 1;
                }
            }
            Some(Pending::Session(t)) => match db.sessions().find_by_token(t).await {
                Ok(s) if s.user_id == uid => {
                    tokens.push(t.clone());
                    resolved.committed += 1;
                }
                Ok(s) => out.push(format!("{who}: in-flight session owned by {:?}", s.user_id)),
                Err(Error::NotFound(_)) => resolved.not_committed += 1,
                Err(e) => out.push(format!("{who}: in-flight session unreadable: {e:?}")),
            },
            Some(Pending::Register { .. }) | None => {}
        }
        if xp != want_xp {
            out.push(format!(
                "{who}: xp {xp}, acknowledged deltas (and resolved in-flight one) give {want_xp}"
            ));
        }
        if flags != want_flags {
            out.push(format!(
                "{who}: flags {flags:?}, acknowledged {want_flags:?}"
            ));
        }
        for t in &tokens {
            match db.sessions().find_by_token(t).await {
                Ok(s) if s.user_id == uid => {}
                other => out.push(format!("{who}: acknowledged session lost: {other:?}")),
            }
        }
    }
}

struct Load {
    db: Db,
    stats: Arc<Stats>,
    bound: Duration,
    stop: Arc<AtomicBool>,
}

impl Load {
    async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = persist::Result<T>>,
    ) -> persist::Result<T> {
        timed(&self.stats, self.bound, what, fut).await
    }

    /// Registers a user in one unit of work: account, progression, session.
    async fn register(&self, name: &str, token: &str) -> persist::Result<UserId> {
        let db = &self.db;
        let tx = self.call("begin", db.begin()).await?;
        let email = format!("{name}@p4.invalid");
        let a = self
            .call(
                "tx.accounts.create",
                tx.accounts().create(&NewAccount {
                    email: &email,
                    username: name,
                    pass_hash: HASH,
                    created_at: T0,
                }),
            )
            .await?;
        self.call(
            "tx.progression.set",
            tx.progression().set(&Progression {
                user_id: a.user_id,
                level: 1,
                xp: 0,
            }),
        )
        .await?;
        self.call(
            "tx.sessions.create",
            tx.sessions().create(token, a.user_id, T0, T0 + 86_400),
        )
        .await?;
        self.call("commit", tx.commit()).await?;
        Ok(a.user_id)
    }

    async fn battle(&self, uid: UserId, delta: i64, flag: i32) -> persist::Result<i64> {
        let tx = self.call("begin", self.db.begin()).await?;
        let p = self
            .call("tx.progression.add_xp", tx.progression().add_xp(uid, delta))
            .await?;
        self.call("tx.unlocks.grant", tx.unlocks().grant(uid, flag, T0))
            .await?;
        self.call("commit", tx.commit()).await?;
        Ok(p.xp)
    }

    /// One task: session lookups, plain writes (`add_xp`, `sessions.create`)
    /// and units of work (register, battle) on its own users, until stopped.
    async fn run(self, task: usize) -> Vec<User> {
        let mut users: Vec<User> = Vec::new();
        let mut current: Option<usize> = None;
        let mut seq: u64 = 0;
        let stats = self.stats.clone();
        while !self.stop.load(Ordering::Relaxed) {
            seq += 1;
            let Some(i) = current else {
                let name = format!("p4-t{task}-{}", users.len());
                let token = format!("bearer-token-{name}-0-{seq}");
                let mut u = User::new(name);
                match self.register(&u.name, &token).await {
                    Ok(uid) => {
                        u.uid = Some(uid);
                        u.tokens.push(token);
                        current = Some(users.len());
                    }
                    Err(_) => {
                        u.pending = Some(Pending::Register { token });
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                users.push(u);
                continue;
            };
            let u = &mut users[i];
            let uid = u.uid.expect("current user is registered");
            let delta = (seq % 9 + 1) as i64;
            let failed = match seq % 4 {
                0 => {
                    let t = &u.tokens[(seq as usize / 4) % u.tokens.len()];
                    match self
                        .call(
                            "sessions.find_by_token",
                            self.db.sessions().find_by_token(t),
                        )
                        .await
                    {
                        Ok(s) if s.user_id != uid => {
                            stats.violation(format!("{}: session of another user", u.name));
                            false
                        }
                        // A failed read changes nothing: keep the user.
                        _ => false,
                    }
                }
                1 => match self
                    .call(
                        "progression.add_xp",
                        self.db.progression().add_xp(uid, delta),
                    )
                    .await
                {
                    Ok(p) => {
                        if p.xp != u.xp + delta {
                            stats.violation(format!(
                                "{}: add_xp returned {}, expected {}",
                                u.name,
                                p.xp,
                                u.xp + delta
                            ));
                        }
                        u.xp += delta;
                        false
                    }
                    Err(_) => {
                        u.pending = Some(Pending::AddXp(delta));
                        true
                    }
                },
                2 => {
                    let token = format!("bearer-token-{}-{seq}", u.name);
                    match self
                        .call(
                            "sessions.create",
                            self.db.sessions().create(&token, uid, T0, T0 + 86_400),
                        )
                        .await
                    {
                        Ok(_) => {
                            u.tokens.push(token);
                            false
                        }
                        Err(_) => {
                            u.pending = Some(Pending::Session(token));
                            true
                        }
                    }
                }
                _ => {
                    let flag = i32::try_from(task as u64 * 10_000_000 + seq).unwrap();
                    match self.battle(uid, delta, flag).await {
                        Ok(xp) => {
                            if xp != u.xp + delta {
                                stats.violation(format!(
                                    "{}: battle add_xp returned {xp}, expected {}",
                                    u.name,
                                    u.xp + delta
                                ));
                            }
                            u.xp += delta;
                            u.flags.insert(flag);
                            false
                        }
                        Err(_) => {
                            u.pending = Some(Pending::Battle { delta, flag });
                            true
                        }
                    }
                }
            };
            if failed {
                // Outcome unknown: this user is never touched again.
                current = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        users
    }
}

/// Polls `accounts.get` through the same handle until it succeeds; returns
/// how long that took, or `None` after `limit`.
async fn wait_recovered(
    db: &Db,
    stats: &Stats,
    bound: Duration,
    probe: UserId,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if timed(stats, bound, "probe accounts.get", db.accounts().get(probe))
            .await
            .is_ok()
        {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// After recovery the whole pool must be healthy: a burst of concurrent calls
/// (more than the pool size) meets no dead connection. Returns the number
/// that failed with `Unavailable` (an acquire `Timeout` under load is not a
/// dead connection; other variants are violations of `timed` already).
async fn burst(db: &Db, stats: &Arc<Stats>, bound: Duration, probe: UserId, n: usize) -> usize {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let db = db.clone();
        let stats = stats.clone();
        set.spawn(async move {
            matches!(
                timed(
                    &stats,
                    bound,
                    "burst accounts.get",
                    db.accounts().get(probe)
                )
                .await,
                Err(Error::Unavailable { .. })
            )
        });
    }
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        if r.unwrap_or(true) {
            failed += 1;
        }
    }
    failed
}

/// Terminates every other backend of the database `admin` is connected to;
/// returns how many were terminated.
async fn terminate_backends(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
            &[],
        )
        .await
        .expect("pg_terminate_backend")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_heals_after_backend_kills_and_restarts() {
    let long = long_run();
    let cycles = if long { 8 } else { 1 };
    let kills_per_cycle = 3;
    let tasks = 6;
    let pool_size = 4;
    let connect = Duration::from_secs(1);
    let acquire = Duration::from_secs(1);
    let statement = Duration::from_secs(5);
    // The longest any one call may take: waiting for a pool slot, creating a
    // connection (the pool allows connect + 0.5 s), one statement; plus a
    // generous slack for a loaded 2-core machine.
    let configured = acquire + connect + Duration::from_millis(500) + statement;
    let bound = configured + Duration::from_secs(3);
    let recovery_limit = Duration::from_secs(30);

    let cluster = Arc::new(Cluster::start());
    let url = cluster.create_database("p4").await;
    let config = Config::from_url(&url)
        .unwrap()
        .with_pool_size(pool_size)
        .with_connect_timeout(connect)
        .with_acquire_timeout(acquire)
        .with_statement_timeout(Some(statement));
    // The one handle of the whole test: never reopened.
    let db = persist::open(&config).await.expect("open");
    db.migrate().await.expect("migrate");
    let probe = db
        .accounts()
        .create(&NewAccount {
            email: "probe@p4.invalid",
            username: "probe",
            pass_hash: HASH,
            created_at: T0,
        })
        .await
        .unwrap()
        .user_id;

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let load = Load {
            db: db.clone(),
            stats: stats.clone(),
            bound,
            stop: stop.clone(),
        };
        handles.push(tokio::spawn(load.run(task)));
    }

    let mut kills = 0u64;
    let mut killed_backends = 0i64;
    let mut restarts_fast = 0u64;
    let mut restarts_immediate = 0u64;
    let mut down_windows = 0u64;
    let mut down_calls = 0u64;
    let mut max_recovery = Duration::ZERO;
    let mut burst_failures = 0usize;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..cycles {
        let mut after_fault = |what: String, took: Option<Duration>| match took {
            Some(d) => max_recovery = max_recovery.max(d),
            None => stats.violation(format!(
                "no successful call within {} s after {what}",
                recovery_limit.as_secs()
            )),
        };
        // (a) kill every backend of the database, a few times.
        for _ in 0..kills_per_cycle {
            let admin = cluster.connect("p4").await;
            killed_backends += terminate_backends(&admin).await;
            kills += 1;
            let took = wait_recovered(&db, &stats, bound, probe, recovery_limit).await;
            after_fault("pg_terminate_backend".into(), took);
            tokio::time::sleep(Duration::from_millis(200)).await;
            burst_failures += burst(&db, &stats, bound, probe, 2 * pool_size).await;
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        // (b) restart the server, fast then immediate.
        for mode in ["fast", "immediate"] {
            let c = cluster.clone();
            blocking(move || c.restart(mode)).await;
            match mode {
                "fast" => restarts_fast += 1,
                _ => restarts_immediate += 1,
            }
            let took = wait_recovered(&db, &stats, bound, probe, recovery_limit).await;
            after_fault(format!("pg_ctl restart -m {mode}"), took);
            tokio::time::sleep(Duration::from_millis(200)).await;
            burst_failures += burst(&db, &stats, bound, probe, 2 * pool_size).await;
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        // (c) a real outage: the server stays down for a while. Every call
        // made meanwhile must fail, typed, and fast.
        let c = cluster.clone();
        blocking(move || c.stop_with("immediate")).await;
        down_windows += 1;
        let down_start = Instant::now();
        while down_start.elapsed() < Duration::from_millis(1500) {
            let t = Instant::now();
            let r = db.accounts().get(probe).await;
            let took = t.elapsed();
            down_calls += 1;
            match r {
                Err(Error::Unavailable { .. }) => {}
                other => stats.violation(format!(
                    "call while the server is down: expected Unavailable, got {other:?}"
                )),
            }
            if took > connect + Duration::from_millis(500) + acquire {
                stats.violation(format!(
                    "call while the server is down took {} ms (connect + acquire bound {} ms)",
                    took.as_millis(),
                    (connect + acquire).as_millis() + 500
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let c = cluster.clone();
        blocking(move || c.start_again()).await;
        let took = wait_recovered(&db, &stats, bound, probe, recovery_limit).await;
        after_fault("a stop and start".into(), took);
        tokio::time::sleep(Duration::from_millis(200)).await;
        burst_failures += burst(&db, &stats, bound, probe, 2 * pool_size).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }

    stop.store(true, Ordering::Relaxed);
    let mut users = Vec::new();
    for h in handles {
        match h.await {
            Ok(u) => users.extend(u),
            Err(e) => stats.violation(format!("a load task panicked: {e}")),
        }
    }
    let seconds = started.elapsed().as_secs();
    if burst_failures > 0 {
        stats.violation(format!(
            "{burst_failures} calls failed in post-recovery bursts: the pool kept dead connections"
        ));
    }

    // Committed data intact, read through the same handle.
    let mut lost = Vec::new();
    let mut resolved = Resolved::default();
    let acked_xp: i64 = users.iter().map(|u| u.xp).sum();
    for u in &users {
        u.check(&db, &mut lost, &mut resolved).await;
    }
    for l in lost {
        stats.violation(l);
    }
    let acked_writes: usize = users
        .iter()
        .filter(|u| u.uid.is_some())
        .map(|u| 1 + u.tokens.len() + u.flags.len())
        .sum();

    let errors = stats.errors.lock().unwrap().clone();
    let violations = stats.violations.lock().unwrap().clone();
    let errors_text = errors
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",");
    eprintln!(
        "reliability pool-heals backend=postgres seconds={seconds} ops={} ok={} \
         faults={} (backend kills={kills} backends_killed={killed_backends}, \
         restarts fast={restarts_fast} immediate={restarts_immediate}, \
         down windows={down_windows} calls_while_down={down_calls}) errors={errors_text} \
         max_latency_ms={} bound_ms={} max_recovery_ms={} users={} acked_writes={acked_writes} \
         acked_xp={acked_xp} in_flight_resolved={} (committed={}, not={}) violations={}",
        stats.calls.load(Ordering::Relaxed),
        stats.ok.load(Ordering::Relaxed),
        kills + restarts_fast + restarts_immediate + down_windows,
        stats.max_latency_us.load(Ordering::Relaxed) / 1000,
        bound.as_millis(),
        max_recovery.as_millis(),
        users.len(),
        resolved.committed + resolved.not_committed,
        resolved.committed,
        resolved.not_committed,
        violations.len()
    );
    db.close().await;
    for v in violations.iter().take(20) {
        eprintln!("violation: {v}");
    }
    assert!(violations.is_empty(), "{} violations", violations.len());
    // The faults were real: calls failed, and only with typed variants.
    assert!(
        errors.get("unavailable").copied().unwrap_or(0) > 0,
        "no call ever failed: the faults did not reach the pool"
    );
    assert!(
        errors
            .keys()
            .all(|k| *k == "unavailable" || *k == "timeout"),
        "{errors:?}"
    );
    assert!(killed_backends > 0, "pg_terminate_backend found no backend");
    assert!(acked_xp > 0 && users.iter().any(|u| !u.flags.is_empty()));
    drop(cluster);
}

// ---------------------------------------------------------------------------
// Promise 5: bounded waits.

/// A fresh migrated database on the shared test server, opened with a short
/// statement timeout and a small pool (so connections are reused at once).
async fn bounded_db(statement: Duration) -> (Db, common::PgDatabase) {
    let pg = common::PgDatabase::create().await;
    let config = Config::from_url(&pg.url)
        .unwrap()
        .with_pool_size(2)
        .with_statement_timeout(Some(statement));
    let db = persist::open(&config).await.expect("open");
    db.migrate().await.expect("migrate");
    (db, pg)
}

async fn admin_for(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("admin connection: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

async fn player(db: &Db, name: &str, xp: i64) -> UserId {
    let a = db
        .accounts()
        .create(&NewAccount {
            email: &format!("{name}@p5.invalid"),
            username: name,
            pass_hash: HASH,
            created_at: T0,
        })
        .await
        .unwrap();
    db.progression()
        .set(&Progression {
            user_id: a.user_id,
            level: 1,
            xp,
        })
        .await
        .unwrap();
    a.user_id
}

/// Outcomes of writes on a locked row.
struct Waits {
    statement: Duration,
    slack: Duration,
    timeouts: u64,
    max: Duration,
    min: Duration,
    violations: Vec<String>,
}

impl Waits {
    fn new(statement: Duration, slack: Duration) -> Self {
        Waits {
            statement,
            slack,
            timeouts: 0,
            max: Duration::ZERO,
            min: Duration::MAX,
            violations: Vec::new(),
        }
    }

    /// The write must fail with `Error::Timeout`, after waiting for the
    /// statement timeout and not much longer.
    fn check(&mut self, what: &str, took: Duration, r: Result<(), Error>) {
        self.max = self.max.max(took);
        self.min = self.min.min(took);
        match r {
            Err(Error::Timeout { .. }) => self.timeouts += 1,
            other => self
                .violations
                .push(format!("{what}: expected Error::Timeout, got {other:?}")),
        }
        if took > self.statement + self.slack {
            self.violations.push(format!(
                "{what} waited {} ms, bound {} ms + slack",
                took.as_millis(),
                self.statement.as_millis()
            ));
        }
        // It must really have waited for the lock (not failed at once).
        if took + Duration::from_millis(50) < self.statement {
            self.violations.push(format!(
                "{what} returned after {} ms, before the {} ms statement timeout",
                took.as_millis(),
                self.statement.as_millis()
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_on_a_locked_row_times_out_within_the_bound() {
    let rounds = if long_run() { 20 } else { 3 };
    let statement = Duration::from_millis(500);
    let slack = Duration::from_secs(3);
    let (db, pg) = bounded_db(statement).await;
    let uid = player(&db, "locked", 100).await;
    let locker = admin_for(&pg.url).await;

    let mut w = Waits::new(statement, slack);
    for _ in 0..rounds {
        locker.batch_execute("BEGIN").await.unwrap();
        locker
            .query_one(
                "SELECT xp FROM progression WHERE user_id = $1 FOR UPDATE",
                &[&uid.0],
            )
            .await
            .unwrap();

        let t = Instant::now();
        let r = db.progression().add_xp(uid, 5).await.map(|_| ());
        w.check("add_xp", t.elapsed(), r);

        let t = Instant::now();
        let r = db
            .progression()
            .set(&Progression {
                user_id: uid,
                level: 9,
                xp: 9,
            })
            .await;
        w.check("progression.set", t.elapsed(), r);

        // Inside a unit of work: the timeout aborts it; nothing commits.
        let tx = db.begin().await.unwrap();
        let t = Instant::now();
        let r = tx.progression().add_xp(uid, 7).await.map(|_| ());
        w.check("tx add_xp", t.elapsed(), r);
        match tx.commit().await {
            Err(Error::Aborted) => {}
            other => w
                .violations
                .push(format!("commit after a timeout: {other:?}")),
        }

        locker.batch_execute("ROLLBACK").await.unwrap();
        // The lock is gone: the same handle writes again, and only this
        // write counts.
        let before = db.progression().get(uid).await.unwrap().xp;
        let p = db.progression().add_xp(uid, 1).await.unwrap();
        if p.xp != before + 1 {
            w.violations
                .push(format!("xp {} after +1 on {before}", p.xp));
        }
    }
    let xp = db.progression().get(uid).await.unwrap().xp;
    if xp != 100 + rounds {
        w.violations.push(format!(
            "xp {xp}: timed-out writes changed it (expected {})",
            100 + rounds
        ));
    }
    eprintln!(
        "reliability lock-wait backend=postgres rounds={rounds} timeouts={} \
         min_wait_ms={} max_wait_ms={} statement_timeout_ms={} bound_ms={} violations={}",
        w.timeouts,
        w.min.as_millis(),
        w.max.as_millis(),
        statement.as_millis(),
        (statement + slack).as_millis(),
        w.violations.len()
    );
    for v in &w.violations {
        eprintln!("violation: {v}");
    }
    db.close().await;
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
    assert_eq!(w.timeouts, 3 * rounds as u64);
}

/// Connections of this database, other than the admin ones, left idle inside
/// a transaction.
async fn idle_in_transaction(admin: &tokio_postgres::Client, exclude: i32) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND pid <> $1 AND state LIKE 'idle in transaction%'",
            &[&exclude],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls until no connection is idle in a transaction; returns how long it
/// took, or `None` after `limit`.
async fn wait_no_idle_tx(
    admin: &tokio_postgres::Client,
    exclude: i32,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if idle_in_transaction(admin, exclude).await == 0 {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_unit_of_work_leaves_no_idle_transaction() {
    let rounds: i64 = if long_run() { 300 } else { 30 };
    let limit = Duration::from_secs(5);
    let statement = Duration::from_millis(500);
    let (db, pg) = bounded_db(statement).await;
    let uid = player(&db, "dropper", 0).await;
    let admin = admin_for(&pg.url).await;
    let locker = admin_for(&pg.url).await;
    let locker_pid: i32 = locker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    let mut violations: Vec<String> = Vec::new();
    let mut committed = 0i64;
    let mut dropped = 0u64;
    let mut cancelled = 0u64;
    let mut max_clear = Duration::ZERO;
    for round in 0..rounds {
        let flag = 900_000 + i32::try_from(round).unwrap();
        let tx = db.begin().await.unwrap();
        if round % 10 == 9 {
            // Dropped while a call is in flight: the call waits on a row
            // lock; its future is cancelled, then the unit of work dropped.
            locker.batch_execute("BEGIN").await.unwrap();
            locker
                .query_one(
                    "SELECT 1 FROM progression WHERE user_id = $1 FOR UPDATE",
                    &[&uid.0],
                )
                .await
                .unwrap();
            tx.unlocks().grant(uid, flag, T0).await.unwrap();
            let r = tokio::time::timeout(
                Duration::from_millis(100),
                tx.progression().add_xp(uid, 1000),
            )
            .await;
            if r.is_ok() {
                violations.push("add_xp on a locked row returned within 100 ms".into());
            }
            drop(tx);
            locker.batch_execute("ROLLBACK").await.unwrap();
            cancelled += 1;
        } else {
            // Dropped between calls, after writes.
            tx.progression().add_xp(uid, 1000).await.unwrap();
            tx.unlocks().grant(uid, flag, T0).await.unwrap();
            drop(tx);
            dropped += 1;
        }
        // The pool (2 connections) hands the connection out again at once:
        // it must not be inside the dropped transaction.
        let p = db.progression().add_xp(uid, 1).await.unwrap();
        committed += 1;
        if p.xp != committed {
            violations.push(format!(
                "round {round}: xp {} after the drop, expected {committed}",
                p.xp
            ));
        }
        match wait_no_idle_tx(&admin, locker_pid, limit).await {
            Some(d) => max_clear = max_clear.max(d),
            None => violations.push(format!(
                "round {round}: a connection is still idle in transaction after {} s",
                limit.as_secs()
            )),
        }
        let seen: i64 = admin
            .query_one(
                "SELECT count(*) FROM user_unlocks WHERE user_id = $1 AND flag_id = $2",
                &[&uid.0, &flag],
            )
            .await
            .unwrap()
            .get(0);
        if seen != 0 {
            violations.push(format!("round {round}: the dropped grant is visible"));
        }
    }
    // Every plain write is visible to another connection (none is stuck in
    // a leaked transaction), and no dropped write is.
    let xp: i64 = admin
        .query_one("SELECT xp FROM progression WHERE user_id = $1", &[&uid.0])
        .await
        .unwrap()
        .get(0);
    if xp != committed {
        violations.push(format!("final xp {xp}, expected {committed}"));
    }
    let flags: i64 = admin
        .query_one(
            "SELECT count(*) FROM user_unlocks WHERE user_id = $1",
            &[&uid.0],
        )
        .await
        .unwrap()
        .get(0);
    if flags != 0 {
        violations.push(format!("{flags} dropped grants are visible"));
    }
    let left = idle_in_transaction(&admin, locker_pid).await;
    eprintln!(
        "reliability dropped-unit backend=postgres rounds={rounds} dropped_between_calls={dropped} \
         dropped_mid_call={cancelled} idle_in_transaction_left={left} max_clear_ms={} \
         violations={}",
        max_clear.as_millis(),
        violations.len()
    );
    for v in &violations {
        eprintln!("violation: {v}");
    }
    db.close().await;
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(left, 0);
}

/// A frozen server (SIGSTOP on the backend: the kernel still acknowledges, so
/// neither TCP keepalives nor the server's statement timeout can end the call)
/// fails the call with `Error::Timeout` at the client-side deadline
/// (statement timeout + 2 s), and the frozen connection is discarded, so the
/// next call on the same handle gets a fresh connection. With a pool of one
/// the read runs on a connection of its own; with a pool of two, on a shared
/// read connection (D-041), which must be discarded the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_fails_calls_at_the_client_deadline() {
    frozen_server(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_fails_shared_reads_at_the_client_deadline() {
    frozen_server(2).await;
}

async fn frozen_server(pool_size: usize) {
    let cluster = Cluster::start();
    let url = cluster.create_database("frozen").await;
    let statement = Duration::from_millis(500);
    let db = persist::open(
        &Config::from_url(&url)
            .unwrap()
            .with_pool_size(pool_size)
            .with_statement_timeout(Some(statement)),
    )
    .await
    .unwrap();
    db.migrate().await.unwrap();
    // Make the pool hold one connection, then find its backend.
    assert!(matches!(
        db.accounts().get(UserId(1)).await,
        Err(Error::NotFound(Entity::Account))
    ));
    let admin = cluster.connect("postgres").await;
    // The no-transaction migration's own connections (outside the pool,
    // D-128) are closed when it ends, but their backends exit a moment
    // later: wait for them to go.
    let mut pids: Vec<i32> = Vec::new();
    for _ in 0..100 {
        pids = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = 'frozen' \
                 AND application_name = 'persist'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if pids.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pids.len(), 1, "one pooled connection expected: {pids:?}");
    let pid = pids[0].to_string();
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let bound = statement + Duration::from_secs(2) + Duration::from_secs(5);
    let start = Instant::now();
    let frozen = tokio::time::timeout(Duration::from_secs(60), db.accounts().get(UserId(1)))
        .await
        .expect("the call never returned: no client-side deadline");
    let waited = start.elapsed();
    let fresh = tokio::time::timeout(Duration::from_secs(60), db.accounts().get(UserId(1)))
        .await
        .expect("the next call never returned: the frozen connection was reused");
    signal("-CONT");
    assert!(
        matches!(frozen, Err(Error::Timeout { .. })),
        "frozen call: {frozen:?}"
    );
    assert!(
        waited >= statement,
        "gave up before the deadline: {waited:?}"
    );
    assert!(waited < bound, "waited {waited:?}, bound {bound:?}");
    assert!(
        matches!(fresh, Err(Error::NotFound(Entity::Account))),
        "next call: {fresh:?}"
    );
    eprintln!(
        "reliability frozen-server backend=postgres pool_size={pool_size} waited_ms={} bound_ms={} violations=0",
        waited.as_millis(),
        bound.as_millis()
    );
    db.close().await;
}
