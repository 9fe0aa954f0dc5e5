//! `persist-bench --replicas`: what read-replica routing costs (issue 16).
//!
//! ```text
//! cargo run --release -p persist-bench -- --replicas [--quick]
//! ```
//!
//! Starts its own private primary and two streaming standbys (the test
//! support of `tests/common/cluster.rs`: `pg_basebackup -R`, a replication
//! slot each), so it needs the PostgreSQL server programs, not a running
//! server. Every server shares this machine's cores, so the cells measure
//! the routing overhead, not the scale-out (docs/PERFORMANCE.md explains
//! the scale-out on separate machines).
//!
//! Cells:
//! - session lookup and unlock list by 16 tasks through handles with 0, 1
//!   and 2 replicas, in alternating rounds; each 1- and 2-replica round is
//!   paired with the 0-replica round before it; ratio of throughputs, mean
//!   and 95 % confidence interval (t distribution). Target >= 0.90x; met
//!   only when the whole interval clears it, missed when all of it is below,
//!   otherwise undecided.
//! - read-after-write latency (`add_xp` then `progression.get` through the
//!   same handle, one task): p50 and p99 of the read with no replica, and
//!   with one replica whose replay is paused but which stays in the
//!   rotation (lag bound raised): every such read pays the fence check on
//!   the replica and then goes to the primary. No target: the figures say
//!   what the fallback costs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use persist::{Config, Db, UserId};

use crate::stats;

use crate::connect::cluster::Cluster;

const USERS: i64 = 200;
const TASKS: usize = 16;
const DB: &str = "bench";

fn token(i: i64) -> String {
    format!("replica-bench-token-{i:024}")
}

async fn seed(db: &Db) -> Result<Vec<UserId>> {
    let users = crate::data::seed_players(db, USERS, "rb").await?;
    for (i, user) in (0..).zip(&users) {
        db.unlocks()
            .grant_many(*user, &[1, 2, 3, 4, 5], 1_700_000_000)
            .await?;
        db.sessions()
            .create(&token(i), *user, 1_700_000_000, 1_900_000_000)
            .await?;
    }
    Ok(users)
}

#[derive(Clone, Copy)]
enum Op {
    Lookup,
    Unlocks,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Lookup => "session_lookup",
            Op::Unlocks => "unlock_list",
        }
    }
}

/// Reads per second of `op` by [`TASKS`] tasks for `window`.
async fn round(db: &Db, users: &Arc<Vec<UserId>>, op: Op, window: Duration) -> Result<f64> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (db, users) = (db.clone(), Arc::clone(users));
        set.spawn(async move {
            let (mut n, mut i) = (0u64, t as i64);
            while start.elapsed() < window {
                let k = i % USERS;
                match op {
                    Op::Lookup => drop(db.sessions().find_by_token(&token(k)).await?),
                    Op::Unlocks => drop(db.unlocks().list(users[k as usize]).await?),
                }
                n += 1;
                i += 7;
            }
            anyhow::Ok(n)
        });
    }
    let mut total = 0u64;
    while let Some(done) = set.join_next().await {
        total += done.context("task")??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// The verdict on `ratio ± half` against `bound` (at least).
fn verdict(ratio: f64, half: f64, bound: f64) -> &'static str {
    stats::verdict(Some(stats::Estimate::around(ratio, half)), bound, true).label()
}

/// Waits until every replica of `db` is healthy (up to 30 s).
async fn healthy(db: &Db) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !db
        .replicas()
        .iter()
        .all(|r| r.state == persist::ReplicaState::Healthy)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "replicas not healthy: {:?}",
            db.replicas()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The p50 and p99 (ms) of a read right after a write, through `db`.
