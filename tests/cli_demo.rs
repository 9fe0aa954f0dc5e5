//! `persist demo`, run as a user would: the real binary on a real SQLite file
//! and a real PostgreSQL database. Same seed, same content (whatever the task
//! count, the backend or a re-run on the same database); another seed,
//! another content; summary table; plain progress lines when stderr is not a
//! terminal; usage errors.

mod common;

use common::{assert_exit, stderr, stdout};

use std::collections::BTreeMap;
use std::process::{Command, Output};

use common::demo::{player_username, OPERATIONS};
use common::PgDatabase;
use persist::{Config, Loadout, UserId};

const BIN: &str = env!("CARGO_BIN_EXE_persist");

const PLAYERS: u32 = 40;
const SEED: u64 = 7;

fn persist() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("DATABASE_URL").env_remove("RUST_LOG");
    c
}

fn demo(url: &str, players: u32, seed: u64, tasks: u32) -> Output {
    persist()
        .args(["--database-url", url, "demo"])
        .args(["--players", &players.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--tasks", &tasks.to_string()])
        .output()
        .expect("run persist")
}

/// The COUNT column of the summary table, by operation name (with `total`).
fn counts(out: &str) -> BTreeMap<String, u64> {
    let header = out
        .lines()
        .position(|l| l.starts_with("OPERATION"))
        .unwrap_or_else(|| panic!("no summary table in {out}"));
    assert_eq!(
        out.lines()
            .nth(header)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["OPERATION", "COUNT", "OPS/S", "MEAN_MS"],
        "{out}"
    );
    out.lines()
        .skip(header + 1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().unwrap())
        })
        .collect()
}

