//! `persist-bench --metrics-cost`: what recording metrics costs. A session
//! lookup and a write (`progression.add_xp`) are timed with the Prometheus
//! recorder on and off, on SQLite and PostgreSQL, by one task and by 16.
//! Target: with the recorder >= 0.95x the throughput without.
//!
//! A process installs one global recorder for good, so the run installs a
//! switch: a recorder that hands out the Prometheus recorder's handles when
//! on and the facade's no-op handles when off (the same handles the facade
//! uses when no recorder is installed; the switch adds one atomic load per
//! metric). persist caches its per-call handles per `Db`, so the off rounds
//! and the on rounds use two handles on the same database, each only ever
//! used in its own switch state. Rounds alternate off, on, off, on, ... so drift on this shared
//! machine falls on both alike; each on round is paired with the off round
//! before it, and the report gives the mean of the paired ratios with a 95 %
//! confidence interval (t distribution).
//!
//! Self-contained (its own scratch databases and figures), hooked into
//! `main.rs` by the `--metrics-cost` flag only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use persist::{Config, Db, UserId};

use crate::stats;

/// The recorder switch (see the module docs).
struct Switch {
    on: AtomicBool,
    inner: PrometheusRecorder,
}

impl Recorder for Switch {
    fn describe_counter(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.inner.describe_counter(k, u, d);
    }
    fn describe_gauge(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.inner.describe_gauge(k, u, d);
    }
    fn describe_histogram(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.inner.describe_histogram(k, u, d);
    }
    fn register_counter(&self, key: &Key, m: &Metadata<'_>) -> Counter {
        if self.on.load(Ordering::Relaxed) {
            self.inner.register_counter(key, m)
        } else {
            Counter::noop()
        }
    }
    fn register_gauge(&self, key: &Key, m: &Metadata<'_>) -> Gauge {
        if self.on.load(Ordering::Relaxed) {
            self.inner.register_gauge(key, m)
        } else {
            Gauge::noop()
        }
    }
    fn register_histogram(&self, key: &Key, m: &Metadata<'_>) -> Histogram {
        if self.on.load(Ordering::Relaxed) {
            self.inner.register_histogram(key, m)
        } else {
            Histogram::noop()
        }
    }
}

const USERS: i64 = 200;
const TASK_COUNTS: [usize; 2] = [1, 16];

#[derive(Clone, Copy, Debug)]
enum Op {
    Lookup,
    Write,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Lookup => "session_lookup",
            Op::Write => "add_xp",
        }
    }
}

fn token(i: i64) -> String {
    format!("metrics-cost-token-{i:024}")
}

async fn seed(db: &Db) -> Result<Vec<UserId>> {
    let users = crate::data::seed_players(db, USERS, "mc").await?;
    for (i, user) in (0..).zip(&users) {
        db.sessions()
            .create(&token(i), *user, 1_700_000_000, 1_900_000_000)
            .await?;
    }
    Ok(users)
}

/// Operations per second of `op` run by `tasks` tasks for `window`.
async fn round(
    db: &Db,
    users: &Arc<Vec<UserId>>,
    op: Op,
    tasks: usize,
    window: Duration,
) -> Result<f64> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (db, users) = (db.clone(), Arc::clone(users));
        set.spawn(async move {
            let mut n = 0u64;
            let mut i = t as i64;
            while start.elapsed() < window {
                let k = i % USERS;
                match op {
                    Op::Lookup => drop(db.sessions().find_by_token(&token(k)).await?),
                    Op::Write => drop(db.progression().add_xp(users[k as usize], 1).await?),
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

async fn backend(
    name: &str,
    url: &str,
    switch: &Switch,
    rounds: usize,
    window: Duration,
) -> Result<bool> {
    // Two handles on the same database: persist caches per-call metric
    // handles per `Db`, so each handle is only ever used in one switch
    // state (`off` while off, `on` while on) and its cached handles match.
    let config = Config::from_url(url)?;
    let off_db = persist::open(&config).await?;
    let users = Arc::new(seed(&off_db).await?);
    switch.on.store(true, Ordering::Relaxed);
    let on_db = persist::open(&config).await;
    switch.on.store(false, Ordering::Relaxed);
    let on_db = on_db?;
    let mut all_met = true;
    for op in [Op::Lookup, Op::Write] {
        for tasks in TASK_COUNTS {
            // One warm-up round each way.
            round(&off_db, &users, op, tasks, window).await?;
            switch.on.store(true, Ordering::Relaxed);
            round(&on_db, &users, op, tasks, window).await?;
            switch.on.store(false, Ordering::Relaxed);
            let mut ratios = Vec::new();
            let (mut off_sum, mut on_sum) = (0.0, 0.0);
            for _ in 0..rounds {
                let off = round(&off_db, &users, op, tasks, window).await?;
                switch.on.store(true, Ordering::Relaxed);
                let on = round(&on_db, &users, op, tasks, window).await;
                switch.on.store(false, Ordering::Relaxed);
                let on = on?;
                ratios.push(on / off);
                off_sum += off;
                on_sum += on;
            }
            let (ratio, half) = stats::t_interval(&ratios);
            // Met only when the whole interval clears the bound, missed
            // when it is all below, otherwise undecided.
            let v = stats::verdict(Some(stats::Estimate::around(ratio, half)), 0.95, true);
            all_met &= v == stats::Verdict::Met;
            let verdict = v.label();
            println!(
                "{name:<10} {:<15} {tasks:>5} {:>12.0} {:>12.0} {ratio:>7.3} ± {half:.3}  {}",
                op.name(),
                off_sum / rounds as f64,
                on_sum / rounds as f64,
                verdict
            );
        }
    }
    on_db.close().await;
    off_db.close().await;
    Ok(all_met)
}

/// Runs the whole measurement; `Ok(false)` when a ratio missed 0.95.
pub async fn run(postgres_url: &str, quick: bool) -> Result<bool> {
    let inner = PrometheusBuilder::new().build_recorder();
    let switch: &'static Switch = Box::leak(Box::new(Switch {
        on: AtomicBool::new(false),
        inner,
    }));
    metrics::set_global_recorder(switch).map_err(|e| anyhow::anyhow!("{e}"))?;
    persist::observe::describe_metrics();
    let (rounds, window) = if quick {
        (4, Duration::from_millis(50))
    } else {
        (15, Duration::from_millis(200))
    };
    println!("metrics cost: throughput (ops/s) without and with the Prometheus recorder,");
    println!(
        "{rounds} alternating rounds of {} ms; ratio = with / without, mean ± 95 % CI",
        window.as_millis()
    );
    println!(
        "{:<10} {:<15} {:>5} {:>12} {:>12} {:>7}",
        "backend", "operation", "tasks", "without", "with", "ratio"
    );
    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}", dir.path().join("metrics_cost.db").display());
    let mut met = backend("sqlite", &sqlite_url, switch, rounds, window).await?;
    let name = format!("persist_metrics_cost_{}", std::process::id());
    let scratch = crate::bench_pg::Scratch::create(postgres_url, &name).await?;
    let pg = backend("postgres", &scratch.url, switch, rounds, window).await;
    scratch.remove().await?;
    met &= pg?;
    Ok(met)
}
