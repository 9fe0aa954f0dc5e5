//! Records, the stdout tables, the JSON file and the targets with their
//! verdicts.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::{self, Estimate, Verdict};

/// One measured figure (one implementation on one cell, or one special
/// measurement: sweep, RSS, mixed workload, cold start).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Process run this record comes from (0 unless `--runs`).
    pub run: u32,
    /// `sqlite` | `postgres`.
    pub backend: &'static str,
    /// SQLite `synchronous` level (`full` | `normal`); absent on PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<&'static str>,
    /// `main` (the issue's data set), `growth`, `many_sessions`, `mixed` or
    /// `experiment` (design variants).
    pub data_set: &'static str,
    /// Rows in `sessions` while this was measured.
    pub sessions_in_table: u64,
    pub operation: String,
    /// `persist` | `raw` | `sqlx`.
    pub implementation: &'static str,
    /// Connection setup of the implementation.
    pub variant: &'static str,
    /// Concurrent tasks.
    pub concurrency: usize,
    /// Mean of the samples (transactions per second for `*_tx`; the 1000-row
    /// transaction counts once).
    pub ops_per_sec: f64,
    /// 95 % bootstrap interval of the mean over this run's windows.
    pub ci_lo: f64,
    pub ci_hi: f64,
    /// Rate of each measured window, in round order.
    pub samples: Vec<f64>,
    /// Peak RSS (VmHWM, KiB) of a child process running only this
    /// implementation on this backend (see `rss_workload` records).
    pub peak_rss_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss: Option<RssStats>,
    /// Per-batch timing of a raw sweep (design variant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batches: Option<BatchStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed: Option<MixedStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold: Option<ColdStats>,
}

/// A raw sweep, timed batch by batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchStats {
    pub rows: u64,
    pub batch_size: i64,
    pub batches: u64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub total_ms: f64,
}

/// A figure written as JSON `null` because it was not measured (`NaN`, which
/// JSON cannot hold) reads back as `NaN`, so `--combine` reads every run.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The expired-session sweep with a concurrent writer and concurrent
/// session lookups.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepStats {
    pub rows_deleted: u64,
    pub batch_size: i64,
    #[serde(deserialize_with = "nan_if_null")]
    pub total_ms: f64,
    /// The sweep's batches (persist sizes them by time, up to `batch_size`):
    /// how many, and how long each call took, wait for the writer included.
    pub batches: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub batch_max_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub batch_p50_ms: f64,
    /// The concurrent writer's latencies during the sweep.
    pub writer_writes: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub writer_max_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub writer_p99_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub writer_p50_ms: f64,
    /// The same writer without a sweep running, just before.
    #[serde(deserialize_with = "nan_if_null")]
    pub baseline_writer_max_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub baseline_writer_p99_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub baseline_writer_p50_ms: f64,
    /// Session lookups at a constant rate (open loop, latency from the
    /// intended send time) during the sweep, and without it.
    pub lookups: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub lookup_p50_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub lookup_p99_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub lookup_max_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub baseline_lookup_p50_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub baseline_lookup_p99_ms: f64,
}

/// A child process that ran one implementation only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RssStats {
    pub peak_rss_kib: u64,
    /// VmHWM of a child that started the runtime and opened nothing.
    pub baseline_rss_kib: u64,
    pub workload: String,
    pub seconds: f64,
}

/// Latency of one operation of the mixed workload at one arrival rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpLatency {
    pub op: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The mixed open-loop workload at one offered arrival rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MixedStats {
    /// Offered (intended) calls per second.
    pub offered: f64,
    /// Completed calls per second over the time the schedule took to drain.
    pub achieved: f64,
    pub seconds: f64,
    /// p99 over every call.
    pub all_p99_ms: f64,
    /// Sustained: achieved >= 95 % of offered and p99 over all calls <=
    /// the bound.
    pub sustained: bool,
    pub ops: Vec<OpLatency>,
}

/// First calls after `open`, median over repetitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdStats {
    pub repetitions: u32,
    /// `open` (connect, settings, statements a driver prepares up front).
    pub open_ms: f64,
    /// The first session lookup after it.
    pub first_ms: f64,
    /// The second one (warm).
    pub second_ms: f64,
}

#[derive(Default)]
pub struct Results {
    pub records: Vec<Record>,
    /// How each implementation was set up and its durability as queried.
    pub setup: Vec<String>,
}

impl Record {
    /// An empty record of one implementation (fields filled by the caller).
    pub fn blank(
        backend: &'static str,
        durability: Option<&'static str>,
        data_set: &'static str,
        operation: &str,
        implementation: &'static str,
        variant: &'static str,
    ) -> Self {
        Record {
            run: 0,
            backend,
            durability,
            data_set,
            sessions_in_table: 0,
            operation: operation.to_string(),
            implementation,
            variant,
            concurrency: 1,
            ops_per_sec: f64::NAN,
            ci_lo: f64::NAN,
            ci_hi: f64::NAN,
            samples: vec![],
            peak_rss_kib: None,
            sweep: None,
            rss: None,
            batches: None,
            mixed: None,
            cold: None,
        }
    }