/// A finished run's stdout: the table has every kind, in order, plus a
/// total that adds up; registrations equal players; every check passed.
fn check_summary(out: &str, players: u32) -> BTreeMap<String, u64> {
    let c = counts(out);
    let names: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("OPERATION"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let mut expected: Vec<&str> = OPERATIONS.to_vec();
    expected.push("total");
    assert_eq!(names, expected, "{out}");
    assert_eq!(
        expected,
        [
            "register",
            "login",
            "login_failed",
            "session_lookup",
            "loadout_save",
            "battle",
            "logout",
            "password_change",
            "account_delete",
            "total"
        ]
    );
    let sum: u64 = c
        .iter()
        .filter(|(k, _)| *k != "total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(c["total"], sum, "{out}");
    assert_eq!(c["register"], u64::from(players), "{out}");
    for line in [
        "repository calls:",
        "wall time:",
        "database size:",
        "consistency checks:",
    ] {
        assert!(out.lines().any(|l| l.starts_with(line)), "{line} in {out}");
    }
    let checks = out
        .lines()
        .find(|l| l.starts_with("consistency checks:"))
        .unwrap();
    assert!(checks.ends_with(" ok, 0 failed"), "{checks}");
    c
}

/// Plain progress lines on stderr (not a terminal here): one per tenth,
/// ending at 100%, and no terminal control sequences.
fn check_plain_progress(err: &str, players: u32) {
    assert!(!err.contains('\u{1b}'), "escape sequence in {err:?}");
    assert!(!err.contains('\r'), "carriage return in {err:?}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 10, "{err}");
    for (i, l) in lines.iter().enumerate() {
        let done = players * (i as u32 + 1) / 10;
        let prefix = format!("progress: {done}/{players} players ({}%), ", (i + 1) * 10);
        assert!(l.starts_with(&prefix), "{l:?} should start with {prefix:?}");
        assert!(l.ends_with(" operations"), "{l}");
    }
}

/// One player as stored, without the database-assigned user id; `None`
/// when the account was deleted.
type Stored = Option<StoredPlayer>;

#[derive(Debug, PartialEq, Eq)]
struct StoredPlayer {
    email: String,
    pass_hash: Vec<u8>,
    created_at: i64,
    last_login_at: Option<i64>,
    level: i32,
    xp: i64,
    loadout: Loadout,
    unlocks: Vec<(i32, i64)>,
    sessions: Vec<(String, i64, i64)>,
}

/// Everything the demo stored for players `0..players` of `seed`, read
/// through the public API, in player order.
async fn dump(url: &str, seed: u64, players: u32) -> Vec<Stored> {
    let db = persist::open(&Config::from_url(url).unwrap())
        .await
        .unwrap();
    let mut out = Vec::new();
    for i in 0..players {
        let a = match db
            .accounts()
            .find_by_username(&player_username(seed, i))
            .await
        {
            Ok(a) => a,
            Err(e) if e.is_not_found() => {
                out.push(None);
                continue;
            }
            Err(e) => panic!("find player {i}: {e}"),
        };
        let p = db.progression().get(a.user_id).await.unwrap();
        let mut loadout = db.loadouts().get(a.user_id).await.unwrap();
        loadout.user_id = UserId(0);
        let unlocks = db.unlocks().list(a.user_id).await.unwrap();
        let mut sessions: Vec<(String, i64, i64)> = db
            .sessions()
            .list_for_user(a.user_id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.id.to_string(), s.created_at, s.expires_at))
            .collect();
        sessions.sort();
        out.push(Some(StoredPlayer {
            email: a.email,
            pass_hash: a.pass_hash,
            created_at: a.created_at,
            last_login_at: a.last_login_at,
            level: p.level,
            xp: p.xp,
            loadout,
            unlocks: unlocks
                .into_iter()
                .map(|u| (u.flag_id, u.unlocked_at))
                .collect(),
            sessions,
        }));
    }
    db.close().await;
    out
}

/// The seed-independent shape of a dump: per player, deleted or
/// (level, xp, flags).
fn shape(d: &[Stored]) -> Vec<Option<(i32, i64, Vec<i32>)>> {
    d.iter()
        .map(|s| {
            s.as_ref()
                .map(|p| (p.level, p.xp, p.unlocks.iter().map(|u| u.0).collect()))
        })
        .collect()
}

fn deleted(d: &[Stored]) -> u64 {
    d.iter().filter(|s| s.is_none()).count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_same_seed_same_content_whatever_the_tasks_and_reruns() {
    let (url_a, _a) = common::sqlite_url();
    let (url_b, _b) = common::sqlite_url();
    let (url_c, _c) = common::sqlite_url();

    let o = demo(&url_a, PLAYERS, SEED, 1);
    assert_exit(&o, 0, "demo on a fresh SQLite file, 1 task");
    let out_a = stdout(&o);
    assert!(
        out_a.starts_with(&format!(
            "demo: {PLAYERS} players, seed {SEED}, 1 tasks on {url_a}\n"
        )),
        "{out_a}"
    );
    assert!(out_a.contains("\napplied 0001_init ("), "{out_a}");
    let counts_a = check_summary(&out_a, PLAYERS);
    check_plain_progress(&stderr(&o), PLAYERS);
    let size = out_a
        .lines()
        .find(|l| l.starts_with("database size:"))
        .unwrap();
    assert!(
        size.contains("(file ") && size.contains("write-ahead log"),
        "{size}"
    );

    let o = demo(&url_b, PLAYERS, SEED, 6);
    assert_exit(&o, 0, "demo on a fresh SQLite file, 6 tasks");
    let counts_b = check_summary(&stdout(&o), PLAYERS);
    check_plain_progress(&stderr(&o), PLAYERS);
    assert_eq!(counts_a, counts_b, "same seed, same operations");
    for kind in OPERATIONS {
        assert!(counts_a[kind] > 0, "seed {SEED} plays {kind}");
    }

    let dump_a = dump(&url_a, SEED, PLAYERS).await;
    let dump_b = dump(&url_b, SEED, PLAYERS).await;
    assert_eq!(dump_a, dump_b, "same seed, same content");
    assert_eq!(deleted(&dump_a), counts_a["account_delete"]);
    assert!(dump_a
        .iter()
        .any(|s| s.as_ref().is_some_and(|p| !p.sessions.is_empty())));

    // Another seed: other players with another history.
    let o = demo(&url_c, PLAYERS, SEED + 1, 4);
    assert_exit(&o, 0, "demo with another seed");
    let counts_c = check_summary(&stdout(&o), PLAYERS);
    assert_ne!(counts_a, counts_c);
    let dump_c = dump(&url_c, SEED + 1, PLAYERS).await;
    assert_ne!(
        shape(&dump_a),
        shape(&dump_c),
        "another seed, another content"
    );
    assert!(dump(&url_c, SEED, PLAYERS)
        .await
        .iter()
        .all(Option::is_none));

    // Re-running a seed on the same database replaces that seed's players and
    // ends in the same content as a fresh run; other seeds' players stay.
    let o = demo(&url_a, PLAYERS, SEED, 3);
    assert_exit(&o, 0, "second run of the same seed");
    let out = stdout(&o);
    assert_eq!(check_summary(&out, PLAYERS), counts_a);
    let removed = u64::from(PLAYERS) - deleted(&dump_a);
    assert!(
        out.contains(&format!(
            "\nremoved {removed} players left by an earlier run with seed {SEED}\n"
        )),
        "{out}"
    );
    assert!(!out.contains("applied 0001"), "{out}");
    assert_eq!(dump(&url_a, SEED, PLAYERS).await, dump_a);
    let o = demo(&url_c, PLAYERS, SEED, 2);
    assert_exit(&o, 0, "seed 7 beside seed 8");
    assert!(!stdout(&o).contains("removed "), "{}", stdout(&o));
    assert_eq!(dump(&url_c, SEED, PLAYERS).await, dump_a);
    assert_eq!(dump(&url_c, SEED + 1, PLAYERS).await, dump_c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_demo_stores_what_sqlite_stores() {
    let pg = PgDatabase::create().await;
    let o = demo(&pg.url, PLAYERS, SEED, 4);
    assert_exit(&o, 0, "demo on PostgreSQL");
    let out = stdout(&o);
    let counts_pg = check_summary(&out, PLAYERS);
    check_plain_progress(&stderr(&o), PLAYERS);
    assert!(out.contains("\napplied 0001_init ("), "{out}");
    let size = out
        .lines()
        .find(|l| l.starts_with("database size:"))
        .unwrap();
    assert!(size.contains("pg_database_size"), "{size}");

    let (url, _dir) = common::sqlite_url();
    let o = demo(&url, PLAYERS, SEED, 2);
    assert_exit(&o, 0, "demo on SQLite");
    assert_eq!(check_summary(&stdout(&o), PLAYERS), counts_pg);
    assert_eq!(
        dump(&pg.url, SEED, PLAYERS).await,
        dump(&url, SEED, PLAYERS).await,
        "both backends end with the same content"
    );
}

/// The demo through a private PgBouncer in `mode` (8 tasks: concurrent
/// units of work and reads over the pooler's server connections) stores
/// what it stores on a direct connection.
async fn demo_through(mode: common::topology::PoolMode) {
    let pooled = PgDatabase::behind(mode).await;
    let o = demo(&pooled.url, PLAYERS, SEED, 8);
    assert_exit(&o, 0, "demo through PgBouncer");
    let counts_pooled = check_summary(&stdout(&o), PLAYERS);
    let direct = PgDatabase::create().await;
    let o = demo(&direct.url, PLAYERS, SEED, 8);
    assert_exit(&o, 0, "demo on a direct connection");
    assert_eq!(check_summary(&stdout(&o), PLAYERS), counts_pooled);
    assert_eq!(
        dump(&pooled.direct_url(), SEED, PLAYERS).await,
        dump(&direct.url, SEED, PLAYERS).await,
        "the same content through the pooler"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_through_pgbouncer_transaction_mode() {
    demo_through(common::topology::PoolMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_through_pgbouncer_session_mode() {
    demo_through(common::topology::PoolMode::Session).await;
}

#[test]
fn demo_runs_on_the_default_sqlite_file_with_no_setup() {
    let dir = tempfile::tempdir().unwrap();
    let o = persist()
        .current_dir(dir.path())
        .args(["demo", "--players", "5"])
        .output()
        .unwrap();
    assert_exit(&o, 0, "demo with no URL");
    let out = stdout(&o);
    assert!(
        out.starts_with("demo: 5 players, seed 42, 8 tasks on sqlite://persist.db\n"),
        "{out}"
    );
    check_summary(&out, 5);
    assert!(dir.path().join("persist.db").is_file());
}

#[test]
fn usage_errors_exit_2() {
    let (url, _dir) = common::sqlite_url();
    for args in [
        &["--players", "0"][..],
        &["--players", "1000001"],
        &["--players", "many"],
        &["--tasks", "0"],
        &["--tasks", "1025"],
        &["--seed", "-1"],
    ] {
        let o = persist()
            .args(["--database-url", &url, "demo"])
            .args(args)
            .output()
            .unwrap();
        assert_exit(&o, 2, &format!("demo {args:?}"));
        assert!(stdout(&o).is_empty());
    }
    let o = persist().args(["demo", "--help"]).output().unwrap();
    assert_exit(&o, 0, "demo --help");
    let help = stdout(&o);
    for flag in [
        "--players <N>",
        "--seed <S>",
        "--tasks <T>",
        "[default: 200]",
        "[default: 42]",
        "[default: 8]",
    ] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
}

/// Runs `persist demo` against a private server that terminates the demo's
/// backends three times and then restarts twice (fast, then immediate)
/// while it plays. The demo rides it out: what failed without being
/// applied is run again, what is in doubt is read back first. Its checks
/// pass, and it stores exactly what a clean SQLite run of the same seed
/// stores: nothing lost, nothing applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_demo_rides_out_killed_backends_and_server_restarts() {
    use common::cluster::Cluster;
    use std::process::Stdio;
    use std::sync::Arc;
    use std::time::Duration;

    const MANY: u32 = 400;
    const CHAOS_SEED: u64 = 9;
    let cluster = Arc::new(tokio::task::spawn_blocking(Cluster::start).await.unwrap());
    let url = cluster.create_database("demo").await;
    let child = persist()
        .args(["--database-url", &url, "demo"])
        .args(["--players", &MANY.to_string()])
        .args(["--seed", &CHAOS_SEED.to_string(), "--tasks", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = Arc::new(std::sync::Mutex::new(Some(child)));

    // Wait until it plays: some players are registered.
    let started = std::time::Instant::now();
    loop {
        let n: i64 = match cluster.try_connect("demo").await {
            Ok(c) => match c.query_one("SELECT count(*) FROM accounts", &[]).await {
                Ok(r) => r.get(0),
                Err(_) => 0, // not migrated yet
            },
            Err(e) => panic!("connect to the private server: {e}"),
        };
        if n >= 20 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the demo registered no players in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let admin = cluster.connect("postgres").await;
    let mut killed_total = 0;
    for _ in 0..3 {
        let killed: i64 = admin
            .query_one(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = 'demo' AND pid <> pg_backend_pid()) k",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        killed_total += killed;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        killed_total > 0,
        "the demo holds connections while it plays"
    );
    for mode in ["fast", "immediate"] {
        let c = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || c.restart(mode))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let still_running = child
        .lock()
        .unwrap()
        .as_mut()
        .map(|c| c.try_wait().unwrap().is_none())
        .unwrap();
    assert!(
        still_running,
        "the demo finished before the last restart: give it more players"
    );

    let o = tokio::task::spawn_blocking(move || {
        child
            .lock()
            .unwrap()
            .take()
            .unwrap()
            .wait_with_output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_exit(&o, 0, "demo under killed backends and restarts");
    let out = stdout(&o);
    let counts = check_summary(&out, MANY);
    let again: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("calls run again:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'calls run again' line in {out}"));
    assert!(
        again > 0,
        "calls failed under the restarts and ran again: {out}"
    );

    let (lite, _dir) = common::sqlite_url();
    let o = demo(&lite, MANY, CHAOS_SEED, 2);
    assert_exit(&o, 0, "the same seed on SQLite, undisturbed");
    assert_eq!(check_summary(&stdout(&o), MANY), counts);
    assert_eq!(
        dump(&url, CHAOS_SEED, MANY).await,
        dump(&lite, CHAOS_SEED, MANY).await,
        "the disturbed run stores what the undisturbed one stores"
    );
}
