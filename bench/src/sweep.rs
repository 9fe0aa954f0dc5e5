//! The expired-session sweep with a concurrent writer that records how long
//! its short writes wait, and the duration of each of the sweep's batches
//! (from the span persist emits per repository call).

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Result;
use persist::{Db, UserId};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::data::{mix, token, T0};
use crate::report::SweepStats;

/// Short writes (login stamps) in a loop until `stop`, yielding to the
/// runtime between them; returns each one's latency in milliseconds.
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
        // Back to the runtime between writes, as a request handler is while
        // it awaits its socket (D-139): persist's SQLite calls run on the
        // calling task and return ready, so without this the loop would hold
        // its worker for as long as the writer gate stays free.
        tokio::task::yield_now().await;
    }
    Ok(lat)
}

/// Session lookups at `LOOKUP_RATE` per second on a fixed schedule until
/// `stop`; each latency runs from the call's intended send time (a slow call
/// delays the next ones, and that delay counts). A token already swept
/// answers not-found, which is a complete answer.
async fn lookups(db: Db, tokens: u64, stop: Arc<AtomicBool>) -> Result<Vec<f64>> {
    let start = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / LOOKUP_RATE);
    let mut lat = Vec::new();
    let mut k = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let due = start + period * k;
        let early = due.checked_sub(Duration::from_millis(1)).unwrap_or(due);
        tokio::time::sleep_until(early).await;
        while tokio::time::Instant::now() < due {
            tokio::task::yield_now().await;
        }
        let t = token(mix(u64::from(k) ^ 0x5EED) % tokens.max(1));
        match db.sessions().find_by_token(&t).await {
            Ok(_) | Err(persist::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        lat.push(
            tokio::time::Instant::now()
                .saturating_duration_since(due)
                .as_secs_f64()
                * 1000.0,
        );
        k += 1;
    }
    Ok(lat)
}

/// Session lookups per second while the sweep runs.
const LOOKUP_RATE: f64 = 500.0;

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Collects the `elapsed_us` of every `sessions.delete_expired` call event:
/// one per batch, from the call's start (including its wait for the writer
/// connection) to its end.
#[derive(Clone, Default)]
struct BatchTimes(Arc<Mutex<Vec<f64>>>);

impl BatchTimes {
    fn push(&self, ms: f64) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(ms);
    }

    fn take(&self) -> Vec<f64> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The log target of persist's per-call spans and events.
const CALL_TARGET: &str = "persist::repos";

thread_local! {
    /// The collector of the sweep being polled on this thread, if any: only
    /// the sweep's own calls are traced, never the writer's or the lookups'.
    static TIMING: RefCell<Option<BatchTimes>> = const { RefCell::new(None) };
}

/// Polls `fut` with `times` as the collector of its thread for the length of
/// each poll (on whichever worker thread the poll runs).
async fn timed<F: Future>(times: &BatchTimes, fut: F) -> F::Output {
    /// Restores the thread's previous collector, also on a panic.
    struct Restore(Option<BatchTimes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            TIMING.with(|t| *t.borrow_mut() = prev);
        }
    }
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let _restore = Restore(TIMING.with(|t| t.replace(Some(times.clone()))));
        fut.as_mut().poll(cx)
    })
    .await
}

/// The process's global tracing subscriber, installed by the first sweep:
/// persist's call spans and events reach it from every thread, and it
/// enables them only while a sweep is polled ([`timed`]).
///
/// Not a subscriber scoped to the sweep's future: tracing caches each
/// callsite's interest when the callsite is first reached, and while that
/// scoped subscriber is the only one registered, it asks only the subscriber
/// of the thread that reaches it. A writer or lookup call on another worker
/// thread that reached persist's call event first cached `never` for it, and
/// the first sweep of a process recorded no batch.
struct SweepLayer;

