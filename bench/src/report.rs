//! Records, the stdout table, the JSON file and the targets.

use std::fmt::Write as _;

use serde::Serialize;

/// One measured figure (one implementation on one cell).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// `sqlite` | `postgres`.
    pub backend: &'static str,
    /// SQLite `synchronous` level (`full` | `normal`); absent on PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<&'static str>,
    /// `main` (the data set) or `growth`.
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
    /// Median of the samples (transactions per second for `*_tx`; the 1000-row
    /// transaction counts once).
    pub ops_per_sec: f64,
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
}

/// A raw sweep, timed batch by batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchStats {
    pub rows: u64,
    pub batch_size: i64,
    pub batches: u64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub total_ms: f64,
}

/// The expired-session sweep with a concurrent writer.
#[derive(Debug, Clone, Serialize)]
pub struct SweepStats {
    pub rows_deleted: u64,
    pub batch_size: i64,
    pub total_ms: f64,
    /// The sweep's batches (persist sizes them by time, up to `batch_size`):
    /// how many, and how long each call took, wait for the writer included.
    pub batches: u64,
    pub batch_max_ms: f64,
    pub batch_p50_ms: f64,
    /// The concurrent writer's latencies during the sweep.
    pub writer_writes: u64,
    pub writer_max_ms: f64,
    pub writer_p99_ms: f64,
    pub writer_p50_ms: f64,
    /// The same writer without a sweep running, just before.
    pub baseline_writer_max_ms: f64,
    pub baseline_writer_p50_ms: f64,
}

/// A child process that ran one implementation only.
#[derive(Debug, Clone, Serialize)]
pub struct RssStats {
    pub peak_rss_kib: u64,
    /// VmHWM of a child that started the runtime and opened nothing.
    pub baseline_rss_kib: u64,
    pub workload: String,
    pub seconds: f64,
}

#[derive(Default)]
pub struct Results {
    pub records: Vec<Record>,
}

impl Record {
    /// The throughput figure of `e` on one cell: the median of `samples`.
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
        Record {
            backend,
            durability,
            data_set,
            sessions_in_table: sessions,
            operation: op.name().to_string(),
            implementation: e.implementation,
            variant: e.variant,
            concurrency: c,
            ops_per_sec: crate::harness::median(&samples),
            samples,
            peak_rss_kib: None,
            sweep: None,
            rss: None,
            batches: None,
        }
    }
}

impl Results {
    pub fn push(&mut self, r: Record) {
        self.records.push(r);
    }

    /// The median of one figure.
    pub fn get(&self, k: &Key<'_>) -> Option<f64> {
        self.records
            .iter()
            .find(|r| {
                r.backend == k.backend
                    && r.durability == k.durability
                    && r.data_set == k.data_set
                    && r.sessions_in_table == k.sessions.unwrap_or(r.sessions_in_table)
                    && r.operation == k.op
                    && r.implementation == k.implementation
                    && k.variant.is_none_or(|v| v == r.variant)
                    && r.concurrency == k.concurrency
            })
            .map(|r| r.ops_per_sec)
    }

    /// Attaches each backend's per-implementation peak RSS to its records.
    pub fn attach_rss(&mut self) {
        let rss: Vec<(&'static str, &'static str, u64)> = self
            .records
            .iter()
            .filter(|r| r.data_set == "main")
            .filter_map(|r| {
                r.rss
                    .as_ref()
                    .map(|s| (r.backend, r.implementation, s.peak_rss_kib))
            })
            .collect();
        for r in &mut self.records {
            if let Some((_, _, kib)) = rss
                .iter()
                .find(|(b, i, _)| *b == r.backend && *i == r.implementation)
            {
                r.peak_rss_kib = Some(*kib);
            }
        }
    }
}

pub struct Key<'a> {
    pub backend: &'static str,
    pub durability: Option<&'static str>,
    pub data_set: &'static str,
    pub sessions: Option<u64>,
    pub op: &'a str,
    pub implementation: &'static str,
    pub variant: Option<&'static str>,
    pub concurrency: usize,
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