    /// The throughput figure of `e` on one cell: the mean of `samples`.
    #[allow(clippy::too_many_arguments)]
    pub fn cell(
        backend: &'static str,
        durability: Option<&'static str>,
        data_set: &'static str,
        sessions: u64,
        op: crate::ops::Op,
        c: usize,
        e: &crate::harness::Entry,
        samples: Vec<f64>,
    ) -> Self {
        let est = stats::mean_ci(std::slice::from_ref(&samples));
        Record {
            sessions_in_table: sessions,
            concurrency: c,
            ops_per_sec: est.value,
            ci_lo: est.lo,
            ci_hi: est.hi,
            samples,
            ..Record::blank(
                backend,
                durability,
                data_set,
                op.name(),
                e.implementation,
                e.variant,
            )
        }
    }

    /// A throughput cell (not a special measurement).
    pub fn is_cell(&self) -> bool {
        self.data_set != "derived"
            && self.sweep.is_none()
            && self.rss.is_none()
            && self.batches.is_none()
            && self.mixed.is_none()
            && self.cold.is_none()
    }
}

/// Identifies a cell and, optionally, one implementation in it.
#[derive(Clone, Copy)]
pub struct Key<'a> {
    pub backend: &'a str,
    pub durability: Option<&'a str>,
    pub data_set: &'a str,
    pub sessions: Option<u64>,
    pub op: &'a str,
    pub implementation: &'a str,
    pub variant: Option<&'a str>,
    pub concurrency: usize,
}

impl Key<'_> {
    fn matches(&self, r: &Record) -> bool {
        r.is_cell()
            && r.backend == self.backend
            && r.durability == self.durability
            && r.data_set == self.data_set
            && self.sessions.is_none_or(|n| n == r.sessions_in_table)
            && r.operation == self.op
            && r.implementation == self.implementation
            && self.variant.is_none_or(|v| v == r.variant)
            && r.concurrency == self.concurrency
    }
}

impl Results {
    pub fn push(&mut self, r: Record) {
        self.records.push(r);
    }

    /// Process runs these results hold.
    pub fn runs(&self) -> usize {
        self.records
            .iter()
            .map(|r| r.run)
            .max()
            .map_or(0, |m| m as usize + 1)
    }

