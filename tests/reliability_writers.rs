//! Promise 3 (issue 5): many writers, no spurious busy errors (SQLite).
//!
//! 16 tasks in this process and 4 child processes (this test binary,
//! re-executed to run `writers_child`) share one database file and all run
//! read-then-write units of work on the same row: `db.begin()`, read the
//! progression, set xp to what was read + 1, commit. Busy timeout is the
//! default (5 s). Checked: no unit fails (no `Timeout`/busy or any other
//! error reaches a caller) and the final xp is exactly the number of units
//! (16 x k + 4 x m): no update is lost.
//!
//! `plain_deferred_begin_read_then_write_fails_with_busy` is the regression
//! showing why units of work begin with `BEGIN IMMEDIATE`: with a plain
//! (deferred) `BEGIN`, the same read-then-write fails with `SQLITE_BUSY` at
//! once, without waiting (also in `tests/concurrency.rs`).
//!
//! Short setting (CI): k = 25, m = 100; `PERSIST_RELIABILITY_LONG=1`:
//! k = 250, m = 1000.

mod common;
#[path = "reliability_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use persist::{Config, Db, NewAccount, Progression, UserId};
use support::{say, scale, spawn_self, ChildProc};

const CHILD_ENV: &str = "PERSIST_WRITERS_CHILD";
const USER_ENV: &str = "PERSIST_WRITERS_USER";
const UNITS_ENV: &str = "PERSIST_WRITERS_UNITS";
const BUDGET_ENV: &str = "PERSIST_WRITERS_BUDGET_MS";

const TASKS: usize = 16;
const PROCESSES: usize = 4;

/// One read-then-write unit of work: xp = read + 1.
async fn unit(db: &Db, user: UserId) -> persist::Result<()> {
    let tx = db.begin().await?;
    let p = tx.progression().get(user).await?;
    // Let other tasks run between the read and the write.
    tokio::task::yield_now().await;
    tx.progression()
        .set(&Progression { xp: p.xp + 1, ..p })
        .await?;
    tx.commit().await
}

/// Outcome counts of a writer: units committed, errors by kind.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    /// Longest unit (begin to commit), waits included, in ms.
    max_ms: u128,
    errors: BTreeMap<String, usize>,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, r: persist::Result<()>, took: Duration) {
        self.max_ms = self.max_ms.max(took.as_millis());
        match r {
            Ok(()) => self.ok += 1,
            Err(e) => {
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{e:?}"));
                }
                *self.errors.entry(e.kind().to_string()).or_default() += 1;
            }
        }
    }

    fn add(&mut self, o: Tally) {
        self.ok += o.ok;
        self.max_ms = self.max_ms.max(o.max_ms);
        for (k, n) in o.errors {
            *self.errors.entry(k).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn failed(&self) -> usize {
        self.errors.values().sum()
    }

    /// Busy errors: SQLite's busy timeout (or the writer gate) ran out.
    fn busy(&self) -> usize {
        self.errors.get("timeout").copied().unwrap_or(0)
    }
}

/// Runs `units` units (or until `budget` is spent) on `user`.
async fn writer(db: Db, user: UserId, units: usize, budget: Duration) -> Tally {
    let start = Instant::now();
    let mut t = Tally::default();
    for _ in 0..units {
        if start.elapsed() > budget {
            break;
        }
        let began = Instant::now();
        let r = unit(&db, user).await;
        t.record(r, began.elapsed());
    }
    t
}

/// Runs only as a child of `sixteen_tasks_and_four_processes_...`
/// (`PERSIST_WRITERS_CHILD` set to the database URL): opens the file, says
/// `READY`, waits for a line on stdin, runs its units and reports
/// `DONE ok=<n> failed=<n> busy=<n> max_ms=<n> first_error=<...>`.
#[test]
#[ignore = "child-process entry point: sixteen_tasks_and_four_processes_read_then_write_without_busy_errors runs it"]
fn writers_child() {
    let url = common::child_env(CHILD_ENV);
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let user = UserId(var(USER_ENV).parse().expect("user"));
    let units: usize = var(UNITS_ENV).parse().expect("units");
    let budget = Duration::from_millis(var(BUDGET_ENV).parse().expect("budget"));
    support::runtime().block_on(async {
        let db = persist::open(&Config::from_url(&url).expect("URL"))
            .await
            .expect("child open");
        say("READY");
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).expect("start signal");
        let t = writer(db.clone(), user, units, budget).await;
        db.close().await;
        say(&format!(
            "DONE ok={} failed={} busy={} max_ms={} first_error={}",
            t.ok,
            t.failed(),
            t.busy(),
            t.max_ms,
            t.first_error.as_deref().unwrap_or("-")
        ));
    });
}

