//! The expired-session sweep with a concurrent writer that records how long
//! its short writes wait, and the duration of each of the sweep's batches
//! (from the span persist emits per repository call).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use anyhow::Result;
use persist::{Db, UserId};
use tracing::field::{Field, Visit};
use tracing::instrument::WithSubscriber;
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::data::{mix, token, T0};
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

/// Marks the span of a `sessions.delete_expired` call.
struct SweepCall;

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

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for BatchTimes {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if f.op.as_deref() == Some("sessions.delete_expired") {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(SweepCall);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        if span.extensions().get::<SweepCall>().is_none() {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if let Some(us) = f.elapsed_us {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(us as f64 / 1000.0);
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
    // Only the sweep's own calls are traced: the subscriber is scoped to its
    // future, so the writer task and every other measurement run untraced.
    let times = BatchTimes::default();
    let subscriber = tracing_subscriber::registry().with(times.clone());
    let t = Instant::now();
    let rows = db
        .sessions()
        .delete_expired(now, batch)
        .with_subscriber(subscriber)
        .await?;
    let total = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lat = w.await??;
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut looked = l.await??;
    looked.sort_by(|a, b| a.total_cmp(b));
    let mut batches = std::mem::take(
        &mut *times
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
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