    /// The windows of one figure, one vector per run (runs in order).
    pub fn samples(&self, k: &Key<'_>) -> Vec<Vec<f64>> {
        (0..self.runs() as u32)
            .map(|run| {
                self.records
                    .iter()
                    .find(|r| r.run == run && k.matches(r))
                    .map(|r| r.samples.clone())
                    .unwrap_or_default()
            })
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// Mean of one figure over every run.
    pub fn mean(&self, k: &Key<'_>) -> Option<f64> {
        let s = self.samples(k);
        (!s.is_empty()).then(|| stats::mean_ci(&s).value)
    }

    /// Attaches each backend's per-implementation peak RSS to its records.
    pub fn attach_rss(&mut self) {
        let rss: Vec<(u32, &'static str, &'static str, u64)> = self
            .records
            .iter()
            .filter(|r| r.data_set == "main")
            .filter_map(|r| {
                r.rss
                    .as_ref()
                    .map(|s| (r.run, r.backend, r.implementation, s.peak_rss_kib))
            })
            .collect();
        for r in &mut self.records {
            if let Some((_, _, _, kib)) = rss
                .iter()
                .find(|(run, b, i, _)| *run == r.run && *b == r.backend && *i == r.implementation)
            {
                r.peak_rss_kib = Some(*kib);
            }
        }
    }
}

pub fn fmt_rate(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn fmt_count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// A ratio with its interval: `0.93 [0.90, 0.96]`.
pub fn fmt_est(e: Option<Estimate>) -> String {
    match e {
        Some(e) if e.value.is_finite() => {
            format!("{:.2} [{:.2},{:.2}]", e.value, e.lo, e.hi)
        }
        _ => "-".into(),
    }
}

/// The raw figure persist is judged against in a cell: SQLite, the raw
/// driver with persist's connection shape (one writer + as many readers as
/// persist opened); PostgreSQL, one connection when sequential, else the
/// raw shape with the highest mean in the cell.
pub fn raw_comparator(res: &Results, k: &Key<'_>) -> Option<&'static str> {
    let variants: Vec<&'static str> = {
        let mut v: Vec<&'static str> = res
            .records
            .iter()
            .filter(|r| {
                Key {
                    implementation: "raw",
                    variant: None,
                    ..*k
                }
                .matches(r)
            })
            .map(|r| r.variant)
            .collect();
        v.dedup();
        v.sort_unstable();
        v.dedup();
        v
    };
    if k.backend == "sqlite" {
        return [crate::RAW_FAIR, crate::RAW_ONE]
            .into_iter()
            .find(|v| variants.contains(v));
    }
    if k.concurrency == 1 && variants.contains(&crate::RAW_ONE) {
        return Some(crate::RAW_ONE);
    }
    variants
        .into_iter()
        .filter_map(|v| {
            res.mean(&Key {
                implementation: "raw",
                variant: Some(v),
                ..*k
            })
            .map(|m| (v, m))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(v, _)| v)
}

/// persist over another implementation of the same cell, paired by window.
pub fn persist_over(
    res: &Results,
    k: &Key<'_>,
    implementation: &str,
    variant: Option<&str>,
) -> Option<Estimate> {
    let p = res.samples(&Key {
        implementation: "persist",
        variant: None,
        ..*k
    });
    let o = res.samples(&Key {
        implementation,
        variant,
        ..*k
    });
    (!p.is_empty() && !o.is_empty() && p.len() == o.len()).then(|| stats::paired_ratio(&p, &o))
}

/// The throughput table: one row per (backend, durability, data set,
/// operation, concurrency).
pub fn table(res: &Results) -> String {
    let mut cells: Vec<&Record> = Vec::new();
    for r in res
        .records
        .iter()
        .filter(|r| r.is_cell() && r.data_set != "experiment")
    {
        if !cells.iter().any(|k| {
            k.backend == r.backend
                && k.durability == r.durability
                && k.data_set == r.data_set
                && k.sessions_in_table == r.sessions_in_table
                && k.operation == r.operation
                && k.concurrency == r.concurrency
        }) {
            cells.push(r);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<6} {:<14} {:<20} {:>4} | {:>8} {:>8} {:>8} {:>8} {:>8} | {:<18} {:<18} {:<18} | raw =",
        "backend",
        "sync",
        "data set",
        "operation",
        "conc",
        "persist",
        "raw",
        "raw 1c",
        "sqlx",
        "sqlx tun",
        "p/raw [95% CI]",
        "p/sqlx",
        "p/sqlx tuned",
    );
    let _ = writeln!(out, "{}", "-".repeat(170));
    for c in cells {
        let k = Key {
            backend: c.backend,
            durability: c.durability,
            data_set: c.data_set,
            sessions: Some(c.sessions_in_table),
            op: &c.operation,
            implementation: "persist",
            variant: None,
            concurrency: c.concurrency,
        };
        let m = |imp: &'static str, v: Option<&str>| {
            res.mean(&Key {
                implementation: imp,
                variant: v,
                ..k
            })
            .map_or_else(|| "-".into(), fmt_rate)
        };
        let raw = raw_comparator(res, &k);
        let (sqlx_d, sqlx_t) = if c.backend == "sqlite" {
            (crate::SQLX_DEFAULT, crate::SQLX_TUNED_SQLITE)
        } else {
            (crate::SQLX_DEFAULT, crate::SQLX_TUNED_PG)
        };
        let data = match k.data_set {
            "main" => "main".to_string(),
            d => format!("{d} {}", fmt_count(c.sessions_in_table)),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<6} {:<14} {:<20} {:>4} | {:>8} {:>8} {:>8} {:>8} {:>8} | {:<18} {:<18} {:<18} | {}",
            c.backend,
            c.durability.unwrap_or("-"),
            data,
            c.operation,
            c.concurrency,
            m("persist", None),
            raw.map_or_else(|| "-".into(), |v| m("raw", Some(v))),
            m("raw", Some(crate::RAW_ONE)),
            m("sqlx", Some(sqlx_d)),
            m("sqlx", Some(sqlx_t)),
            fmt_est(raw.and_then(|v| persist_over(res, &k, "raw", Some(v)))),
            fmt_est(persist_over(res, &k, "sqlx", Some(sqlx_d))),
            fmt_est(persist_over(res, &k, "sqlx", Some(sqlx_t))),
            raw.unwrap_or("-"),
        );
    }
    out
}

/// Run-to-run spread: for each cell, persist/raw per process run.
pub fn spread_table(res: &Results) -> String {
    let mut out = String::new();
    let runs = res.runs() as u32;
    if runs < 2 {
        return out;
    }
    for r in res
        .records
        .iter()
        .filter(|r| r.run == 0 && r.is_cell() && r.implementation == "persist")
        .filter(|r| r.data_set != "experiment")
    {
        let k = Key {
            backend: r.backend,
            durability: r.durability,
            data_set: r.data_set,
            sessions: Some(r.sessions_in_table),
            op: &r.operation,
            implementation: "persist",
            variant: None,
            concurrency: r.concurrency,
        };
        let Some(raw) = raw_comparator(res, &k) else {
            continue;
        };
        let per_run: Vec<f64> = (0..runs)
            .filter_map(|run| {
                let one = |imp: &str, v: Option<&str>| {
                    res.records
                        .iter()
                        .find(|x| {
                            x.run == run
                                && Key {
                                    implementation: imp,
                                    variant: v,
                                    ..k
                                }
                                .matches(x)
                        })
                        .map(|x| x.ops_per_sec)
                };
                Some(one("persist", None)? / one("raw", Some(raw))?)
            })
            .collect();
        let lo = per_run.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per_run.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = writeln!(
            out,
            "{:<8} {:<6} {:<14} {:<20} {:>4} | persist/raw per run: {} (range {:.2}-{:.2}, spread {:.0} %)",
            k.backend,
            k.durability.unwrap_or("-"),
            k.data_set,
            k.op,
            k.concurrency,
            per_run
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            lo,
            hi,
            100.0 * (hi - lo) / ((hi + lo) / 2.0)
        );
    }
    out
}

/// Design variants (data set `experiment`), one line each.
pub fn experiments_table(res: &Results) -> String {
    let mut out = String::new();
    let rows = res.records.iter().filter(|r| {
        r.data_set == "experiment" && r.sweep.is_none() && r.batches.is_none() && r.rss.is_none()
    });
    for r in rows {
        let _ = writeln!(
            out,
            "{:<8} {:<15} {:>5} sessions {:>4} tasks | {:<8} {:<31} {:>9}",
            r.backend,
            r.operation,
            fmt_count(r.sessions_in_table),
            r.concurrency,
            r.implementation,
            r.variant,
            fmt_rate(r.ops_per_sec)
        );
    }
    out
}

pub fn sweep_table(res: &Results) -> String {
    let mut out = String::new();
    for r in res.records.iter() {
        let Some(s) = &r.sweep else { continue };
        let _ = writeln!(
            out,
            "{:<8} {:<10} sweep of {} expired sessions, batch {}: {:.0} ms total ({} rows/s); \
             {} batches, longest {:.1} ms, p50 {:.1} ms; \
             concurrent writer: {} writes, max {:.1} ms, p99 {:.1} ms, p50 {:.2} ms \
             (without sweep: max {:.1} ms, p99 {:.1} ms, p50 {:.2} ms); \
             session lookups (open loop): {} calls, p99 {:.2} ms, p50 {:.2} ms, max {:.1} ms \
             (without sweep: p99 {:.2} ms, p50 {:.2} ms){}{}",
            r.backend,
            if r.data_set == "experiment" {
                "(variant)"
            } else {
                ""
            },
            fmt_count(s.rows_deleted),
            s.batch_size,
            s.total_ms,
            fmt_rate(r.ops_per_sec),
            s.batches,
            s.batch_max_ms,
            s.batch_p50_ms,
            s.writer_writes,
            s.writer_max_ms,
            s.writer_p99_ms,
            s.writer_p50_ms,
            s.baseline_writer_max_ms,
            s.baseline_writer_p99_ms,
            s.baseline_writer_p50_ms,
            s.lookups,
            s.lookup_p99_ms,
            s.lookup_p50_ms,
            s.lookup_max_ms,
            s.baseline_lookup_p99_ms,
            s.baseline_lookup_p50_ms,
            run_tag(res, r),
            if r.variant.contains("checkpoint") {
                format!(" [{}]", r.variant)
            } else {
                String::new()
            },
        );
    }
    out
}

pub fn batches_table(res: &Results) -> String {
    let mut out = String::new();
    for r in res.records.iter() {
        let Some(b) = &r.batches else { continue };
        let _ = writeln!(
            out,
            "{:<8} (variant)  raw sweep of {} rows, batch {}, {}: {} batches, \
             each holding the write lock p50 {:.1} ms, max {:.1} ms; {:.0} ms total",
            r.backend,
            fmt_count(b.rows),
            b.batch_size,
            r.variant,
            b.batches,
            b.p50_ms,
            b.max_ms,
            b.total_ms
        );
    }
    out
}

pub fn rss_table(res: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:<26} {:>12} {:>14} {:>10}",
        "backend", "impl", "variant", "peak RSS", "child baseline", "ops/s"
    );
    for r in res.records.iter() {
        let Some(s) = &r.rss else { continue };
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:<26} {:>9.1} MiB {:>10.1} MiB {:>10}",
            r.backend,
            r.implementation,
            r.variant,
            s.peak_rss_kib as f64 / 1024.0,
            s.baseline_rss_kib as f64 / 1024.0,
            fmt_rate(r.ops_per_sec),
        );
    }
    out
}

