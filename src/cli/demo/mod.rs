//! `persist demo`: migrate, play the game's flows for synthetic players
//! (the workload is in [`workload`]), print a summary.
//!
//! Output: the migration lines and the summary table on stdout; progress on
//! stderr, as a progress bar when stderr is a terminal, else as plain lines
//! (`progress: 20/200 players (10%), 512 operations`) at every tenth of the
//! players. Exit 0 when the run finished and every consistency check passed,
//! 1 otherwise.
//!
//! `--metrics PATH`: the run's metrics (docs/OBSERVABILITY.md), recorded by
//! the Prometheus exporter, are written to `PATH` in the Prometheus text
//! format at the end (also when the run fails).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use persist::{DatabaseSize, Db, Error};
use workload::{DemoOptions, DemoProgress, DemoReport};

mod player;
mod retry;
pub mod workload;

use workload as demo;

use super::exit;

/// Arguments of `demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Number of synthetic players.
    #[arg(long, value_name = "N", default_value_t = demo::DEFAULT_PLAYERS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(demo::MAX_PLAYERS)))]
    players: u32,
    /// Seed of every random choice: the same seed gives the same final
    /// database content (user ids aside).
    #[arg(long, value_name = "S", default_value_t = demo::DEFAULT_SEED)]
    seed: u64,
    /// Concurrent tasks (does not change the final content).
    #[arg(long, value_name = "T", default_value_t = demo::DEFAULT_TASKS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(demo::MAX_TASKS)))]
    tasks: u32,
    /// Write the run's metrics to this file, in the Prometheus text format.
    #[arg(long, value_name = "PATH")]
    metrics: Option<std::path::PathBuf>,
    /// A read replica of the PostgreSQL database (repeatable): reads outside
    /// units of work go to it when it has replayed the demo's writes, and
    /// the summary counts the reads each server answered.
    #[arg(long = "replica-url", value_name = "URL")]
    replica_urls: Vec<String>,
}

impl Args {
    /// `config` with the `--replica-url` replicas added.
    pub fn with_replicas(&self, mut config: persist::Config) -> Result<persist::Config, Error> {
        for url in &self.replica_urls {
            let replica = persist::Config::from_url(url)?;
            crate::warn_if_password_on_command_line("--replica-url", &replica);
            config = config.with_replica_url(url)?;
        }
        Ok(config)
    }
}

/// Histogram buckets of the exposition, in seconds (0.1 ms to 10 s).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the Prometheus recorder for the rest of the process.
fn install_prometheus() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    persist::observe::describe_metrics();
    Ok(handle)
}

/// Writes the exposition to `path`; false (and an `error:` line) on failure.
fn write_metrics(
    db: &Db,
    handle: &metrics_exporter_prometheus::PrometheusHandle,
    path: &std::path::Path,
) -> bool {
    db.record_pool_metrics();
    match std::fs::write(path, handle.render()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("error: cannot write the metrics to {}: {e}", path.display());
            false
        }
    }
}

pub async fn run(db: &Db, args: Args) -> Result<ExitCode, Error> {
    let exporter = match args.metrics.as_deref().map(|p| (p, install_prometheus())) {
        None => None,
        Some((path, Ok(handle))) => Some((path.to_path_buf(), handle)),
        Some((_, Err(e))) => {
            eprintln!("error: cannot install the metrics recorder: {e}");
            db.close().await;
            return Ok(ExitCode::from(exit::ERROR));
        }
    };
    // Refuse an unwritable path before the run, not after it.
    if let Some((path, _)) = &exporter {
        if let Err(e) = std::fs::write(path, "") {
            eprintln!("error: cannot write the metrics to {}: {e}", path.display());
            db.close().await;
            return Ok(ExitCode::from(exit::ERROR));
        }
    }
    let out = play(db, &args).await;
    let written = match &exporter {
        Some((path, handle)) => write_metrics(db, handle, path),
        None => true,
    };
    db.close().await;
    match out {
        Ok(_) if !written => Ok(ExitCode::from(exit::ERROR)),
        other => other,
    }
}

async fn play(db: &Db, args: &Args) -> Result<ExitCode, Error> {
    let options = DemoOptions {
        players: args.players,
        seed: args.seed,
        tasks: args.tasks,
    };
    println!(
        "demo: {} players, seed {}, {} tasks on {}",
        options.players,
        options.seed,
        options.tasks,
        db.config().redacted_url()
    );
    let mut progress = Progress::new(options.players);
    let out = demo::run(db, &options, |p| progress.update(p)).await;
    progress.finish();
    let report = out?;
    print_report(&report);
    print_replicas(db);
    if report.failed_checks > 0 {
        eprintln!(
            "error: {} of {} consistency checks failed (first: {})",
            report.failed_checks,
            report.checks,
            report.first_failure.as_deref().unwrap_or("-")
        );
        return Ok(ExitCode::from(exit::ERROR));
    }
    Ok(ExitCode::SUCCESS)
}

