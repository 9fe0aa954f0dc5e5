//! `persist-bench`: the persist crate side by side with the raw drivers (the
//! limit) and sqlx (the peer), on SQLite and PostgreSQL (issue 4).
//!
//! ```text
//! cargo run --release -p persist-bench -- [--quick] [--json PATH] [--postgres-url URL]
//! ```
//!
//! See `docs/PERFORMANCE.md` for what is measured and how.

mod bench_pg;
mod bench_sqlite;
mod connect;
mod data;
mod harness;
mod metrics_cost;
mod ops;
mod raw_pg;
mod raw_sqlite;
mod report;
mod rss;
mod sql;
mod sqlx_impl;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use crate::data::{Scale, T0};
use crate::harness::{vm_hwm_kib, Ctx, Timing};
use crate::report::{fmt_count, Results};

/// Variant name of the raw driver on one connection (PostgreSQL: pipelined
/// when tasks share it).
pub const RAW_ONE: &str = "1 connection";
/// Variant name of raw tokio-postgres on a minimal pool of 8 connections.
pub const RAW_POOL: &str = "8 connections";

/// Parts of a run that `--skip` can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// The operation tables on the main data set.
    Main,
    /// Design variants (PostgreSQL reads, SQLite growth, sweep batch sizes).
    Variants,
    /// Peak RSS child processes.
    Rss,
    /// Growth data set: lookups at small and large size, and the sweep.
    Growth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backends {
    Both,
    Sqlite,
    Postgres,
}

/// Benchmark of the persist crate against raw rusqlite / tokio-postgres and
/// sqlx, on the issue-4 data set. Missing a target is reported, not an error.
#[derive(Debug, Parser)]
#[command(name = "persist-bench", version)]
struct Cli {
    /// Small data set, short windows, no warm-up round, one sample of the
    /// 1000-row transaction: a smoke run for CI (well under a minute).
    #[arg(long)]
    quick: bool,
    /// Also write every figure as a JSON array of records to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// PostgreSQL server to create the scratch databases on (they are
    /// dropped at the end). Plaintext: sslmode=disable is added.
    #[arg(
        long,
        value_name = "URL",
        env = "PERSIST_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    postgres_url: String,
    /// Which backends to run.
    #[arg(long, value_enum, default_value = "both")]
    backend: Backends,
    /// Length of one measurement window in milliseconds (default: 40, quick: 12).
    #[arg(long, value_name = "MS")]
    window_ms: Option<u64>,
    /// Measured repetitions per figure; the median is reported (default: 15,
    /// quick: 3; the 1000-row transaction: at most 5, quick: 1).
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Rows per batch of the expired-session sweep.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    sweep_batch: i64,
    /// Directory for the SQLite temp files (must be on the disk to measure
    /// fsync; default: the system temp directory).
    #[arg(long, value_name = "DIR")]
    sqlite_dir: Option<PathBuf>,
    /// Investigation aid: measure only these operations (comma-separated
    /// names, e.g. session_lookup,add_xp). Targets of operations not run are
    /// reported as not measured.
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    ops: Vec<String>,
    /// Investigation aid: skip parts of the run (comma-separated: main,
    /// variants, rss, growth; growth includes the sweep).
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    skip: Vec<Part>,
    /// Measure only connection set-up per sslmode against a private TLS
    /// cluster it starts (bench/src/connect.rs).
    #[arg(long)]
    connect: bool,
    /// Measure only what recording metrics costs (bench/src/metrics_cost.rs).
    #[arg(long)]
    metrics_cost: bool,
    #[arg(long, hide = true)]
    rss_child: Option<String>,
    #[arg(long, hide = true)]
    rss_target: Option<String>,
    #[arg(long, hide = true, default_value_t = 1)]
    rss_seq: u64,
}

impl Opts {
    /// Whether `op` is measured in this run.
    pub fn wants(&self, op: ops::Op) -> bool {
        self.ops.is_empty() || self.ops.iter().any(|n| n == op.name())
    }

    /// Whether a part of the run is done.
    pub fn runs(&self, part: Part) -> bool {
        !self.skip.contains(&part)
    }
}

