//! Read replicas on real streaming standbys: the configuration (SQLite
//! refuses it), routing (reads counted on each server), health (a standby
//! restarted under load, promoted, or down), and the position API on both
//! backends. Read-your-writes under paused replay: tests/replicas_consistency.rs.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::replicas::{
    commits_reaching, register_player, token_of, wait_all_healthy, wait_state, xact_commits,
    Topology,
};
use persist::{Config, Db, Error, Position, ReplicaState};

// ---- configuration ----

#[test]
fn sqlite_refuses_replicas_in_both_forms() {
    let c = Config::from_url("sqlite::memory:").unwrap();
    let err = c
        .with_replica_url("postgres://u@replica/db")
        .expect_err("SQLite has no replicas");
    assert!(
        matches!(&err, Error::Config(m) if m.contains("PostgreSQL feature")),
        "{err:?}"
    );
    let err = Config::from_url("sqlite://game.db?replica=standby:5432")
        .expect_err("SQLite has no replicas");
    assert!(
        matches!(&err, Error::Config(m) if m.contains("PostgreSQL feature")),
        "{err:?}"
    );
}

#[test]
fn replica_urls_in_both_forms_inherit_or_carry_their_settings() {
    let c = Config::from_url(
        "postgres://app:secret@primary:5432/game?sslmode=disable&replica=r1&replica=r2:5433",
    )
    .unwrap();
    assert_eq!(
        c.replica_urls(),
        [
            "postgres://app:***@r1:5432/game?sslmode=disable",
            "postgres://app:***@r2:5433/game?sslmode=disable"
        ]
    );
    assert_eq!(
        c.redacted_url(),
        "postgres://app:***@primary:5432/game?sslmode=disable"
    );
    let c = Config::from_url("postgres://app@primary/game?sslmode=disable")
        .unwrap()
        .with_replica_url("postgres://reader:pw@r3:6000/game?sslmode=require")
        .unwrap();
    assert_eq!(
        c.replica_urls(),
        ["postgres://reader:***@r3:6000/game?sslmode=require"]
    );
    assert!(!format!("{c:?}").contains("pw@"), "{c:?}");
    let none = Config::from_url("postgres://app@primary/game").unwrap();
    assert!(none.replica_urls().is_empty());
    for bad in [
        "postgres://app@primary/game?replica=",
        "postgres://app@primary/game?replica=a/b",
        "postgres://app@primary/game?replica=x@y",
    ] {
        assert!(
            matches!(Config::from_url(bad), Err(Error::Config(_))),
            "{bad}"
        );
    }
    let err = Config::from_url("postgres://app@primary/game")
        .unwrap()
        .with_replica_url("sqlite://x.db")
        .expect_err("a replica must be PostgreSQL");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[test]
fn positions_round_trip_as_text() {
    let p: Position = "1/A2B3C4D5".parse().unwrap();
    assert_eq!(p.to_string(), "1/A2B3C4D5");
    assert!(p > Position::ZERO);
    assert!(matches!("nope".parse::<Position>(), Err(Error::Config(_))));
}

/// Without replicas (both backends): the position is zero, `reading_after`
/// changes nothing, reads see the writes, and there is nothing to report.
async fn without_replicas_nothing_changes(db: &Db) {
    let account = register_player(db, 1).await;
    assert_eq!(db.position(), Position::ZERO);
    let later = db.reading_after("7/0".parse().unwrap());
    assert_eq!(later.position(), Position::ZERO);
    let s = later.sessions().find_by_token(&token_of(1)).await.unwrap();
    assert_eq!(s.user_id, account.user_id);
    assert!(db.replicas().is_empty());
    assert_eq!(db.replica_stats(), persist::ReplicaStats::default());
}

both_backends! {
    db without_replicas_nothing_changes,
}

// ---- routing ----

/// Reads outside units of work are answered by the standbys (counted by
/// persist and by each standby's own `pg_stat_database`); writes and reads
/// inside a unit of work stay on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_served_by_the_replicas() {
    let t = Topology::start(2).await;
    let db = persist::open(&t.config()).await.unwrap();
    let players = 8;
    let mut users = Vec::new();
    for i in 0..players {
        users.push(register_player(&db, i).await);
    }
    t.caught_up().await;
    wait_all_healthy(&db).await;
    let before: Vec<i64> = futures_of(&t).await;
    let reads = 200u64;
    for k in 0..reads as usize {
        let i = k % players;
        let s = db.sessions().find_by_token(&token_of(i)).await.unwrap();
        assert_eq!(s.user_id, users[i].user_id);
    }
    // Inside a unit of work: the primary, whatever the replicas.
    let tx = db.begin().await.unwrap();
    let l = tx.loadouts().get(users[0].user_id).await.unwrap();
    assert_eq!(l.user_id, users[0].user_id);
    tx.commit().await.unwrap();

    let stats = db.replica_stats();
    assert_eq!(stats.replica_reads, reads, "{stats:?}");
    assert_eq!(stats.primary_reads, 0, "{stats:?}");
    let status = db.replicas();
    assert_eq!(status.iter().map(|r| r.reads).sum::<u64>(), reads);
    for (i, s) in t.standbys.iter().enumerate() {
        let served = i64::try_from(status[i].reads).unwrap();
        assert!(served > 0, "replica {i} served nothing: {status:#?}");
        let after = commits_reaching(s, before[i] + served).await;
        assert!(
            after - before[i] >= served,
            "standby {i}: {} transactions for {served} reads",
            after - before[i]
        );
    }
    db.close().await;
}