fn run_tag(res: &Results, r: &Record) -> String {
    if res.runs() > 1 {
        format!(" (run {})", r.run + 1)
    } else {
        String::new()
    }
}

/// The mixed workload: one line per (backend, implementation, rate) and
/// per-operation percentiles.
pub fn mixed_table(res: &Results) -> String {
    let mut out = String::new();
    for r in res.records.iter() {
        let Some(m) = &r.mixed else { continue };
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:<32} offered {:>7}/s achieved {:>7}/s  p99(all) {:>7.2} ms  {}{}",
            r.backend,
            r.implementation,
            r.variant,
            fmt_rate(m.offered),
            fmt_rate(m.achieved),
            m.all_p99_ms,
            if m.sustained {
                "sustained"
            } else {
                "NOT sustained"
            },
            run_tag(res, r),
        );
        for o in m.ops.iter().filter(|o| o.count > 0) {
            let _ = writeln!(
                out,
                "             {:<16} n={:<7} p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  max {:>8.2} ms",
                o.op, o.count, o.p50_ms, o.p99_ms, o.p999_ms, o.max_ms
            );
        }
    }
    out
}

pub fn cold_table(res: &Results) -> String {
    let mut out = String::new();
    for r in res.records.iter() {
        let Some(c) = &r.cold else { continue };
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:<32} open {:>8.2} ms, first lookup {:>7.3} ms, second {:>7.3} ms \
             (median of {}){}",
            r.backend,
            r.implementation,
            r.variant,
            c.open_ms,
            c.first_ms,
            c.second_ms,
            c.repetitions,
            run_tag(res, r),
        );
    }
    out
}

