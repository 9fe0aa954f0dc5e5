//! Metrics through the `metrics` facade: the names, units and label sets of
//! every metric the crate emits, in one list ([`METRICS`]) that
//! `docs/OBSERVABILITY.md` is checked against, and the helpers that record
//! them. Nothing is recorded unless the application installs a recorder
//! (`metrics::set_global_recorder`, or an exporter's `install`).
//!
//! Names follow the Prometheus and OpenTelemetry database conventions:
//! `db_client_*`, the unit in the name, labels `db_system` (`sqlite` or
//! `postgresql`), `db_operation` (`accounts.create`, ...), `outcome`, `pool`,
//! `reason`. Every label takes values from a fixed set: never a user id, an
//! email or a token.

use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram, Unit};

use crate::backend::BackendKind;
use crate::error::Error;

/// Latency of one repository call.
pub const OPERATION_DURATION: &str = "db_client_operation_duration_seconds";
/// Repository calls by outcome.
pub const OPERATIONS: &str = "db_client_operations_total";
/// Connections of a pool in use or idle (`state`).
pub const CONNECTIONS_USAGE: &str = "db_client_connections_usage";
/// Most connections a pool holds.
pub const CONNECTIONS_MAX: &str = "db_client_connections_max";
/// Callers waiting for a connection.
pub const CONNECTIONS_PENDING: &str = "db_client_connections_pending_requests";
/// Time spent waiting for a connection.
pub const CONNECTIONS_WAIT: &str = "db_client_connections_wait_time_seconds";
/// Connections opened.
pub const CONNECTIONS_OPENED: &str = "db_client_connections_opened_total";
/// Connections closed when the handle closes.
pub const CONNECTIONS_CLOSED: &str = "db_client_connections_closed_total";
/// Connections thrown away before the handle closed.
pub const CONNECTIONS_DISCARDED: &str = "db_client_connections_discarded_total";
/// Reads in flight on the shared read lanes.
pub const SHARED_READS_IN_FLIGHT: &str = "db_client_shared_reads_in_flight";
/// Duration of a unit of work.
pub const UNIT_OF_WORK_DURATION: &str = "db_client_unit_of_work_duration_seconds";
/// Units of work by outcome.
pub const UNITS_OF_WORK: &str = "db_client_units_of_work_total";
/// Highest migration version applied.
pub const SCHEMA_VERSION: &str = "db_schema_version";
/// Shipped migrations not yet applied.
pub const SCHEMA_PENDING: &str = "db_schema_migrations_pending";
/// Duration of the last migration run.
pub const MIGRATION_LAST_RUN: &str = "db_schema_migration_last_run_duration_seconds";
/// Expired sessions deleted by sweeps.
pub const SWEEP_DELETED: &str = "db_sessions_swept_total";
/// Duration of one sweep batch.
pub const SWEEP_BATCH_DURATION: &str = "db_sessions_sweep_batch_duration_seconds";

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

impl MetricKind {
    /// `counter`, `gauge` or `histogram`.
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric the crate emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricInfo {
    /// Its name, unit included.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// `seconds`, `connections`, `calls`, `rows`, ...
    pub unit: &'static str,
    /// Its labels, in order.
    pub labels: &'static [&'static str],
    /// What it measures.
    pub help: &'static str,
}