fn parse_done(line: &str) -> Tally {
    let rest = line.strip_prefix("DONE ").expect("DONE line");
    let mut t = Tally::default();
    let mut fields = rest.splitn(5, ' ');
    let mut num = |name: &str| -> usize {
        let f = fields.next().expect(name);
        f.strip_prefix(&format!("{name}="))
            .expect(name)
            .parse()
            .expect(name)
    };
    t.ok = num("ok");
    let failed = num("failed");
    let busy = num("busy");
    t.max_ms = num("max_ms") as u128;
    if busy > 0 {
        t.errors.insert("timeout".into(), busy);
    }
    if failed > busy {
        t.errors.insert("other".into(), failed - busy);
    }
    let first = fields.next().unwrap_or("first_error=-");
    if first != "first_error=-" {
        t.first_error = Some(first.to_string());
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_tasks_and_four_processes_read_then_write_without_busy_errors() {
    let k = scale(25, 250);
    let m = scale(100, 1000);
    let budget = scale(Duration::from_secs(20), Duration::from_secs(300));
    let (url, _dir) = {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("writers.db").display());
        (url, dir)
    };
    let config = Config::from_url(&url).unwrap();
    assert_eq!(
        config.durability(),
        persist::Durability::Full,
        "the default durability"
    );
    let db = persist::open(&config).await.unwrap();
    db.migrate().await.unwrap();
    let user = db
        .accounts()
        .create(&NewAccount {
            email: "w@writers.invalid",
            username: "writer",
            pass_hash: b"hash",
            created_at: 1_700_000_000,
        })
        .await
        .unwrap()
        .user_id;
    db.progression()
        .set(&Progression {
            user_id: user,
            level: 1,
            xp: 0,
        })
        .await
        .unwrap();

    // Start the processes; each opens the file and waits for the signal.
    let mut children: Vec<ChildProc> = (0..PROCESSES)
        .map(|_| {
            spawn_self(
                "writers_child",
                &[
                    (CHILD_ENV, url.clone()),
                    (USER_ENV, user.0.to_string()),
                    (UNITS_ENV, m.to_string()),
                    (BUDGET_ENV, budget.as_millis().to_string()),
                ],
            )
        })
        .collect();
    let children = tokio::task::spawn_blocking(move || {
        for c in &mut children {
            if !c.wait_for_line(Duration::from_secs(60), |l| l == "READY") {
                c.kill();
                panic!("writer process never became ready: {}", c.stderr_text());
            }
        }
        children
    })
    .await
    .unwrap();

    let start = Instant::now();
    let mut children = children;
    for c in &mut children {
        use std::io::Write;
        let stdin = c.stdin.as_mut().expect("child stdin");
        stdin
            .write_all(b"GO\n")
            .and_then(|()| stdin.flush())
            .unwrap();
    }
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| tokio::spawn(writer(db.clone(), user, k, budget)))
        .collect();
    let mut in_process = Tally::default();
    for t in tasks {
        in_process.add(t.await.unwrap());
    }
    let (children, processes) = tokio::task::spawn_blocking(move || {
        let mut total = Tally::default();
        for c in &mut children {
            let st = c.wait(budget + Duration::from_secs(60));
            let err = c.stderr_text();
            assert!(st.success(), "writer process failed ({st}): {err}");
            let done = c
                .seen
                .iter()
                .find(|l| l.starts_with("DONE "))
                .unwrap_or_else(|| panic!("no DONE line: {:?} {err}", c.seen));
            total.add(parse_done(done));
        }
        (children, total)
    })
    .await
    .unwrap();
    drop(children);
    let elapsed = start.elapsed();

    let final_xp = db.progression().get(user).await.unwrap().xp;
    let (busy_in_process, busy_processes) = (in_process.busy(), processes.busy());
    let (max_ms_in_process, max_ms_processes) = (in_process.max_ms, processes.max_ms);
    let mut all = Tally::default();
    all.add(in_process);
    all.add(processes);
    let committed = all.ok;
    let planned = TASKS * k + PROCESSES * m;
    let violations = all.failed() + usize::from(final_xp != i64::try_from(committed).unwrap());
    eprintln!(
        "reliability writers tasks={TASKS} processes={PROCESSES} k={k} m={m} \
         units_committed={committed} units_planned={planned} busy_errors={} \
         (in_process={busy_in_process} processes={busy_processes}) other_errors={} \
         max_unit_ms_in_process={max_ms_in_process} max_unit_ms_processes={max_ms_processes} \
         final_xp={final_xp} elapsed_s={:.1} units_per_s={:.0} violations={violations}",
        all.busy(),
        all.failed() - all.busy(),
        elapsed.as_secs_f64(),
        committed as f64 / elapsed.as_secs_f64().max(1e-9),
    );
    assert_eq!(
        all.failed(),
        0,
        "errors reached callers: {:?}, first: {:?}",
        all.errors,
        all.first_error
    );
    assert_eq!(final_xp, i64::try_from(committed).unwrap(), "lost updates");
    assert_eq!(violations, 0);
    // Every writer ran all its units unless the time bound stopped it: then
    // the total is exactly 16 x k + 4 x m.
    if elapsed < budget {
        assert_eq!(committed, planned);
        assert_eq!(final_xp, i64::try_from(planned).unwrap());
    } else {
        eprintln!("note: the time bound stopped the writers at {committed} of {planned} units");
    }
    db.close().await;
}