async fn read_after_write(db: &Db, users: &[UserId], samples: usize) -> Result<(f64, f64)> {
    let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
    for i in 0..samples {
        let user = users[i % users.len()];
        let p = db.progression().add_xp(user, 1).await?;
        let t = Instant::now();
        let got = db.progression().get(user).await?;
        h.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        anyhow::ensure!(got.xp == p.xp, "read-after-write saw an older state");
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok((ms(0.5), ms(0.99)))
}

/// Runs the cells; `Ok(false)` when a throughput ratio missed 0.90.
pub async fn run(quick: bool) -> Result<bool> {
    let (rounds, window, samples) = if quick {
        (4, Duration::from_millis(100), 200)
    } else {
        (15, Duration::from_millis(300), 2000)
    };
    eprintln!("replicas: starting a private primary and two standbys ...");
    let primary = Arc::new(tokio::task::spawn_blocking(Cluster::start).await?);
    let url = primary.create_database(DB).await;
    let base = persist::open(&Config::from_url(&url)?).await?;
    let users = Arc::new(seed(&base).await?);
    let mut standbys = Vec::new();
    for _ in 0..2 {
        let p = Arc::clone(&primary);
        standbys.push(tokio::task::spawn_blocking(move || Cluster::standby_of(&p)).await?);
    }
    // Settle the seed's dead tuples and statistics now: replaying the
    // cleanup of a page that readers keep pinned on a standby waits for them
    // (a hot standby's buffer-pin conflict), which would show up as lag
    // during the rounds (the replica then leaves the rotation, correctly).
    primary
        .connect(DB)
        .await
        .batch_execute("VACUUM (ANALYZE)")
        .await?;
    for s in &standbys {
        s.wait_caught_up(&primary).await;
    }
    let with = |n: usize| -> Result<Config> {
        let mut c = Config::from_url(&url)?;
        for s in &standbys[..n] {
            c = c.with_replica_url(&s.url_for(DB))?;
        }
        Ok(c)
    };
    let one = persist::open(&with(1)?).await?;
    let two = persist::open(&with(2)?).await?;
    // Two replicas with one shared read connection each: two read backends
    // in all, as the primary alone and the one-replica handle have (two
    // lanes each), so only the routing differs (D-132).
    let two_eq = persist::open(&with(2)?.with_shared_read_connections(1)).await?;
    healthy(&one).await?;
    healthy(&two).await?;
    healthy(&two_eq).await?;
    println!(
        "\nRead replicas (all servers on this machine): reads/s by {TASKS} tasks, \
         {rounds} alternating rounds of {} ms; ratio = with replicas / primary alone",
        window.as_millis()
    );
    println!(
        "{:<15} {:>10} {:>10} {:>10} {:>17} {:>17}  target >= 0.90",
        "operation",
        "0 replicas",
        "1 replica",
        "2 replicas",
        "ratio 1 (95% CI)",
        "ratio 2 (95% CI)"
    );
    let mut all_met = true;
    let mut equal = Vec::new();
    for op in [Op::Lookup, Op::Unlocks] {
        for db in [&base, &one, &two, &two_eq] {
            round(db, &users, op, window).await?; // warm-up
        }
        let (mut r1, mut r2, mut r2e, mut sums) = (Vec::new(), Vec::new(), Vec::new(), [0.0; 4]);
        for _ in 0..rounds {
            let b = round(&base, &users, op, window).await?;
            let x1 = round(&one, &users, op, window).await?;
            let x2 = round(&two, &users, op, window).await?;
            let x2e = round(&two_eq, &users, op, window).await?;
            r1.push(x1 / b);
            r2.push(x2 / b);
            r2e.push(x2e / b);
            for (s, v) in sums.iter_mut().zip([b, x1, x2, x2e]) {
                *s += v;
            }
        }
        equal.push((op, sums[3] / rounds as f64, stats::t_interval(&r2e)));
        let ((m1, h1), (m2, h2)) = (stats::t_interval(&r1), stats::t_interval(&r2));
        let (v1, v2) = (verdict(m1, h1, 0.9), verdict(m2, h2, 0.9));
        all_met &= v1 == "met" && v2 == "met";
        let n = rounds as f64;
        println!(
            "{:<15} {:>10.0} {:>10.0} {:>10.0} {:>6.3} ± {:<5.3} {:<9} {:>6.3} ± {:<5.3} {}",
            op.name(),
            sums[0] / n,
            sums[1] / n,
            sums[2] / n,
            m1,
            h1,
            v1,
            m2,
            h2,
            v2
        );
    }
    println!(
        "2 replicas, one shared read connection each (two read backends in all, as the \
         primary alone; reported apart, D-132):"
    );
    for (op, rate, (m, h)) in equal {
        println!(
            "{:<15} {:>10.0} reads/s  ratio {:>6.3} ± {:<5.3} {}",
            op.name(),
            rate,
            m,
            h,
            verdict(m, h, 0.9)
        );
    }
    two_eq.close().await;
    let stats = two.replica_stats();
    println!(
        "2-replica handle: {} reads on replicas, {} on the primary ({} no healthy replica, \
         {} replica failed, {} behind)",
        stats.replica_reads,
        stats.primary_reads,
        stats.fallback_no_replica,
        stats.fallback_error,
        stats.fallback_behind
    );
    for r in two.replicas() {
        if let Some(e) = &r.last_error {
            println!(
                "  {}: {} (last error: {e}; {:?} bytes behind, replayed {})",
                r.url,
                r.state.as_str(),
                r.behind_bytes,
                r.replayed
            );
        }
    }

    // Read-after-write with a lagging replica (paused replay, kept in the
    // rotation), next to the primary alone.
    let lagging = persist::open(&with(1)?.with_replica_max_lag(Duration::from_secs(3600))).await?;
    healthy(&lagging).await?;
    standbys[0]
        .connect("postgres")
        .await
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await?;
    let (p50_0, p99_0) = read_after_write(&base, &users, samples).await?;
    let (p50_1, p99_1) = read_after_write(&lagging, &users, samples).await?;
    println!("\nRead after write ({samples} samples, one task): the read's latency, ms");
    println!("{:<40} {:>8} {:>8}", "", "p50", "p99");
    println!("{:<40} {:>8.3} {:>8.3}", "primary alone", p50_0, p99_0);
    println!(
        "{:<40} {:>8.3} {:>8.3}",
        "1 lagging replica (fence check, fallback)", p50_1, p99_1
    );
    let s = lagging.replica_stats();
    println!(
        "lagging handle: {} reads sent to the primary because the replica was behind, {} on it",
        s.fallback_behind, s.replica_reads
    );
    standbys[0]
        .connect("postgres")
        .await
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await?;
    for db in [&lagging, &two, &one, &base] {
        db.close().await;
    }
    Ok(all_met)
}