const fn m(
    name: &'static str,
    kind: MetricKind,
    unit: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

use MetricKind::{Counter, Gauge, Histogram};

const SYS: &[&str] = &["db_system"];
const POOL: &[&str] = &["db_system", "pool"];

/// Every metric the crate emits (`docs/OBSERVABILITY.md` lists the same).
pub const METRICS: &[MetricInfo] = &[
    m(OPERATION_DURATION, Histogram, "seconds", &["db_system", "db_operation"],
      "Latency of one repository call, connection wait included"),
    m(OPERATIONS, Counter, "calls", &["db_system", "db_operation", "outcome"],
      "Repository calls by outcome: ok or the error kind"),
    m(CONNECTIONS_USAGE, Gauge, "connections", &["db_system", "pool", "state"],
      "Connections of a pool in use (state=used) or idle (state=idle)"),
    m(CONNECTIONS_MAX, Gauge, "connections", POOL, "Most connections the pool holds"),
    m(CONNECTIONS_PENDING, Gauge, "requests", POOL, "Callers waiting for a connection"),
    m(CONNECTIONS_WAIT, Histogram, "seconds", POOL, "Time a caller waited for a connection"),
    m(CONNECTIONS_OPENED, Counter, "connections", POOL, "Connections opened"),
    m(CONNECTIONS_CLOSED, Counter, "connections", POOL,
      "Connections closed because the handle was closed"),
    m(CONNECTIONS_DISCARDED, Counter, "connections", &["db_system", "pool", "reason"],
      "Connections thrown away: closed_by_server, deadline (missed the client deadline), unknown_state (a failed commit or rollback), after_migration (the migrator's own)"),
    m(SHARED_READS_IN_FLIGHT, Gauge, "requests", SYS,
      "Reads in flight on the shared read lanes (their queue depth)"),
    m(UNIT_OF_WORK_DURATION, Histogram, "seconds", &["db_system", "outcome"],
      "Duration of a unit of work, begin to end"),
    m(UNITS_OF_WORK, Counter, "units", &["db_system", "outcome"],
      "Units of work by outcome: committed, rolled_back or aborted"),
    m(SCHEMA_VERSION, Gauge, "version", SYS, "Highest migration version applied"),
    m(SCHEMA_PENDING, Gauge, "migrations", SYS, "Shipped migrations not yet applied"),
    m(MIGRATION_LAST_RUN, Gauge, "seconds", SYS, "Duration of the last migration run"),
    m(SWEEP_DELETED, Counter, "rows", SYS, "Expired sessions deleted by sweeps"),
    m(SWEEP_BATCH_DURATION, Histogram, "seconds", SYS, "Duration of one sweep batch"),
];

/// Describes every metric (help text and unit) to the installed recorder.
/// Optional: exporters show the descriptions, nothing else depends on them.
pub fn describe_metrics() {
    for info in METRICS {
        let unit = match info.unit {
            "seconds" => Some(Unit::Seconds),
            "connections" | "calls" | "units" | "rows" | "requests" | "migrations" => {
                Some(Unit::Count)
            }
            _ => None,
        };
        let help = info.help;
        match (info.kind, unit) {
            (Counter, Some(u)) => metrics::describe_counter!(info.name, u, help),
            (Counter, None) => metrics::describe_counter!(info.name, help),
            (Gauge, Some(u)) => metrics::describe_gauge!(info.name, u, help),
            (Gauge, None) => metrics::describe_gauge!(info.name, help),
            (Histogram, Some(u)) => metrics::describe_histogram!(info.name, u, help),
            (Histogram, None) => metrics::describe_histogram!(info.name, help),
        }
    }
}

/// The `db_system` label of a backend (OpenTelemetry's values).
pub(crate) fn system(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Sqlite => "sqlite",
        BackendKind::Postgres => "postgresql",
    }
}

