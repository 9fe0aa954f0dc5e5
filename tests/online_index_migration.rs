//! Issue 15's proof of the online migration (0005, PostgreSQL): on a
//! database at 0004 holding 1M sessions of 10k users, persist's session
//! lookup loop and session write loop (a few tasks each, as in the
//! benchmark) run continuously while `Db::migrate` applies 0005
//! (`CREATE INDEX CONCURRENTLY`, then `DROP INDEX CONCURRENTLY`). Every
//! call's latency is measured in a window before, during and after the
//! apply. Asserted: 0005 applied, the old index gone and the new one valid,
//! calls completed in every quarter of the apply, no call errored, and no
//! call overlapping the apply took longer than the migrator's statement
//! lock timeout (README, "Migrating a live database": other sessions are
//! held up at most one lock timeout). For contrast, a plain `CREATE INDEX`
//! (0004's form) of the same columns is then applied the same way: writes
//! queue behind its SHARE lock for the whole build.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bulk::{load_sessions, session_token};
use persist::{BackendKind, Config, Db, Migration, Migrations, UserId};

const USERS: u64 = 10_000;
const SESSIONS: u64 = 1_000_000;
const LOOKUP_TASKS: u64 = 3;
const WRITE_TASKS: u64 = 2;
/// Before and after the apply.
const WINDOW: Duration = Duration::from_secs(2);
/// The migrator's statement lock timeout: the bound on any call's blocking.
/// 500 ms, not the 200 ms of `migrate_lock_timeout`: this test shares 2
/// cores with the rest of the suite and a 1M-row index build, and calls
/// overlapping the apply were seen at 101 ms without any lock wait; a plain
/// build still blocks writes for 0.9-1.6 s (asserted below), so the bound
/// still tells blocking from noise.
const BOUND: Duration = Duration::from_millis(500);
const NAME: &str = "sessions_user_created_token";

/// One call of a loop: when it started and ended, and whether it wrote.
#[derive(Clone, Copy)]
struct Call {
    start: Instant,
    end: Instant,
    write: bool,
}

impl Call {
    fn latency(&self) -> Duration {
        self.end - self.start
    }

    fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.start < to && self.end > from
    }
}

/// Tells the write tokens of successive loop runs apart.
static RUN: AtomicU32 = AtomicU32::new(0);

struct Loops {
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Call>>>,
}

/// Starts the lookup tasks (existing sessions by token) and the write
/// tasks (create a session, then delete it), each pausing 2 ms between calls.
fn start_loops(db: &Db, first_user: i64) -> Loops {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    for task in 0..LOOKUP_TASKS + WRITE_TASKS {
        let (db, stop, errors) = (db.clone(), stop.clone(), errors.clone());
        let write = task >= LOOKUP_TASKS;
        tasks.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let start = Instant::now();
                let r = if write {
                    let token = format!("online-write-{run}-{task}-{:012}", n.div_ceil(2));
                    if n % 2 == 1 {
                        let user = UserId(first_user + ((n / 2 + task) % USERS) as i64);
                        db.sessions()
                            .create(&token, user, 1_000, 2_000)
                            .await
                            .map(drop)
                    } else {
                        db.sessions().delete(&token).await
                    }
                } else {
                    let i = 1 + (n * 7919 + task * 104_729) % SESSIONS;
                    db.sessions()
                        .find_by_token(&session_token(i))
                        .await
                        .map(drop)
                };
                let end = Instant::now();
                if let Err(e) = r {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("task {task} call {n}: {e}"));
                }
                calls.push(Call { start, end, write });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            calls
        }));
    }
    Loops {
        stop,
        errors,
        tasks,
    }
}

impl Loops {
    async fn finish(self) -> (Vec<Call>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut calls = Vec::new();
        for t in self.tasks {
            calls.extend(t.await.unwrap());
        }
        let errors = self.errors.lock().unwrap().clone();
        (calls, errors)
    }
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// `label kind=... calls= p50_ms= p99_ms= max_ms=` for the calls of `kind`.
fn summary<'a>(label: &str, calls: impl Iterator<Item = &'a Call>) -> Duration {
    let mut all: Vec<&Call> = calls.collect();
    all.sort_by_key(|c| c.write);
    for (kind, write) in [("lookup", false), ("write", true)] {
        let mut lat: Vec<Duration> = all
            .iter()
            .filter(|c| c.write == write)
            .map(|c| c.latency())
            .collect();
        lat.sort_unstable();
        eprintln!(
            "online-index {label} {kind}: calls={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            lat.len(),
            quantile(&lat, 0.5),
            quantile(&lat, 0.99),
            quantile(&lat, 1.0)
        );
    }
    all.iter().map(|c| c.latency()).max().unwrap_or_default()
}