/// Installs [`SweepLayer`] as the global subscriber, once per process.
fn install() -> Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(SweepLayer))
                .map_err(|e| format!("cannot time the sweep's batches: {e}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Marks the span of a `sessions.delete_expired` call of a timed sweep.
struct SweepCall(BatchTimes);

#[derive(Default)]
struct Fields {
    op: Option<String>,
    elapsed_us: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "op" {
            self.op = Some(value.to_owned());
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "elapsed_us" {
            self.elapsed_us = Some(value);
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// persist's per-call spans and events (not its trace-level ones).
fn is_call(meta: &Metadata<'_>) -> bool {
    meta.target() == CALL_TARGET && *meta.level() <= Level::DEBUG
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SweepLayer {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // Decided per call, by `enabled`: whether a sweep is polled here.
        if is_call(meta) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        is_call(meta) && TIMING.with(|t| t.borrow().is_some())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if f.op.as_deref() != Some("sessions.delete_expired") {
            return;
        }
        let Some(times) = TIMING.with(|t| t.borrow().clone()) else {
            return;
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SweepCall(times));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let ext = span.extensions();
        let Some(SweepCall(times)) = ext.get::<SweepCall>() else {
            return;
        };
        let mut f = Fields::default();
        event.record(&mut f);
        if let Some(us) = f.elapsed_us {
            times.push(us as f64 / 1000.0);
        }
    }
}

/// Runs `delete_expired(now, batch)` through persist while a writer task
/// stamps logins; before that, the same writer alone for `baseline`.
/// Returns the stats and the rows deleted per second.
pub async fn run(
    db: &Db,
    now: i64,
    batch: i64,
    accounts: u64,
    tokens: u64,
    baseline: Duration,
) -> Result<(SweepStats, f64)> {
    install()?;
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(db.clone(), accounts, Arc::clone(&stop)));
    let l = tokio::spawn(lookups(db.clone(), tokens, Arc::clone(&stop)));
    tokio::time::sleep(baseline).await;
    stop.store(true, Ordering::Relaxed);
    let mut base = w.await??;
    base.sort_by(|a, b| a.total_cmp(b));
    let mut base_lookups = l.await??;
    base_lookups.sort_by(|a, b| a.total_cmp(b));

    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(db.clone(), accounts, Arc::clone(&stop)));
    let l = tokio::spawn(lookups(db.clone(), tokens, Arc::clone(&stop)));
    // Only the sweep's own calls are traced: its future is timed, the writer
    // and lookup tasks and every other measurement run untraced.
    let times = BatchTimes::default();
    let t = Instant::now();
    let rows = timed(&times, db.sessions().delete_expired(now, batch)).await?;
    let total = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lat = w.await??;
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut looked = l.await??;
    looked.sort_by(|a, b| a.total_cmp(b));
    let mut batches = times.take();
    batches.sort_by(|a, b| a.total_cmp(b));
    let stats = SweepStats {
        rows_deleted: rows,
        batch_size: batch,
        batches: batches.len() as u64,
        batch_max_ms: batches.last().copied().unwrap_or(f64::NAN),
        batch_p50_ms: quantile(&batches, 0.5),
        total_ms: total.as_secs_f64() * 1000.0,
        writer_writes: lat.len() as u64,
        writer_max_ms: lat.last().copied().unwrap_or(f64::NAN),
        writer_p99_ms: quantile(&lat, 0.99),
        writer_p50_ms: quantile(&lat, 0.5),
        baseline_writer_max_ms: base.last().copied().unwrap_or(f64::NAN),
        baseline_writer_p99_ms: quantile(&base, 0.99),
        baseline_writer_p50_ms: quantile(&base, 0.5),
        lookups: looked.len() as u64,
        lookup_p50_ms: quantile(&looked, 0.5),
        lookup_p99_ms: quantile(&looked, 0.99),
        lookup_max_ms: looked.last().copied().unwrap_or(f64::NAN),
        baseline_lookup_p50_ms: quantile(&base_lookups, 0.5),
        baseline_lookup_p99_ms: quantile(&base_lookups, 0.99),
    };
    Ok((stats, rows as f64 / total.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::bench_sqlite::open_persist;
    use crate::data::{digest, seed_players};
    use crate::raw_sqlite::{self, Sync};

    /// Expired sessions per sweep (several batches of [`BATCH`]).
    const SESSIONS: u64 = 3000;
    const BATCH: i64 = 100;
    const ACCOUNTS: i64 = 8;

    /// Adds `SESSIONS` sessions of the `ACCOUNTS` players, all expired at
    /// `T0 + 7200`.
    fn expired_sessions(path: &Path) -> Result<()> {
        let mut c = raw_sqlite::connect(path, Sync::Normal)?;
        let tx = c.transaction()?;
        {
            let mut st = tx.prepare(
                "INSERT INTO sessions (token, user_id, expires_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for i in 0..SESSIONS {
                let d = digest(&token(i));
                let user = 1 + (i % ACCOUNTS as u64) as i64;
                st.execute(rusqlite::params![&d[..], user, T0 + 60, T0])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Session lookups back to back until `stop`.
    async fn lookups_flat_out(db: Db, stop: Arc<AtomicBool>) -> Result<()> {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            match db.sessions().find_by_token(&token(i % SESSIONS)).await {
                Ok(_) | Err(persist::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            i += 1;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// The first sweep of the process records its batches, as does the
    /// next one, while the writer and the lookups run beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_sweep_records_its_batches_the_first_one_too() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sweep.db");
        let db = open_persist(&path, Sync::Full).await?;
        seed_players(&db, ACCOUNTS, "sweep").await?;
        for round in 0..2 {
            expired_sessions(&path)?;
            // More persist calls in flight on the other worker threads while
            // the sweep starts, as in a benchmark run.
            let stop = Arc::new(AtomicBool::new(false));
            let busy: Vec<_> = (0..2)
                .map(|_| tokio::spawn(lookups_flat_out(db.clone(), Arc::clone(&stop))))
                .collect();
            let out = run(
                &db,
                T0 + 7200,
                BATCH,
                ACCOUNTS as u64,
                SESSIONS,
                Duration::from_millis(50),
            )
            .await;
            stop.store(true, Ordering::Relaxed);
            for b in busy {
                b.await??;
            }
            let (stats, _) = out?;
            assert_eq!(stats.rows_deleted, SESSIONS, "round {round}");
            assert!(stats.batches > 0, "round {round}: no batch recorded");
            assert!(stats.batch_max_ms.is_finite(), "round {round}");
        }
        db.close().await;
        Ok(())
    }
}