async fn futures_of(t: &Topology) -> Vec<i64> {
    let mut v = Vec::new();
    for s in &t.standbys {
        v.push(xact_commits(s).await);
    }
    v
}

// ---- health ----

/// One player's calls in a loop until `stop`: a write, then reads of it;
/// every call must succeed with the value written. Returns the calls made.
async fn player_loop(db: Db, user: persist::UserId, i: usize, stop: Arc<AtomicU64>) -> u64 {
    let mut calls = 0;
    let mut xp = 0;
    while stop.load(Ordering::Relaxed) == 0 {
        let p = db.progression().add_xp(user, 1).await.unwrap();
        xp += 1;
        assert_eq!(p.xp, xp);
        let s = db.sessions().find_by_token(&token_of(i)).await.unwrap();
        assert_eq!(s.user_id, user);
        assert_eq!(db.progression().get(user).await.unwrap().xp, xp);
        let l = db.loadouts().get(user).await.unwrap();
        assert_eq!(l.user_id, user);
        calls += 4;
    }
    calls
}

async fn with_load<F: std::future::Future<Output = ()>>(db: &Db, players: usize, during: F) -> u64 {
    let stop = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..players {
        let user = register_player(db, 100 + i).await.user_id;
        tasks.push(tokio::spawn(player_loop(
            db.clone(),
            user,
            100 + i,
            Arc::clone(&stop),
        )));
    }
    during.await;
    stop.store(1, Ordering::Relaxed);
    let mut calls = 0;
    for t in tasks {
        calls += t.await.expect("no call failed");
    }
    calls
}

