//! The expired-session sweep with a concurrent writer that records how long
//! its short writes wait.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use persist::{Db, UserId};

use crate::data::{mix, T0};
use crate::report::SweepStats;

/// Short writes (login stamps) in a loop until `stop`; returns each one's
/// latency in milliseconds.
async fn writer(db: Db, accounts: u64, stop: Arc<AtomicBool>) -> Result<Vec<f64>> {
    // A new value on every write of the run: SQLite skips writing a row whose
    // bytes do not change, and such a commit costs no fsync.
    static STAMP: AtomicU64 = AtomicU64::new(1);
    let mut lat = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let i = STAMP.fetch_add(1, Ordering::Relaxed);
        let user = UserId((1 + mix(i) % accounts) as i64);
        let t = Instant::now();
        db.accounts().update_last_login(user, T0 + i as i64).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(lat)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Runs `delete_expired(now, batch)` through persist while a writer task
/// stamps logins; before that, the same writer alone for `baseline`.
/// Returns the stats and the rows deleted per second.
pub async fn run(
    db: &Db,
    now: i64,
    batch: i64,
    accounts: u64,
    baseline: Duration,
) -> Result<(SweepStats, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(db.clone(), accounts, Arc::clone(&stop)));
    tokio::time::sleep(baseline).await;
    stop.store(true, Ordering::Relaxed);
    let mut base = w.await??;
    base.sort_by(|a, b| a.total_cmp(b));

    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(db.clone(), accounts, Arc::clone(&stop)));
    let t = Instant::now();
    let rows = db.sessions().delete_expired(now, batch).await?;
    let total = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lat = w.await??;
    lat.sort_by(|a, b| a.total_cmp(b));
    let stats = SweepStats {
        rows_deleted: rows,
        batch_size: batch,
        total_ms: total.as_secs_f64() * 1000.0,
        writer_writes: lat.len() as u64,
        writer_max_ms: lat.last().copied().unwrap_or(f64::NAN),
        writer_p99_ms: quantile(&lat, 0.99),
        writer_p50_ms: quantile(&lat, 0.5),
        baseline_writer_max_ms: base.last().copied().unwrap_or(f64::NAN),
        baseline_writer_p50_ms: quantile(&base, 0.5),
    };
    Ok((stats, rows as f64 / total.as_secs_f64()))
}