/// One target: an estimate with its interval and the bound it must meet.
pub struct Target {
    pub name: String,
    pub est: Option<Estimate>,
    pub bound: f64,
    /// `true`: value >= bound; `false`: value <= bound.
    pub at_least: bool,
    pub unit: &'static str,
    /// Checked by the quick run's regression gate.
    pub gate: bool,
    /// Why it is not decided, when it cannot be (e.g. needs 3 runs).
    pub note: Option<&'static str>,
}

impl Target {
    fn new(name: String, est: Option<Estimate>, bound: f64, at_least: bool) -> Self {
        Target {
            name,
            est,
            bound,
            at_least,
            unit: "x",
            gate: false,
            note: None,
        }
    }

    fn gated(mut self) -> Self {
        self.gate = true;
        self
    }

    pub fn verdict(&self) -> Verdict {
        stats::verdict(self.est, self.bound, self.at_least)
    }

    /// A gross regression: the whole interval below half the bound (an
    /// at-least ratio target marked for the gate).
    pub fn gross_regression(&self) -> bool {
        self.gate_margin().is_some_and(|m| m < 1.0)
    }

    /// The interval's upper bound over half the bound (gated targets):
    /// below 1 fails the quick run.
    pub fn gate_margin(&self) -> Option<f64> {
        (self.gate && self.at_least)
            .then_some(self.est)
            .flatten()
            .filter(|e| e.hi.is_finite())
            .map(|e| e.hi / (self.bound / 2.0))
    }
}

const WRITES: [&str; 8] = [
    "account_create",
    "login_stamp",
    "loadout_save",
    "unlock_grant",
    "add_xp",
    "register_tx",
    "battle_end_tx",
    "insert_1000_tx",
];

/// Per-run figures need this many runs to decide a target.
pub const MIN_RUNS: usize = 3;

/// Values of a per-run figure, one per run that has it.
fn per_run(res: &Results, f: impl Fn(&Record) -> Option<f64>) -> Vec<f64> {
    (0..res.runs() as u32)
        .filter_map(|run| res.records.iter().filter(|r| r.run == run).find_map(&f))
        .collect()
}

fn per_run_target(
    res: &Results,
    name: String,
    bound: f64,
    at_least: bool,
    unit: &'static str,
    f: impl Fn(&Record) -> Option<f64>,
) -> Option<Target> {
    let v = per_run(res, f);
    if v.is_empty() {
        return None;
    }
    let est = stats::over_runs(&v, MIN_RUNS);
    let mut t = Target::new(name, est, bound, at_least);
    t.unit = unit;
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        t.note = Some("no run gave a value (too few calls)");
        return Some(t);
    }
    if est.is_none() {
        t.note = Some(if res.runs() >= MIN_RUNS {
            "fewer than 3 runs gave a value"
        } else {
            "per-run figure: needs --runs 3"
        });
        // Shown with its value(s), undecided.
        let vals: Vec<String> = finite.iter().map(|x| format!("{x:.2}{unit}")).collect();
        t.name = format!("{} (value: {})", t.name, vals.join(", "));
    }
    Some(t)
}