/// A standby stopped at once (`immediate`) and started again while players
/// write and read, then the other one crash-restarted: not one call fails
/// and no read shows an older state; the first leaves the rotation, comes
/// back healthy, and serves reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_restarted_under_load_costs_no_failed_call() {
    let t = Topology::start(2).await;
    let db = persist::open(&t.config()).await.unwrap();
    wait_all_healthy(&db).await;
    let standby = Arc::clone(&t.standbys[0]);
    let standby2 = Arc::clone(&t.standbys[1]);
    let db2 = db.clone();
    let calls = with_load(&db, 4, async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = Arc::clone(&standby);
        tokio::task::spawn_blocking(move || s.stop_with("immediate"))
            .await
            .unwrap();
        wait_state(&db2, 0, ReplicaState::Unreachable).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::spawn_blocking(move || standby.start_again())
            .await
            .unwrap();
        wait_state(&db2, 0, ReplicaState::Healthy).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A fast crash-restart, maybe between two checks.
        let s = Arc::clone(&standby2);
        tokio::task::spawn_blocking(move || s.restart("immediate"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    assert!(calls > 0);
    // Back in the rotation: it answers reads again. A replica whose last
    // known position is behind the fence gets reads again only once a
    // health check (every 50 ms here) has seen it catch up, while the other
    // replica, known to be caught up, takes them: read until it does, as
    // long as `wait_state` waits.
    t.caught_up().await;
    let before = db.replicas()[0].reads;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while db.replicas()[0].reads == before {
        assert!(
            std::time::Instant::now() < deadline,
            "replica 0 never served a read again: {:#?}",
            db.replicas()
        );
        db.sessions().find_by_token(&token_of(100)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    db.close().await;
}

/// A promoted standby no longer follows the primary: it leaves the read
/// set for good and the reads go to the other replica or the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_is_dropped_from_the_read_set() {
    let t = Topology::start(1).await;
    let db = persist::open(&t.config()).await.unwrap();
    let user = register_player(&db, 1).await.user_id;
    t.caught_up().await;
    wait_all_healthy(&db).await;
    let s = Arc::clone(&t.standbys[0]);
    tokio::task::spawn_blocking(move || s.promote())
        .await
        .unwrap();
    wait_state(&db, 0, ReplicaState::Promoted).await;
    let served = db.replicas()[0].reads;
    // A write the promoted server never sees, then reads of it.
    db.progression().add_xp(user, 5).await.unwrap();
    for _ in 0..20 {
        assert_eq!(db.progression().get(user).await.unwrap().xp, 5);
        db.sessions().find_by_token(&token_of(1)).await.unwrap();
    }
    let status = db.replicas();
    assert_eq!(status[0].state, ReplicaState::Promoted);
    assert_eq!(status[0].reads, served, "{status:#?}");
    assert!(status[0]
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("not in recovery"));
    db.close().await;
}

/// Every replica down: every call still succeeds, on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_replica_down_every_call_succeeds_on_the_primary() {
    let t = Topology::start(2).await;
    let db = persist::open(&t.config()).await.unwrap();
    let user = register_player(&db, 1).await.user_id;
    wait_all_healthy(&db).await;
    for s in &t.standbys {
        let s = Arc::clone(s);
        tokio::task::spawn_blocking(move || s.stop_with("immediate"))
            .await
            .unwrap();
    }
    // Calls at once (before any check noticed) and after.
    for round in 0..2 {
        for k in 0..10 {
            let p = db.progression().add_xp(user, 1).await.unwrap();
            assert_eq!(p.xp, round * 10 + k + 1);
            assert_eq!(db.progression().get(user).await.unwrap().xp, p.xp);
            let s = db.sessions().find_by_token(&token_of(1)).await.unwrap();
            assert_eq!(s.user_id, user);
            assert!(db.unlocks().list(user).await.unwrap().is_empty());
        }
        wait_state(&db, 0, ReplicaState::Unreachable).await;
        wait_state(&db, 1, ReplicaState::Unreachable).await;
    }
    let stats = db.replica_stats();
    assert_eq!(stats.primary_reads, 60, "{stats:?}");
    assert!(stats.fallback_no_replica > 0, "{stats:?}");
    // A handle opened while they are down opens, and works.
    let late = persist::open(&t.config()).await.unwrap();
    assert_eq!(late.progression().get(user).await.unwrap().xp, 20);
    late.close().await;
    db.close().await;
}

/// A standby whose replay is paused falls behind the primary's writes:
/// past the lag bound it leaves the rotation (its state says by how much),
/// and once replay resumes and it catches up it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_leaves_the_rotation_and_comes_back() {
    let t = Topology::start(1).await;
    let config = t.config().with_replica_max_lag(Duration::from_millis(300));
    let db = persist::open(&config).await.unwrap();
    let user = register_player(&db, 1).await.user_id;
    wait_all_healthy(&db).await;
    t.standbys[0].pause_replay().await;
    db.progression().add_xp(user, 1).await.unwrap();
    wait_state(&db, 0, ReplicaState::Lagging).await;
    let status = &db.replicas()[0];
    assert!(
        status.lag.unwrap() > Duration::from_millis(300),
        "{status:?}"
    );
    assert!(status.behind_bytes.unwrap() > 0, "{status:?}");
    // Out of the rotation: even a handle with nothing to fence reads on
    // the primary, and sees the latest state.
    let other = persist::open(&config).await.unwrap();
    wait_state(&other, 0, ReplicaState::Lagging).await;
    assert_eq!(other.progression().get(user).await.unwrap().xp, 1);
    assert_eq!(other.replica_stats().fallback_no_replica, 1);
    t.standbys[0].resume_replay().await;
    wait_state(&db, 0, ReplicaState::Healthy).await;
    wait_state(&other, 0, ReplicaState::Healthy).await;
    assert_eq!(other.progression().get(user).await.unwrap().xp, 1);
    assert_eq!(other.replica_stats().replica_reads, 1);
    other.close().await;
    db.close().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_persist");

/// `persist status --json` lists the replicas of a `replica=` URL with
/// their state; `persist demo --replica-url` routes its reads to the
/// standby, its consistency checks all pass, and its summary counts the
/// reads of each server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_and_demo_show_the_replicas() {
    let t = Topology::start(1).await;
    let standby_port = t.standbys[0].port();
    let url = format!("{}&replica=127.0.0.1:{standby_port}", t.primary_url());
    let out = std::process::Command::new(BIN)
        .args(["status", "--json", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let replicas = v["replicas"].as_array().expect("a replicas array");
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0]["state"], "healthy", "{v}");
    assert_eq!(
        replicas[0]["url"],
        format!("postgres://postgres@127.0.0.1:{standby_port}/game?sslmode=disable")
    );
    // Without replicas: no such field.
    let out = std::process::Command::new(BIN)
        .args(["status", "--json", "--database-url", &t.primary_url()])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.get("replicas").is_none(), "{v}");

    let out = std::process::Command::new(BIN)
        .args([
            "demo",
            "--players",
            "40",
            "--database-url",
            &t.primary_url(),
        ])
        .args([
            "--replica-url",
            &t.standbys[0].url_for(common::replicas::DB),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks = stdout
        .lines()
        .find(|l| l.starts_with("consistency checks:"))
        .expect("a consistency line");
    assert!(checks.ends_with(" ok, 0 failed"), "{checks}");
    let reads = stdout
        .lines()
        .find(|l| l.starts_with("reads answered:"))
        .expect("a reads line");
    let replica_reads: u64 = reads
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a replica read count");
    assert!(replica_reads > 0, "{stdout}");
    assert!(stdout.contains("sent to primary:"), "{stdout}");
    // The summary, for whoever runs this test with --no-capture.
    eprintln!("{stdout}");
}

/// The replicas' pools count their connections under `pool="replica"` and
/// the health check's under `pool="replica_check"`; the primary's `main`
/// figures stay its own.
#[test]
fn replica_pools_have_their_own_metric_labels() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        common::block_on(async {
            let t = Topology::start(1).await;
            let db = persist::open(&t.config()).await.unwrap();
            register_player(&db, 1).await;
            t.caught_up().await;
            wait_all_healthy(&db).await;
            db.sessions().find_by_token(&token_of(1)).await.unwrap();
            assert_eq!(db.replica_stats().replica_reads, 1);
            db.close().await;
        })
    });
    let series = snapshotter.snapshot().into_vec();
    let opened = |pool: &str| -> u64 {
        series
            .iter()
            .filter(|(k, ..)| {
                let key = k.key();
                key.name() == "db_client_connections_opened_total"
                    && key.labels().any(|l| l.key() == "pool" && l.value() == pool)
            })
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("not a counter: {other:?}"),
            })
            .sum()
    };
    assert!(opened("main") >= 1);
    assert!(opened("replica") >= 1);
    assert_eq!(opened("replica_check"), 1);
}
