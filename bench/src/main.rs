//! `persist-bench`: the persist crate side by side with the raw drivers (the
//! limit) and sqlx (the peer), on SQLite and PostgreSQL (issue 4).
//!
//! ```text
//! cargo run --release -p persist-bench -- [--quick] [--json PATH] [--postgres-url URL]
//! ```
//!
//! See `docs/PERFORMANCE.md` for what is measured and how.

mod battle_once;
mod bench_pg;
mod bench_sqlite;
mod cold;
mod connect;
mod data;
mod harness;
mod metrics_cost;
mod mixed;
mod ops;
mod pooler;
mod raw_pg;
mod raw_sqlite;
mod replicas;
mod report;
mod rss;
mod runs;
mod sql;
mod sqlx_impl;
mod stats;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use crate::data::Scale;
use crate::harness::{Ctx, Timing};
use crate::report::{fmt_count, Results};

/// Variant name of the raw driver on one connection (PostgreSQL: pipelined
/// when tasks share it; SQLite: the single-connection reference figure).
pub const RAW_ONE: &str = "1 connection";
/// Variant name of raw tokio-postgres on a minimal pool of 8 connections.
pub const RAW_POOL: &str = "8 connections";
/// Raw tokio-postgres in persist's read shape: 2 shared pipelined
/// connections.
pub const RAW_LANES: &str = "2 shared, pipelined";
/// Raw PostgreSQL in persist's whole shape (mixed workload): reads on 2
/// shared pipelined connections, the rest on a pool of 8.
pub const RAW_PG_SPLIT: &str = "reads 2 shared + pool(8)";
/// Raw rusqlite in persist's shape: one writer and as many reader
/// connections as persist opened.
pub const RAW_FAIR: &str = "1 writer + readers as persist";
/// sqlx as a user gets it: a pool of 8 with a ping per checkout.
pub const SQLX_DEFAULT: &str = "pool(8), default";
/// sqlx tuned for SQLite: one writer connection, 8 readers, no ping.
pub const SQLX_TUNED_SQLITE: &str = "1 writer + pool(8), no ping";
/// sqlx tuned for PostgreSQL: no ping on checkout.
pub const SQLX_TUNED_PG: &str = "pool(8), no ping";

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
    /// The open-loop mixed workload.
    Mixed,
    /// Cold start, and the calls on a user with many sessions.
    Cold,
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
    /// Small data set, short windows, short mixed-workload steps: the CI
    /// run. Exits 1 on a gross regression (a gated persist/raw ratio whose
    /// whole 95 % interval is below half its target).
    #[arg(long)]
    quick: bool,
    /// Run the benchmark N times, each in its own process, and judge the
    /// targets on all runs together (intervals over runs and windows;
    /// per-run figures such as tail latencies need 3 runs).
    #[arg(long, default_value_t = 1, value_name = "N")]
    runs: usize,
    /// Read the JSON records of earlier runs (`--json` of each) and judge
    /// them together instead of measuring.
    #[arg(long, value_name = "PATH", num_args = 1.., conflicts_with = "runs")]
    combine: Vec<PathBuf>,
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
    /// Length of one measurement window in milliseconds (default: 40, quick: 10).
    #[arg(long, value_name = "MS")]
    window_ms: Option<u64>,
    /// Measured windows per implementation and cell, after one warm-up
    /// window each (default: 20, quick: 8; the 1000-row transaction: at
    /// most 8, quick: 4).
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
    /// variants, rss, growth, mixed, cold; growth includes the sweep).
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    skip: Vec<Part>,
    /// Measure only connection set-up per sslmode against a private TLS
    /// cluster it starts (bench/src/connect.rs).
    #[arg(long)]
    connect: bool,
    /// Measure only the exactly-once battle end against raw SQL and today's
    /// battle_end_tx (bench/src/battle_once.rs).
    #[arg(long)]
    battle_once: bool,
    /// Measure only what recording metrics costs (bench/src/metrics_cost.rs).
    #[arg(long)]
    metrics_cost: bool,
    /// Measure only persist behind a private PgBouncer (transaction mode)
    /// against the raw driver behind it, and the direct pair
    /// (bench/src/pooler.rs).
    #[arg(long)]
    pgbouncer: bool,
    /// Measure only read-replica routing against a private primary and two
    /// standbys it starts (bench/src/replicas.rs).
    #[arg(long)]
    replicas: bool,
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
    if cli.rss_child.is_none() && (cli.runs > 1 || !cli.combine.is_empty()) {
        return match runs::parent(cli.runs, &cli.combine, cli.json.as_deref(), cli.quick) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
    let quick = cli.quick;
    let json = cli.json.clone();
    match rt.block_on(run(cli)) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some((res, started))) => finish(&res, quick, json.as_deref(), started),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the report, writes the JSON, and applies the quick run's gate.
