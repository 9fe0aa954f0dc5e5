//! Measurement: fixed short time windows, implementations interleaved
//! window by window (round-robin, rotated each round), a warm-up round
//! first; the statistics are in `stats.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::data::{Inputs, Scale};
use crate::ops::{persist_run, Op};
use crate::raw_pg::RawPg;
use crate::raw_sqlite::RawSqlite;
use crate::sqlx_impl;

/// One implementation under test.
pub enum Subject {
    Persist(persist::Db),
    RawSqlite(RawSqlite),
    SqlxSqlite(sqlx::SqlitePool),
    /// sqlx tuned for SQLite: (writer pool of 1, reader pool).
    SqlxSqliteSplit(sqlx::SqlitePool, sqlx::SqlitePool),
    RawPg(RawPg),
    /// Raw PostgreSQL in persist's shape: reads on shared pipelined
    /// connections, everything else on an exclusive pool.
    RawPgSplit(Box<(RawPg, RawPg)>),
    SqlxPg(sqlx::PgPool),
}

impl Subject {
    pub async fn run(&self, op: Op, x: &Inputs) -> Result<()> {
        match self {
            Subject::Persist(db) => persist_run(db, op, x).await,
            // Synchronous, on the calling task: the limit.
            Subject::RawSqlite(r) => r.run_async(op, x).await,
            Subject::SqlxSqlite(p) => sqlx_impl::run_sqlite(p, op, x).await,
            Subject::SqlxSqliteSplit(w, r) => {
                sqlx_impl::run_sqlite(if op.is_read() { r } else { w }, op, x).await
            }
            Subject::RawPg(r) => r.run(op, x).await,
            Subject::RawPgSplit(split) => {
                let (reads, rest) = split.as_ref();
                if op.is_read() {
                    reads.run(op, x).await
                } else {
                    rest.run(op, x).await
                }
            }
            Subject::SqlxPg(p) => sqlx_impl::run_postgres(p, op, x).await,
        }
    }

    pub async fn close(&self) {
        match self {
            Subject::Persist(db) => db.close().await,
            Subject::SqlxSqlite(p) => p.close().await,
            Subject::SqlxSqliteSplit(w, r) => {
                w.close().await;
                r.close().await;
            }
            Subject::SqlxPg(p) => p.close().await,
            Subject::RawSqlite(_) | Subject::RawPg(_) | Subject::RawPgSplit(..) => {}
        }
    }
}

/// An implementation with its names in the report.
#[derive(Clone)]
pub struct Entry {
    /// `persist` | `raw` | `sqlx`.
    pub implementation: &'static str,
    /// How it is set up (connections, pipelining).
    pub variant: &'static str,
    pub subject: Arc<Subject>,
}

impl Entry {
    pub fn new(implementation: &'static str, variant: &'static str, subject: Subject) -> Self {
        Entry {
            implementation,
            variant,
            subject: Arc::new(subject),
        }
    }
}

/// Timing parameters.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Length of one measurement window.
    pub window: Duration,
    /// Measured windows per implementation and cell.
    pub reps: usize,
    /// Unreported warm-up repetitions before them.
    pub warmup: usize,
    /// Quick mode (fewer samples of the 1000-row transaction).
    pub quick: bool,
}

/// Shared state: the data set's scale and the operation counter that makes
/// every operation's inputs unique across the run.
pub struct Ctx {
    pub scale: Scale,
    pub seq: AtomicU64,
    /// The user `list_sessions` / `delete_user_sessions` work on.
    pub many_user: std::sync::atomic::AtomicI64,
}

impl Ctx {
    pub fn new(scale: Scale) -> Arc<Self> {
        Arc::new(Ctx {
            scale,
            seq: AtomicU64::new(1),
            many_user: std::sync::atomic::AtomicI64::new(1),
        })
    }

    pub fn inputs(&self, sessions: u64) -> Inputs {
        let mut x = Inputs::new(
            self.seq.fetch_add(1, Ordering::Relaxed),
            &self.scale,
            sessions,
        );
        x.many_user = self.many_user.load(Ordering::Relaxed);
        x
    }
}

/// Runs `op` on `concurrency` tasks until `window` has passed (each task
/// finishes the operation in progress); returns operations per second.
pub async fn measure(
    s: &Arc<Subject>,
    op: Op,
    concurrency: usize,
    window: Duration,
    ctx: &Arc<Ctx>,
    sessions: u64,
) -> Result<f64> {
    let start = Instant::now();
    let deadline = start + window;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let s = Arc::clone(s);
        let ctx = Arc::clone(ctx);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let x = ctx.inputs(sessions);
                s.run(op, &x).await?;
                n += 1;
                if Instant::now() >= deadline {
                    return Ok::<u64, anyhow::Error>(n);
                }
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Measures every entry on one (operation, concurrency) cell: `warmup +
/// reps` rounds, each round running every entry once in a rotated order, so
/// noise hits all implementations alike. Returns the samples per entry.
pub async fn run_cell(
    entries: &[Entry],
    op: Op,
    concurrency: usize,
    timing: Timing,
    ctx: &Arc<Ctx>,
    sessions: u64,
) -> Result<Vec<Vec<f64>>> {
    let n = entries.len();
    // A window holds at least one 1000-row transaction per task, so that
    // operation gets fewer (longer) samples: 8 at most, 4 in quick mode
    // (at least 4: a bootstrap over fewer windows says little).
    let reps = match (op, timing.quick) {
        (Op::Insert1000Tx, true) => timing.reps.min(4),
        (Op::Insert1000Tx, false) => timing.reps.min(8),
        _ => timing.reps,
    };
    let mut samples = vec![Vec::with_capacity(reps); n];
    for round in 0..timing.warmup + reps {
        for k in 0..n {
            let i = (k + round) % n;
            let v = measure(
                &entries[i].subject,
                op,
                concurrency,
                timing.window,
                ctx,
                sessions,
            )
            .await
            .map_err(|e| {
                e.context(format!(
                    "{} ({}) {} x{concurrency}",
                    entries[i].implementation,
                    entries[i].variant,
                    op.name()
                ))
            })?;
            if round >= timing.warmup {
                samples[i].push(v);
            }
        }
    }
    Ok(samples)
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Peak resident set size of this process (VmHWM), in KiB.
pub fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