/// The throughput table: one row per (backend, durability, data set,
/// operation, concurrency).
pub fn table(res: &Results) -> String {
    let mut rows: Vec<(&Record, Vec<&Record>)> = Vec::new();
    for r in res
        .records
        .iter()
        .filter(|r| r.sweep.is_none() && r.rss.is_none() && r.data_set != "experiment")
    {
        match rows.iter_mut().find(|(k, _)| {
            k.backend == r.backend
                && k.durability == r.durability
                && k.data_set == r.data_set
                && k.sessions_in_table == r.sessions_in_table
                && k.operation == r.operation
                && k.concurrency == r.concurrency
        }) {
            Some((_, v)) => v.push(r),
            None => rows.push((r, vec![r])),
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<6} {:<12} {:<15} {:>4} | {:>9} {:>9} {:>9} {:>9} | {:>7} {:>7}",
        "backend",
        "sync",
        "data set",
        "operation",
        "conc",
        "persist",
        "raw",
        "raw 8conn",
        "sqlx",
        "p/raw",
        "p/sqlx"
    );
    let _ = writeln!(out, "{}", "-".repeat(118));
    let pick = |v: &[&Record], imp: &str, variant: Option<&str>| {
        v.iter()
            .find(|r| r.implementation == imp && variant.is_none_or(|x| x == r.variant))
            .map(|r| r.ops_per_sec)
    };
    for (k, v) in &rows {
        let persist = pick(v, "persist", None);
        let raw1 = pick(v, "raw", Some(crate::RAW_ONE));
        let raw8 = pick(v, "raw", Some(crate::RAW_POOL));
        let sqlx = pick(v, "sqlx", None);
        let best_raw = match (raw1, raw8) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let cell = |x: Option<f64>| x.map_or_else(|| "-".into(), fmt_rate);
        let data = match k.data_set {
            "main" => "main".to_string(),
            d => format!("{d} {}", fmt_count(k.sessions_in_table)),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<6} {:<12} {:<15} {:>4} | {:>9} {:>9} {:>9} {:>9} | {:>7} {:>7}",
            k.backend,
            k.durability.unwrap_or("-"),
            data,
            k.operation,
            k.concurrency,
            cell(persist),
            cell(raw1),
            cell(raw8),
            cell(sqlx),
            ratio(persist, best_raw),
            ratio(persist, sqlx),
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
             (without sweep: max {:.1} ms, p50 {:.2} ms)",
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
            s.baseline_writer_p50_ms,
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

/// One target: a ratio and the bound it must meet.
pub struct Target {
    pub name: String,
    pub ratio: Option<f64>,
    pub bound: f64,
    /// `true`: ratio >= bound; `false`: ratio <= bound.
    pub at_least: bool,
    pub unit: &'static str,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        self.ratio.map(|r| {
            if self.at_least {
                r >= self.bound
            } else {
                r <= self.bound
            }
        })
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
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

/// Every target of issue 4, from this run's figures.
pub fn targets(res: &Results, growth: &[(&'static str, u64, u64)]) -> Vec<Target> {
    let mut t = Vec::new();
    let key = |backend, durability, op, implementation, variant, concurrency| Key {
        backend,
        durability,
        data_set: "main",
        sessions: None,
        op,
        implementation,
        variant,
        concurrency,
    };
    let sqlite_ran = res.records.iter().any(|r| r.backend == "sqlite");
    let pg_ran = res.records.iter().any(|r| r.backend == "postgres");
    if sqlite_ran {
        for c in [1, 16] {
            let full = Some("full");
            let p = res.get(&key("sqlite", full, "session_lookup", "persist", None, c));
            let raw = res.get(&key("sqlite", full, "session_lookup", "raw", None, c));
            let sqlx = res.get(&key("sqlite", full, "session_lookup", "sqlx", None, c));
            t.push(Target {
                name: format!("sqlite session_lookup x{c}: persist / raw rusqlite"),
                ratio: ratio(p, raw),
                bound: 0.7,
                at_least: true,
                unit: "x",
            });
            t.push(Target {
                name: format!("sqlite session_lookup x{c}: persist / sqlx"),
                ratio: ratio(p, sqlx),
                bound: 5.0,
                at_least: true,
                unit: "x",
            });
            let p = res.get(&key("sqlite", full, "unlock_list", "persist", None, c));
            let raw = res.get(&key("sqlite", full, "unlock_list", "raw", None, c));
            t.push(Target {
                name: format!("sqlite unlock_list x{c}: persist / raw rusqlite"),
                ratio: ratio(p, raw),
                bound: 0.7,
                at_least: true,
                unit: "x",
            });
        }
        for d in ["full", "normal"] {
            for op in WRITES {
                for c in [1, 16] {
                    let p = res.get(&key("sqlite", Some(d), op, "persist", None, c));
                    let raw = res.get(&key("sqlite", Some(d), op, "raw", None, c));
                    t.push(Target {
                        name: format!("sqlite/{d} {op} x{c}: persist / raw rusqlite"),
                        ratio: ratio(p, raw),
                        bound: 0.7,
                        at_least: true,
                        unit: "x",
                    });
                }
            }
        }
    }
    if pg_ran {
        let all = std::iter::once("session_lookup")
            .chain(std::iter::once("unlock_list"))
            .chain(WRITES);
        for op in all {
            let p1 = res.get(&key("postgres", None, op, "persist", None, 1));
            let raw1 = res.get(&key("postgres", None, op, "raw", None, 1));
            t.push(Target {
                name: format!("postgres {op} x1: persist / raw tokio-postgres"),
                ratio: ratio(p1, raw1),
                bound: 0.9,
                at_least: true,
                unit: "x",
            });
            let p16 = res.get(&key("postgres", None, op, "persist", None, 16));
            let best = [crate::RAW_ONE, crate::RAW_POOL]
                .iter()
                .filter_map(|v| res.get(&key("postgres", None, op, "raw", Some(v), 16)))
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            t.push(Target {
                name: format!("postgres {op} x16: persist / best raw (8 conns or pipelined)"),
                ratio: ratio(p16, best),
                bound: 0.9,
                at_least: true,
                unit: "x",
            });
            for c in [1, 16] {
                let p = res.get(&key("postgres", None, op, "persist", None, c));
                let s = res.get(&key("postgres", None, op, "sqlx", None, c));
                t.push(Target {
                    name: format!("postgres {op} x{c}: persist / sqlx pool"),
                    ratio: ratio(p, s),
                    bound: 2.0,
                    at_least: true,
                    unit: "x",
                });
            }
        }
    }
    for &(backend, small, large) in growth {
        for c in [1, 16] {
            let g = |n| {
                res.get(&Key {
                    backend,
                    durability: if backend == "sqlite" {
                        Some("full")
                    } else {
                        None
                    },
                    data_set: "growth",
                    sessions: Some(n),
                    op: "session_lookup",
                    implementation: "persist",
                    variant: None,
                    concurrency: c,
                })
            };
            // Time per lookup at large / at small = rate at small / rate at large.
            t.push(Target {
                name: format!(
                    "{backend} session_lookup x{c}: time per lookup at {} / at {} sessions",
                    fmt_count(large),
                    fmt_count(small)
                ),
                ratio: ratio(g(small), g(large)),
                bound: 1.5,
                at_least: false,
                unit: "x",
            });
        }
    }
    for r in res.records.iter().filter(|r| r.data_set == "growth") {
        if let Some(s) = &r.sweep {
            t.push(Target {
                name: format!(
                    "{} sweep of {} expired sessions: longest batch (ms)",
                    r.backend,
                    fmt_count(s.rows_deleted)
                ),
                ratio: Some(s.batch_max_ms),
                bound: 50.0,
                at_least: false,
                unit: " ms",
            });
        }
    }
    for backend in ["sqlite", "postgres"] {
        let rss = |imp: &str| {
            res.records
                .iter()
                .find(|r| {
                    r.backend == backend
                        && r.implementation == imp
                        && r.data_set == "main"
                        && r.rss.is_some()
                })
                .and_then(|r| r.rss.as_ref())
                .map(|s| s.peak_rss_kib as f64)
        };
        if rss("persist").is_some() {
            t.push(Target {
                name: format!("{backend} peak RSS: persist / raw"),
                ratio: ratio(rss("persist"), rss("raw")),
                bound: 1.5,
                at_least: false,
                unit: "x",
            });
        }
    }
    t
}

pub fn targets_table(t: &[Target]) -> String {
    let mut out = String::new();
    for x in t {
        let status = match x.met() {
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "n/a   ",
        };
        let r = x
            .ratio
            .map_or_else(|| "-".into(), |r| format!("{r:.2}{}", x.unit));
        let bound = format!(
            "{} {}{}",
            if x.at_least { ">=" } else { "<=" },
            x.bound,
            x.unit
        );
        let _ = writeln!(out, "{status} {:>10} (need {:<9}) {}", r, bound, x.name);
    }
    let met = t.iter().filter(|x| x.met() == Some(true)).count();
    let missed = t.iter().filter(|x| x.met() == Some(false)).count();
    let _ = writeln!(
        out,
        "{met} met, {missed} missed, {} not measured",
        t.len() - met - missed
    );
    out
}