/// The `outcome` label of a call's result.
pub(crate) fn outcome<T>(out: &Result<T, Error>) -> &'static str {
    match out {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

/// A per-thread cache of metric handles, so recording costs no registry
/// look-up. Every key starts with the address of the recorder in force (the
/// global one never changes once set; a new local recorder, used by tests,
/// gets entries of its own).
type HandleCache<K, V> = std::cell::RefCell<std::collections::HashMap<K, V>>;

/// Looks `key` up in `cache` (registering its handles with `make` when
/// missing; the cache is cleared when it holds `cap` entries) and passes the
/// handles to `record`. Thread-local storage gone (a thread ending) or in
/// use: the handles are registered for this one record, uncached.
fn with_handles<K: std::hash::Hash + Eq + Copy, V>(
    cache: &'static std::thread::LocalKey<HandleCache<K, V>>,
    cap: usize,
    key: K,
    make: impl FnOnce() -> V,
    record: impl Fn(&V),
) {
    use std::collections::hash_map::Entry;
    let mut make = Some(make);
    let cached = cache.try_with(|entries| {
        let Ok(mut entries) = entries.try_borrow_mut() else {
            return false;
        };
        // The full-cache check looks the key up only when the cache is full;
        // a hit costs one look-up.
        if entries.len() >= cap && !entries.contains_key(&key) {
            entries.clear();
        }
        match entries.entry(key) {
            Entry::Occupied(e) => record(e.get()),
            Entry::Vacant(e) => {
                let Some(make) = make.take() else {
                    return false;
                };
                record(e.insert(make()));
            }
        }
        true
    });
    if !matches!(cached, Ok(true)) {
        if let Some(make) = make.take() {
            record(&make());
        }
    }
}

/// The per-call handles of one (handle, recorder, operation, outcome).
type CallHandles = (metrics::Histogram, metrics::Counter);
/// Handle id, recorder address, operation and outcome (address, length).
type CallKey = (u64, usize, usize, usize, usize, usize);

thread_local! {
    /// Per-call metric handles, keyed by the `Db`'s id (unique in the
    /// process), the recorder, and the operation and outcome strings.
    static CALLS: HandleCache<CallKey, CallHandles> = HandleCache::default();
}

/// Most cached entries per thread (handles opened and closed many times,
/// as in tests, would grow it); cleared when reached.
const CALLS_CAP: usize = 4096;

/// Records one repository call made on the handle `db_id`.
pub(crate) fn call(
    db_id: u64,
    sys: &'static str,
    op: &'static str,
    outcome: &'static str,
    took: Duration,
) {
    let key = (
        db_id,
        recorder_address(),
        op.as_ptr() as usize,
        op.len(),
        outcome.as_ptr() as usize,
        outcome.len(),
    );
    with_handles(
        &CALLS,
        CALLS_CAP,
        key,
        || call_handles(sys, op, outcome),
        |(h, c)| {
            h.record(took);
            c.increment(1);
        },
    );
}

fn call_handles(sys: &'static str, op: &'static str, outcome: &'static str) -> CallHandles {
    (
        histogram!(OPERATION_DURATION, "db_system" => sys, "db_operation" => op),
        counter!(OPERATIONS, "db_system" => sys, "db_operation" => op, "outcome" => outcome),
    )
}

/// Recorder address, system and pool label (address, length).
type PoolKey = (usize, usize, usize, usize, usize);

thread_local! {
    /// The usage gauges of each pool (used, idle, max), set at every
    /// checkout.
    static POOLS: HandleCache<PoolKey, [metrics::Gauge; 3]> = HandleCache::default();
}

/// Most cached pool entries per thread; cleared when reached.
const POOLS_CAP: usize = 64;

/// Records the usage of a pool: `used` and `idle` connections of at most `max`.
pub(crate) fn pool_usage(
    sys: &'static str,
    pool: &'static str,
    used: usize,
    idle: usize,
    max: usize,
) {
    let key = (
        recorder_address(),
        sys.as_ptr() as usize,
        sys.len(),
        pool.as_ptr() as usize,
        pool.len(),
    );
    with_handles(
        &POOLS,
        POOLS_CAP,
        key,
        || pool_handles(sys, pool),
        |g| {
            g[0].set(used as f64);
            g[1].set(idle as f64);
            g[2].set(max as f64);
        },
    );
}

fn pool_handles(sys: &'static str, pool: &'static str) -> [metrics::Gauge; 3] {
    [
        gauge!(CONNECTIONS_USAGE, "db_system" => sys, "pool" => pool, "state" => "used"),
        gauge!(CONNECTIONS_USAGE, "db_system" => sys, "pool" => pool, "state" => "idle"),
        gauge!(CONNECTIONS_MAX, "db_system" => sys, "pool" => pool),
    ]
}

/// The address of the recorder in force (the key of the handle caches).
fn recorder_address() -> usize {
    metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>() as usize)
}