pub fn finish(
    res: &Results,
    quick: bool,
    json: Option<&std::path::Path>,
    started: Instant,
) -> ExitCode {
    print!("{}", report::full(res));
    let targets = report::targets(res);
    println!(
        "\nTargets (verdict on the 95 % interval: met when the whole interval clears the \
         bound, missed when it is all on the wrong side, otherwise undecided; {} run(s)):",
        res.runs()
    );
    print!("{}", report::targets_table(&targets));
    if let Some(path) = json {
        let written = serde_json::to_string_pretty(&res.records)
            .map_err(anyhow::Error::from)
            .and_then(|j| std::fs::write(path, j).map_err(anyhow::Error::from));
        match written {
            Ok(()) => println!("JSON: {}", path.display()),
            Err(e) => {
                eprintln!("error: write {}: {e:#}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some((m, t)) = targets
        .iter()
        .filter_map(|t| t.gate_margin().map(|m| (m, t)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
    {
        println!(
            "Regression gate{}: the closest gated target's interval reaches {m:.2}x half its \
             bound ({}); below 1.00x fails.",
            if quick {
                ""
            } else {
                " (enforced with --quick)"
            },
            t.name
        );
    }
    println!("finished in {:.1}s", started.elapsed().as_secs_f64());
    let gross: Vec<&report::Target> = targets.iter().filter(|t| t.gross_regression()).collect();
    if quick && !gross.is_empty() {
        eprintln!(
            "persist-bench: gross regression (whole 95 % interval below half the target) on:"
        );
        for t in gross {
            eprintln!("  {}", t.name);
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn run(cli: Cli) -> Result<Option<(Results, Instant)>> {
    if cli.connect {
        return connect::run(cli.quick).await.map(|_| None);
    }
    if cli.battle_once {
        let dir = cli.sqlite_dir.clone().unwrap_or_else(std::env::temp_dir);
        let (lite, pg) = (
            cli.backend != Backends::Postgres,
            cli.backend != Backends::Sqlite,
        );
        return battle_once::run(cli.quick, lite, pg, &cli.postgres_url, &dir)
            .await
            .map(|()| None);
    }
    if cli.pgbouncer {
        return pooler::run(&cli.postgres_url, cli.quick)
            .await
            .map(|()| None);
    }
    if cli.replicas {
        return replicas::run(cli.quick).await.map(|_| None);
    }
    if cli.metrics_cost {
        return metrics_cost::run(&cli.postgres_url, cli.quick)
            .await
            .map(|_| None);
    }
    let scale = if cli.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    let ctx = Ctx::new(scale);
    if let Some(spec) = &cli.rss_child {
        let target = cli.rss_target.as_deref().unwrap_or("");
        rss::child(spec, target, cli.rss_seq, ctx, cli.quick).await?;
        return Ok(None);
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
            window: Duration::from_millis(cli.window_ms.unwrap_or(if cli.quick { 10 } else { 40 })),
            reps: cli.reps.unwrap_or(if cli.quick { 8 } else { 20 }).max(2),
            // One warm-up window per implementation and cell, quick mode
            // too: lazily opened readers and first prepares land there.
            warmup: 1,
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
         sessions; window {} ms, {} windows (+{} warm-up) per implementation and cell, interleaved",
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
    if cli.backend != Backends::Postgres {
        bench_sqlite::run(&opts, &ctx, &mut res)
            .await
            .context("SQLite section")?;
    }
    if cli.backend != Backends::Sqlite {
        bench_pg::run(&opts, &ctx, &mut res)
            .await
            .context("PostgreSQL section")?;
    }
    // Growth and the sweep last, for both backends (D-136).
    if opts.runs(Part::Growth) {
        if cli.backend != Backends::Postgres {
            bench_sqlite::run_growth(&opts, &ctx, &mut res)
                .await
                .context("SQLite growth")?;
        }
        if cli.backend != Backends::Sqlite {
            bench_pg::run_growth(&opts, &ctx, &mut res)
                .await
                .context("PostgreSQL growth")?;
        }
    }
    res.attach_rss();
    Ok(Some((res, started)))
}