/// Run options shared by the sections.
pub struct Opts {
    pub quick: bool,
    /// Operations to measure; empty: all.
    pub ops: Vec<String>,
    /// Parts left out.
    pub skip: Vec<Part>,
    pub timing: Timing,
    pub postgres_url: String,
    pub sqlite_dir: PathBuf,
    pub sweep_batch: i64,
    pub sweep_baseline_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if cli.connect {
        return connect::run(cli.quick).await.map(drop);
    }
    if cli.metrics_cost {
        return metrics_cost::run(&cli.postgres_url, cli.quick)
            .await
            .map(drop);
    }
    let scale = if cli.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    let ctx = Ctx::new(scale);
    if let Some(spec) = &cli.rss_child {
        let target = cli.rss_target.as_deref().unwrap_or("");
        return rss::child(spec, target, cli.rss_seq, ctx, cli.quick).await;
    }
    for name in &cli.ops {
        anyhow::ensure!(
            ops::Op::ALL.iter().any(|o| o.name() == name),
            "unknown operation {name:?}; known: {}",
            ops::Op::ALL.map(|o| o.name()).join(", ")
        );
    }
    let opts = Opts {
        quick: cli.quick,
        ops: cli.ops.clone(),
        skip: cli.skip.clone(),
        timing: Timing {
            window: Duration::from_millis(cli.window_ms.unwrap_or(if cli.quick { 12 } else { 40 })),
            reps: cli.reps.unwrap_or(if cli.quick { 3 } else { 15 }).max(1),
            // Quick mode keeps CI short: no warm-up round.
            warmup: usize::from(!cli.quick),
            quick: cli.quick,
        },
        postgres_url: cli.postgres_url.clone(),
        sqlite_dir: cli.sqlite_dir.clone().unwrap_or_else(std::env::temp_dir),
        sweep_batch: cli.sweep_batch,
        sweep_baseline_ms: if cli.quick { 200 } else { 1000 },
    };
    let started = Instant::now();
    eprintln!(
        "persist-bench ({}): {} accounts, {} sessions, {} users x 20 unlocks; growth {} -> {} \
         sessions; window {} ms, median of {} (+{} warm-up), implementations interleaved",
        if cli.quick { "quick" } else { "full" },
        fmt_count(scale.accounts),
        fmt_count(scale.sessions),
        fmt_count(scale.unlock_users),
        fmt_count(scale.growth_small),
        fmt_count(scale.growth_large),
        opts.timing.window.as_millis(),
        opts.timing.reps,
        opts.timing.warmup
    );
    let mut res = Results::default();
    let mut growth = Vec::new();
    if cli.backend != Backends::Postgres {
        bench_sqlite::run(&opts, &ctx, &mut res)
            .await
            .context("SQLite section")?;
        growth.push(("sqlite", scale.growth_small, scale.growth_large));
    }
    if cli.backend != Backends::Sqlite {
        bench_pg::run(&opts, &ctx, &mut res)
            .await
            .context("PostgreSQL section")?;
        growth.push(("postgres", scale.growth_small, scale.growth_large));
    }
    res.attach_rss();

    println!(
        "\nThroughput, operations per second (median of {} x {} ms windows; *_tx: \
         transactions/s; p/raw: persist over the best raw figure)",
        opts.timing.reps,
        opts.timing.window.as_millis()
    );
    print!("{}", report::table(&res));
    let exp = report::experiments_table(&res);
    if !exp.is_empty() {
        println!("\nDesign variants (evidence for docs/PERFORMANCE.md), operations per second:");
        print!("{exp}");
    }
    println!("\nExpired-session sweep (persist, now = {}):", T0 + 7200);
    print!("{}", report::sweep_table(&res));
    print!("{}", report::batches_table(&res));
    println!(
        "\nPeak RSS (VmHWM) per implementation, each in its own child process running \
         the same workload:"
    );
    print!("{}", report::rss_table(&res));
    println!(
        "(this process, all implementations together: peak RSS {:.1} MiB)",
        vm_hwm_kib().unwrap_or(0) as f64 / 1024.0
    );
    let targets = report::targets(&res, &growth);
    println!("\nTargets (ratios from this run):");
    print!("{}", report::targets_table(&targets));
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&res.records)?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
        println!("JSON: {}", path.display());
    }
    println!("finished in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