/// Counts `n` connections of a pool opened.
pub(crate) fn opened(sys: &'static str, pool: &'static str, n: u64) {
    counter!(CONNECTIONS_OPENED, "db_system" => sys, "pool" => pool).increment(n);
}

/// Counts `n` connections of a pool closed with the handle.
pub(crate) fn closed(sys: &'static str, pool: &'static str, n: u64) {
    counter!(CONNECTIONS_CLOSED, "db_system" => sys, "pool" => pool).increment(n);
}

/// Counts a connection thrown away: `reason` is `closed_by_server`,
/// `deadline`, `unknown_state` or `after_migration`.
pub(crate) fn discarded(sys: &'static str, pool: &'static str, reason: &'static str) {
    counter!(CONNECTIONS_DISCARDED, "db_system" => sys, "pool" => pool, "reason" => reason)
        .increment(1);
}

/// Records a wait for a connection that took `took` (zero: one was free).
pub(crate) fn waited(sys: &'static str, pool: &'static str, took: Duration) {
    histogram!(CONNECTIONS_WAIT, "db_system" => sys, "pool" => pool).record(took);
}

/// A caller waiting for a connection: counted in the pending gauge from
/// [`Waiting::start`] until [`Waiting::done`] (or drop, if the wait is
/// cancelled), which also records the wait.
pub(crate) struct Waiting {
    sys: &'static str,
    pool: &'static str,
    since: Instant,
    open: bool,
}

impl Waiting {
    pub(crate) fn start(sys: &'static str, pool: &'static str) -> Self {
        gauge!(CONNECTIONS_PENDING, "db_system" => sys, "pool" => pool).increment(1.0);
        Waiting {
            sys,
            pool,
            since: Instant::now(),
            open: true,
        }
    }

    fn end(&mut self) {
        if std::mem::take(&mut self.open) {
            gauge!(CONNECTIONS_PENDING, "db_system" => self.sys, "pool" => self.pool)
                .decrement(1.0);
        }
    }

    /// The wait is over (a connection was obtained, or not).
    pub(crate) fn done(mut self) {
        self.end();
        waited(self.sys, self.pool, self.since.elapsed());
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.end();
    }
}

/// Records the reads in flight on the shared read lanes.
pub(crate) fn shared_reads(in_flight: usize) {
    gauge!(SHARED_READS_IN_FLIGHT, "db_system" => "postgresql").set(in_flight as f64);
}

/// Records a unit of work that ended: `outcome` is `committed`,
/// `rolled_back` or `aborted`.
pub(crate) fn unit_of_work(sys: &'static str, outcome: &'static str, took: Duration) {
    histogram!(UNIT_OF_WORK_DURATION, "db_system" => sys, "outcome" => outcome).record(took);
    counter!(UNITS_OF_WORK, "db_system" => sys, "outcome" => outcome).increment(1);
}

/// Records the schema state: highest version applied and migrations pending.
pub(crate) fn schema(sys: &'static str, version: i64, pending: usize) {
    gauge!(SCHEMA_VERSION, "db_system" => sys).set(version as f64);
    gauge!(SCHEMA_PENDING, "db_system" => sys).set(pending as f64);
}

/// Records the duration of a migration run.
pub(crate) fn migration_run(sys: &'static str, took: Duration) {
    gauge!(MIGRATION_LAST_RUN, "db_system" => sys).set(took.as_secs_f64());
}

/// Records one sweep batch: rows deleted and its duration.
pub(crate) fn sweep_batch(sys: &'static str, deleted: u64, took: Duration) {
    counter!(SWEEP_DELETED, "db_system" => sys).increment(deleted);
    histogram!(SWEEP_BATCH_DURATION, "db_system" => sys).record(took);
}