/// Every target, from this run's figures.
pub fn targets(res: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    let key = |backend, durability, op, concurrency| Key {
        backend,
        durability,
        data_set: "main",
        sessions: None,
        op,
        implementation: "persist",
        variant: None,
        concurrency,
    };
    let ran = |b: &str| res.records.iter().any(|r| r.backend == b && r.is_cell());
    let vs_raw =
        |k: &Key<'_>| raw_comparator(res, k).and_then(|v| persist_over(res, k, "raw", Some(v)));
    if ran("sqlite") {
        let full = Some("full");
        let k1 = key("sqlite", full, "session_lookup", 1);
        t.push(
            Target::new(
                "sqlite session_lookup x1: persist / raw".into(),
                vs_raw(&k1),
                0.95,
                true,
            )
            .gated(),
        );
        let k16 = key("sqlite", full, "session_lookup", 16);
        t.push(
            Target::new(
                "sqlite session_lookup x16: persist / raw with persist's connections".into(),
                vs_raw(&k16),
                0.9,
                true,
            )
            .gated(),
        );
        for c in [1, 16] {
            let k = key("sqlite", full, "unlock_list", c);
            t.push(
                Target::new(
                    format!("sqlite unlock_list x{c}: persist / raw"),
                    vs_raw(&k),
                    0.7,
                    true,
                )
                .gated(),
            );
            for op in ["session_lookup", "unlock_list"] {
                let k = key("sqlite", full, op, c);
                t.push(Target::new(
                    format!("sqlite {op} x{c}: persist / sqlx default"),
                    persist_over(res, &k, "sqlx", Some(crate::SQLX_DEFAULT)),
                    2.0,
                    true,
                ));
                t.push(Target::new(
                    format!("sqlite {op} x{c}: persist / sqlx tuned"),
                    persist_over(res, &k, "sqlx", Some(crate::SQLX_TUNED_SQLITE)),
                    1.0,
                    true,
                ));
            }
        }
        for d in ["full", "normal"] {
            for op in WRITES {
                for c in [1, 16] {
                    let k = key("sqlite", Some(d), op, c);
                    t.push(
                        Target::new(
                            format!("sqlite/{d} {op} x{c}: persist / raw"),
                            vs_raw(&k),
                            0.7,
                            true,
                        )
                        .gated(),
                    );
                }
            }
        }
    }
    if ran("postgres") {
        let all = ["session_lookup", "unlock_list"].into_iter().chain(WRITES);
        for op in all {
            let k1 = key("postgres", None, op, 1);
            t.push(
                Target::new(
                    format!("postgres {op} x1: persist / raw (1 connection)"),
                    vs_raw(&k1),
                    0.95,
                    true,
                )
                .gated(),
            );
            let k16 = key("postgres", None, op, 16);
            t.push(
                Target::new(
                    format!(
                        "postgres {op} x16: persist / best raw shape ({})",
                        raw_comparator(res, &k16).unwrap_or("-")
                    ),
                    vs_raw(&k16),
                    0.95,
                    true,
                )
                .gated(),
            );
            if op == "session_lookup" || op == "unlock_list" {
                for c in [1, 16] {
                    let k = key("postgres", None, op, c);
                    t.push(Target::new(
                        format!("postgres {op} x{c}: persist / sqlx default"),
                        persist_over(res, &k, "sqlx", Some(crate::SQLX_DEFAULT)),
                        2.0,
                        true,
                    ));
                    t.push(Target::new(
                        format!("postgres {op} x{c}: persist / sqlx tuned"),
                        persist_over(res, &k, "sqlx", Some(crate::SQLX_TUNED_PG)),
                        1.0,
                        true,
                    ));
                }
            }
        }
    }
    // Growth: persist/raw at each size, and persist's own time per lookup
    // at the large size over the small one.
    for backend in ["sqlite", "postgres"] {
        let durability = (backend == "sqlite").then_some("full");
        let mut sizes: Vec<u64> = res
            .records
            .iter()
            .filter(|r| r.backend == backend && r.data_set == "growth" && r.is_cell())
            .map(|r| r.sessions_in_table)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        for c in [1, 16] {
            let g = |n| Key {
                backend,
                durability,
                data_set: "growth",
                sessions: Some(n),
                op: "session_lookup",
                implementation: "persist",
                variant: None,
                concurrency: c,
            };
            for &n in &sizes {
                let bound = if backend == "sqlite" && c == 16 {
                    0.9
                } else {
                    0.95
                };
                t.push(Target::new(
                    format!(
                        "{backend} session_lookup x{c} at {} sessions: persist / raw",
                        fmt_count(n)
                    ),
                    vs_raw(&g(n)),
                    bound,
                    true,
                ));
            }
            if let (Some(&small), Some(&large)) = (sizes.first(), sizes.last()) {
                if small != large {
                    // Time per lookup at large / at small = rate at small / rate at large.
                    let e = stats::unpaired_ratio(&res.samples(&g(small)), &res.samples(&g(large)));
                    t.push(Target::new(
                        format!(
                            "{backend} session_lookup x{c}: persist's time per lookup at {} / at {} sessions",
                            fmt_count(large),
                            fmt_count(small)
                        ),
                        e.value.is_finite().then_some(e),
                        1.5,
                        false,
                    ));
                }
            }
        }
    }
    // Sweep (per-run figures).
    let sweep = |b: &'static str, f: fn(&SweepStats) -> f64| {
        move |r: &Record| {
            (r.backend == b && r.data_set == "growth")
                .then_some(r.sweep.as_ref())
                .flatten()
                .map(f)
        }
    };
    t.extend(per_run_target(
        res,
        "sqlite sweep: writer p99 during the sweep (ms)".into(),
        5.0,
        false,
        " ms",
        sweep("sqlite", |s| s.writer_p99_ms),
    ));
    t.extend(per_run_target(
        res,
        "sqlite sweep: longest batch holding the writer (ms)".into(),
        25.0,
        false,
        " ms",
        sweep("sqlite", |s| s.batch_max_ms),
    ));
    for b in ["sqlite", "postgres"] {
        t.extend(per_run_target(
            res,
            format!("{b} sweep: session lookups' p99 during the sweep (ms)"),
            5.0,
            false,
            " ms",
            sweep(b, |s| s.lookup_p99_ms),
        ));
    }
    // Mixed workload (per-run figures).
    for b in ["sqlite", "postgres"] {
        t.extend(per_run_target(
            res,
            format!("{b} mixed: persist's saturation rate / raw's"),
            0.9,
            true,
            "x",
            |r: &Record| {
                (r.backend == b
                    && r.operation == "mixed_saturation"
                    && r.implementation == "persist")
                    .then_some(r.ops_per_sec)
            },
        ));
        for op in crate::mixed::MIX.iter().map(|(o, _)| o.name()) {
            t.extend(per_run_target(
                res,
                format!("{b} mixed {op}: persist's p99 / raw's a step below the highest rate both sustain"),
                1.2,
                false,
                "x",
                move |r: &Record| {
                    (r.backend == b && r.operation == format!("mixed_p99_ratio:{op}"))
                        .then_some(r.ops_per_sec)
                },
            ));
        }
    }
    for backend in ["sqlite", "postgres"] {
        let rss = |imp: &'static str| {
            move |r: &Record| {
                (r.backend == backend && r.implementation == imp && r.data_set == "main")
                    .then_some(r.rss.as_ref())
                    .flatten()
                    .map(|s| s.peak_rss_kib as f64)
            }
        };
        let p = per_run(res, rss("persist"));
        let raw = per_run(res, rss("raw"));
        if p.is_empty() || raw.is_empty() {
            continue;
        }
        let ratios: Vec<f64> = p.iter().zip(&raw).map(|(a, b)| a / b).collect();
        let est = stats::over_runs(&ratios, MIN_RUNS);
        let mut x = Target::new(
            format!("{backend} peak RSS: persist / raw"),
            est,
            1.5,
            false,
        );
        if est.is_none() {
            x.note = Some("per-run figure: needs --runs 3");
            x.name = format!("{} (value: {:.2}x)", x.name, ratios[0]);
        }
        t.push(x);
    }
    t
}