/// The named index of `sessions`: `Some(valid)` when it exists.
async fn index_valid(c: &tokio_postgres::Client, name: &str) -> Option<bool> {
    c.query_opt(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = $1 AND i.indrelid = 'sessions'::regclass",
        &[&name],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_0005_applies_under_lookups_and_writes_without_blocking_them() {
    let pg = common::PgDatabase::create().await;
    let shipped = Migrations::embedded(BackendKind::Postgres).unwrap();
    let online = shipped.iter().find(|m| m.name() == NAME).unwrap().clone();
    assert!(!online.in_transaction(), "0005 is a no-transaction file");
    let before: Vec<Migration> = shipped
        .iter()
        .filter(|m| m.version() < online.version())
        .cloned()
        .collect();
    let config = Config::from_url(&pg.url)
        .unwrap()
        .with_migration_statement_lock_timeout(BOUND);
    let migrator = persist::open(&config).await.unwrap();
    migrator
        .migrate_with(&Migrations::new(BackendKind::Postgres, before).unwrap())
        .await
        .unwrap();
    let (c, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let first_user = load_sessions(&c, USERS, SESSIONS).await;
    assert_eq!(
        index_valid(&c, "sessions_user_created_idx").await,
        Some(true)
    );

    let db = persist::open(&Config::from_url(&pg.url).unwrap())
        .await
        .unwrap();
    let loops = start_loops(&db, first_user);
    tokio::time::sleep(WINDOW).await;
    let from = Instant::now();
    let report = migrator.migrate().await.unwrap();
    let to = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let (calls, errors) = loops.finish().await;

    assert_eq!(
        report.applied.iter().map(|a| a.version).collect::<Vec<_>>(),
        [online.version()]
    );
    assert_eq!(index_valid(&c, "sessions_user_created_idx").await, None);
    assert_eq!(
        index_valid(&c, "sessions_user_created_token_idx").await,
        Some(true)
    );
    assert_eq!(errors, Vec::<String>::new());
    eprintln!(
        "online-index apply_ms={:.0} bound_ms={}",
        (to - from).as_secs_f64() * 1e3,
        BOUND.as_millis()
    );
    summary("before", calls.iter().filter(|c| c.end <= from));
    let during = summary("during", calls.iter().filter(|c| c.overlaps(from, to)));
    summary("after", calls.iter().filter(|c| c.start >= to));
    let quarter = (to - from) / 4;
    let mut per_quarter = Vec::new();
    for q in 0..4u32 {
        let (a, b) = (from + quarter * q, from + quarter * (q + 1));
        for write in [false, true] {
            let done = calls
                .iter()
                .filter(|c| c.write == write && c.end > a && c.end <= b)
                .count();
            per_quarter.push(done);
            assert!(done > 0, "no call (write={write}) completed in quarter {q}");
        }
    }
    eprintln!("online-index during: calls completed per quarter [lookups q1, writes q1, ..., writes q4] {per_quarter:?}");
    assert!(
        during <= BOUND,
        "a call overlapping the apply took {during:?}, over the bound {BOUND:?}"
    );

    contrast(&migrator, &db, &shipped, first_user).await;
    db.close().await;
    migrator.close().await;
    drop(c);
    drop(pg);
}

/// The same index built with a plain `CREATE INDEX` under the same loops:
/// writes wait for the build (printed; asserted only to exceed the bound).
async fn contrast(migrator: &Db, db: &Db, shipped: &Migrations, first_user: i64) {
    let mut list: Vec<Migration> = shipped.iter().cloned().collect();
    list.push(Migration::new(
        shipped.latest_version() + 1,
        "contrast_plain_index",
        "CREATE INDEX sessions_contrast_idx ON sessions (user_id, created_at, token)",
    ));
    let set = Migrations::new(BackendKind::Postgres, list).unwrap();
    let loops = start_loops(db, first_user);
    tokio::time::sleep(WINDOW / 2).await;
    let from = Instant::now();
    migrator.migrate_with(&set).await.unwrap();
    let to = Instant::now();
    tokio::time::sleep(WINDOW / 2).await;
    let (calls, errors) = loops.finish().await;
    assert_eq!(errors, Vec::<String>::new());
    eprintln!(
        "online-index contrast plain CREATE INDEX apply_ms={:.0}",
        (to - from).as_secs_f64() * 1e3
    );
    summary(
        "contrast-during",
        calls.iter().filter(|c| c.overlaps(from, to)),
    );
    // The writes in flight when the build took its SHARE lock waited for
    // the whole build (about 1.1 s on 1M sessions here, five times the
    // bound): what 0005's concurrent build avoids.
    let longest_write = calls
        .iter()
        .filter(|c| c.write && c.overlaps(from, to))
        .map(Call::latency)
        .max()
        .unwrap_or_default();
    assert!(
        longest_write > BOUND,
        "a plain CREATE INDEX should block writes past {BOUND:?}: longest {longest_write:?}"
    );
}