// ---------------------------------------------------------------------------
// Regression: a plain deferred BEGIN fails where BEGIN IMMEDIATE waits.

static BUSY_CALLS: AtomicUsize = AtomicUsize::new(0);

fn counting_busy_handler(n: i32) -> bool {
    BUSY_CALLS.fetch_add(1, Ordering::SeqCst);
    if n >= 500 {
        return false;
    }
    std::thread::sleep(Duration::from_millis(10));
    true
}

/// Two connections each `BEGIN` (deferred), read, then write: the second
/// write fails at once with `SQLITE_BUSY` though a busy handler is set (it is
/// never called: waiting cannot help a stale read snapshot). The same
/// read-then-write through `Db::begin` succeeds for every writer above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_deferred_begin_read_then_write_fails_with_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deferred.db");
    let db = persist::open(&Config::from_url(&format!("sqlite://{}", path.display())).unwrap())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let user = db
        .accounts()
        .create(&NewAccount {
            email: "d@writers.invalid",
            username: "deferred",
            pass_hash: b"hash",
            created_at: 1_700_000_000,
        })
        .await
        .unwrap()
        .user_id;
    db.progression()
        .set(&Progression {
            user_id: user,
            level: 0,
            xp: 0,
        })
        .await
        .unwrap();
    let c1 = rusqlite::Connection::open(&path).unwrap();
    let c2 = rusqlite::Connection::open(&path).unwrap();
    for c in [&c1, &c2] {
        c.busy_handler(Some(counting_busy_handler)).unwrap();
        c.execute_batch("BEGIN").unwrap();
        let xp: i64 = c
            .query_row(
                "SELECT xp FROM progression WHERE user_id = ?1",
                [user.0],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(xp, 0);
    }
    c1.execute("UPDATE progression SET xp = 1 WHERE user_id = ?1", [user.0])
        .unwrap();
    BUSY_CALLS.store(0, Ordering::SeqCst);
    let e = c2
        .execute("UPDATE progression SET xp = 1 WHERE user_id = ?1", [user.0])
        .unwrap_err();
    assert_eq!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "{e:?}"
    );
    let handler_calls = BUSY_CALLS.load(Ordering::SeqCst);
    eprintln!(
        "reliability writers case=deferred_begin_regression second_writer={:?} \
         busy_handler_calls={handler_calls}",
        e.sqlite_error_code()
    );
    assert_eq!(handler_calls, 0, "the handler waited");
    c1.execute_batch("COMMIT").unwrap();
    c2.execute_batch("ROLLBACK").unwrap();
    drop((c1, c2));
    // The same read-then-write as a unit of work: xp 1 -> 2.
    unit(&db, user).await.unwrap();
    assert_eq!(db.progression().get(user).await.unwrap().xp, 2);
    db.close().await;
}