pub fn targets_table(t: &[Target]) -> String {
    let mut out = String::new();
    for x in t {
        let status = match x.verdict() {
            Verdict::Met => "met      ",
            Verdict::Missed => "MISSED   ",
            Verdict::Undecided => "undecided",
            Verdict::NotMeasured => "n/a      ",
        };
        let status = if x.note.is_some() {
            "undecided"
        } else {
            status
        };
        let e = match x.est {
            Some(e) if e.value.is_finite() => {
                format!("{:.2} [{:.2}, {:.2}]{}", e.value, e.lo, e.hi, x.unit)
            }
            _ => "-".into(),
        };
        let bound = format!(
            "{} {}{}",
            if x.at_least { ">=" } else { "<=" },
            x.bound,
            x.unit
        );
        let _ = writeln!(
            out,
            "{status} {:>24} (need {:<9}) {}{}",
            e,
            bound,
            x.name,
            x.note.map(|n| format!(" [{n}]")).unwrap_or_default()
        );
    }
    let count = |v: Verdict| {
        t.iter()
            .filter(|x| x.note.is_none() && x.verdict() == v)
            .count()
    };
    let undecided = count(Verdict::Undecided) + t.iter().filter(|x| x.note.is_some()).count();
    let _ = writeln!(
        out,
        "{} met, {} missed, {} undecided, {} not measured",
        count(Verdict::Met),
        count(Verdict::Missed),
        undecided,
        count(Verdict::NotMeasured)
    );
    out
}