/// A bar on a terminal, plain lines at every tenth otherwise.
enum Progress {
    Bar(ProgressBar),
    Lines { last_tenth: u32 },
}

impl Progress {
    fn new(players: u32) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(players.into());
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} players, {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            Progress::Bar(bar)
        } else {
            Progress::Lines { last_tenth: 0 }
        }
    }

    fn update(&mut self, p: &DemoProgress) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(p.players_done.into());
                bar.set_message(format!("{} operations", p.operations));
            }
            Progress::Lines { last_tenth } => {
                let tenth = u32::try_from(
                    u64::from(p.players_done) * 10 / u64::from(p.players_total.max(1)),
                )
                .unwrap_or(10);
                if tenth > *last_tenth {
                    *last_tenth = tenth;
                    eprintln!(
                        "progress: {}/{} players ({}%), {} operations",
                        p.players_done,
                        p.players_total,
                        u64::from(p.players_done) * 100 / u64::from(p.players_total.max(1)),
                        p.operations
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn print_report(r: &DemoReport) {
    for m in &r.migrations.applied {
        println!("applied {:04}_{} ({} ms)", m.version, m.name, m.millis);
    }
    if r.earlier_players_removed > 0 {
        println!(
            "removed {} players left by an earlier run with seed {}",
            r.earlier_players_removed, r.options.seed
        );
    }
    println!();
    println!(
        "{:<16} {:>9} {:>11} {:>9}",
        "OPERATION", "COUNT", "OPS/S", "MEAN_MS"
    );
    for s in &r.ops {
        let mean = s
            .mean()
            .map_or_else(|| "-".to_string(), |d| format!("{:.3}", ms(d)));
        println!(
            "{:<16} {:>9} {:>11.1} {:>9}",
            s.kind.name(),
            s.count,
            r.per_second(s.count),
            mean
        );
    }
    let total = r.total_ops();
    println!(
        "{:<16} {:>9} {:>11.1} {:>9}",
        "total",
        total,
        r.per_second(total),
        ""
    );
    println!();
    println!(
        "repository calls:  {} ({:.1}/s)",
        r.repository_calls,
        r.per_second(r.repository_calls)
    );
    println!(
        "consistency checks: {} ok, {} failed",
        r.checks.saturating_sub(r.failed_checks),
        r.failed_checks
    );
    println!(
        "calls run again:   {} (after a lost connection or a restarting server)",
        r.retries
    );
    println!(
        "players:           {} on {} tasks, seed {}",
        r.options.players, r.options.tasks, r.options.seed
    );
    println!("wall time:         {:.3} s", r.wall.as_secs_f64());
    println!("database size:     {}", size_text(&r.size));
}

/// Where the reads went, when replicas are configured.
fn print_replicas(db: &Db) {
    let replicas = db.replicas();
    if replicas.is_empty() {
        return;
    }
    let s = db.replica_stats();
    println!(
        "reads answered:    primary {}, replicas {}",
        s.primary_reads, s.replica_reads
    );
    for r in &replicas {
        println!(
            "  replica {} ({}): {} reads",
            r.url,
            r.state.as_str(),
            r.reads
        );
    }
    println!(
        "sent to primary:   {} (replica behind the demo's writes), {} (no healthy replica), {} (replica failed), {} (not found, checked again)",
        s.fallback_behind, s.fallback_no_replica, s.fallback_error, s.not_found_rechecks
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn size_text(size: &DatabaseSize) -> String {
    match *size {
        DatabaseSize::Sqlite {
            main_bytes,
            wal_bytes,
        } => format!(
            "{} (file {} + write-ahead log {}; {} bytes)",
            bytes(main_bytes.saturating_add(wal_bytes)),
            bytes(main_bytes),
            bytes(wal_bytes),
            main_bytes.saturating_add(wal_bytes)
        ),
        DatabaseSize::Postgres { bytes: b } => {
            format!("{} (pg_database_size; {b} bytes)", bytes(b))
        }
        DatabaseSize::InMemory => "in memory (nothing on disk)".to_string(),
        _ => "unknown".to_string(),
    }
}

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n >= 1024 * 1024 {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