/// Every table of a run (or of several runs judged together).
pub fn full(res: &Results) -> String {
    let mut out = String::new();
    let runs = res.runs();
    if !res.setup.is_empty() {
        let _ = writeln!(
            out,
            "\nSetup and durability of each implementation (queried on its connections):"
        );
        for l in &res.setup {
            let _ = writeln!(out, "  {l}");
        }
    }
    let _ = writeln!(
        out,
        "\nThroughput, operations per second: means over interleaved windows{}; ratios are \
         ratios of means with a 95 % paired bootstrap interval [lo,hi]; *_tx: transactions/s; \
         raw = the raw figure persist is judged against (last column); raw 1c = the raw driver \
         on one connection (reference)",
        if runs > 1 {
            format!(" of {runs} process runs")
        } else {
            String::new()
        }
    );
    out.push_str(&table(res));
    let spread = spread_table(res);
    if !spread.is_empty() {
        let _ = writeln!(
            out,
            "\nRun-to-run spread of persist/raw (ratio of means in each run):"
        );
        out.push_str(&spread);
    }
    let exp = experiments_table(res);
    if !exp.is_empty() {
        let _ = writeln!(out, "\nDesign variants, operations per second (means):");
        out.push_str(&exp);
    }
    let sweep = sweep_table(res);
    if !sweep.is_empty() {
        let _ = writeln!(out, "\nExpired-session sweep (persist):");
        out.push_str(&sweep);
        out.push_str(&batches_table(res));
    }
    let mixed = mixed_table(res);
    if !mixed.is_empty() {
        let _ = writeln!(
            out,
            "\nMixed open-loop workload ({} players; latency from the intended send time; \
             sustained = >= 95 % of the offered rate completed and p99 over all calls <= {} ms):",
            crate::mixed::PLAYERS,
            crate::mixed::P99_BOUND_MS
        );
        out.push_str(&mixed);
        for r in res
            .records
            .iter()
            .filter(|r| r.operation == "mixed_saturation_rate")
        {
            let _ = writeln!(
                out,
                "{:<8} {:<8} {:<32} highest sustained rate: {}/s{}",
                r.backend,
                r.implementation,
                r.variant,
                fmt_rate(r.ops_per_sec),
                run_tag(res, r)
            );
        }
    }
    let cold = cold_table(res);
    if !cold.is_empty() {
        let _ = writeln!(out, "\nCold start (first calls after open):");
        out.push_str(&cold);
    }
    let rss = rss_table(res);
    if res.records.iter().any(|r| r.rss.is_some()) {
        let _ = writeln!(
            out,
            "\nPeak RSS (VmHWM) per implementation, each in its own child process running \
             the same workload:"
        );
        out.push_str(&rss);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(lo: f64, hi: f64, gate: bool) -> Target {
        let mut t = Target::new(
            "t".into(),
            Some(Estimate {
                value: (lo + hi) / 2.0,
                lo,
                hi,
            }),
            0.9,
            true,
        );
        t.gate = gate;
        t
    }

    fn cell(
        backend: &'static str,
        imp: &'static str,
        variant: &'static str,
        c: usize,
        v: &[f64],
    ) -> Record {
        let durability = (backend == "sqlite").then_some("full");
        let mut r = Record::blank(backend, durability, "main", "session_lookup", imp, variant);
        r.concurrency = c;
        r.samples = v.to_vec();
        r
    }

    fn key(backend: &'static str, c: usize) -> Key<'static> {
        Key {
            backend,
            durability: (backend == "sqlite").then_some("full"),
            data_set: "main",
            sessions: None,
            op: "session_lookup",
            implementation: "persist",
            variant: None,
            concurrency: c,
        }
    }

    #[test]
    fn persist_is_judged_against_the_fair_sqlite_raw_and_the_best_postgres_shape() {
        let mut res = Results::default();
        res.push(cell("sqlite", "persist", "p", 16, &[90.0, 90.0]));
        res.push(cell("sqlite", "raw", crate::RAW_ONE, 16, &[50.0, 50.0]));
        res.push(cell("sqlite", "raw", crate::RAW_FAIR, 16, &[100.0, 100.0]));
        res.push(cell("postgres", "persist", "p", 16, &[90.0, 90.0]));
        res.push(cell("postgres", "raw", crate::RAW_ONE, 16, &[80.0, 80.0]));
        res.push(cell(
            "postgres",
            "raw",
            crate::RAW_LANES,
            16,
            &[120.0, 120.0],
        ));
        res.push(cell("postgres", "raw", crate::RAW_POOL, 16, &[60.0, 60.0]));
        res.push(cell("postgres", "persist", "p", 1, &[10.0, 10.0]));
        res.push(cell("postgres", "raw", crate::RAW_ONE, 1, &[20.0, 20.0]));
        res.push(cell("postgres", "raw", crate::RAW_POOL, 1, &[40.0, 40.0]));
        assert_eq!(
            raw_comparator(&res, &key("sqlite", 16)),
            Some(crate::RAW_FAIR)
        );
        assert_eq!(
            raw_comparator(&res, &key("postgres", 16)),
            Some(crate::RAW_LANES)
        );
        assert_eq!(
            raw_comparator(&res, &key("postgres", 1)),
            Some(crate::RAW_ONE)
        );
        let e = persist_over(&res, &key("postgres", 16), "raw", Some(crate::RAW_LANES))
            .expect("both measured");
        assert_eq!(e.value, 0.75);
        let targets = targets(&res);
        let t = targets
            .iter()
            .find(|t| {
                t.name
                    .starts_with("sqlite session_lookup x16: persist / raw")
            })
            .expect("target");
        assert_eq!(t.est.map(|e| e.value), Some(0.9));
        assert_eq!(t.verdict(), Verdict::Met);
    }

    #[test]
    fn the_gate_fails_only_when_the_whole_interval_is_below_half_the_target() {
        assert!(target(0.2, 0.44, true).gross_regression());
        assert!(!target(0.2, 0.46, true).gross_regression());
        assert!(!target(0.2, 0.44, false).gross_regression());
        assert_eq!(target(0.2, 0.44, true).verdict(), Verdict::Missed);
        assert_eq!(target(0.8, 1.1, true).verdict(), Verdict::Undecided);
        assert_eq!(target(0.91, 1.1, true).verdict(), Verdict::Met);
    }
}

#[cfg(test)]
mod nan_tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Figure {
        #[serde(deserialize_with = "super::nan_if_null")]
        x: f64,
    }

    #[test]
    fn a_figure_written_as_null_reads_back_as_nan() {
        let nan: Figure = serde_json::from_str(r#"{"x":null}"#).unwrap();
        assert!(nan.x.is_nan());
        let n: Figure = serde_json::from_str(r#"{"x":1.5}"#).unwrap();
        assert_eq!(n.x, 1.5);
        let written = serde_json::to_string(&f64::NAN).unwrap();
        assert_eq!(written, "null");
    }
}
