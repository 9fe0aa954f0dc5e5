//! `persist`: the command-line shell over the library. Argument parsing and
//! printing only.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use persist::{Config, Error, MigrationState};

/// Exit codes of `persist`.
mod exit {
    /// Failure of any kind not listed below.
    pub const ERROR: u8 = 1;
    /// `status`: migrations are pending.
    pub const PENDING: u8 = 3;
    /// `status`/`migrate`: an applied migration was edited after it was applied.
    pub const DRIFT: u8 = 4;
    /// `status`/`migrate`: the database records migrations this binary does not ship.
    pub const AHEAD: u8 = 5;
}

#[derive(Parser)]
#[command(
    name = "persist",
    version,
    about = "Schema, migrations and data of the game server"
)]
struct Cli {
    /// Database URL (sqlite://path.db, sqlite::memory:, postgres://user@host/db).
    /// Defaults to $DATABASE_URL, then sqlite://persist.db.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,

    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply every pending migration.
    Migrate,
    /// Show each migration as applied, pending, drifted or unknown.
    /// Exit 0 when up to date, 3 when migrations are pending, 4 on drift,
    /// 5 when the database is newer than this binary, 1 on any error.
    Status,
    /// Check that the database answers.
    Ping,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::from(match e {
                Error::MigrationDrift { .. } => exit::DRIFT,
                Error::DatabaseAhead { .. } => exit::AHEAD,
                _ => exit::ERROR,
            })
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "persist=debug,info",
        _ => "persist=trace,debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The error and its sources on one line, without repeating a source whose
/// text the error already shows.
fn chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out.replace('\n', " ")
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let config = match &cli.database_url {
        Some(url) => Config::from_url(url)?,
        None => Config::from_env()?,
    };
    let db = persist::open(&config).await?;
    let code = match cli.command {
        Command::Ping => {
            db.ping().await?;
            println!("ok: {} answers", config.redacted_url());
            ExitCode::SUCCESS
        }
        Command::Migrate => {
            let report = db.migrate().await?;
            for (version, name, ms) in &report.applied {
                println!("applied {version:04}_{name} ({ms} ms)");
            }
            println!(
                "schema at version {} ({} applied now)",
                report.version,
                report.applied.len()
            );
            ExitCode::SUCCESS
        }
        Command::Status => {
            let status = db.migration_status().await?;
            println!("{:<8} {:<24} {:<8} APPLIED_AT", "VERSION", "NAME", "STATE");
            for s in &status {
                let at = s
                    .applied_at
                    .map_or_else(|| "-".to_string(), |t| t.to_string());
                println!(
                    "{:<8} {:<24} {:<8} {}",
                    format!("{:04}", s.version),
                    s.name,
                    s.state,
                    at
                );
            }
            let with = |st: MigrationState| -> Vec<i64> {
                status
                    .iter()
                    .filter(|s| s.state == st)
                    .map(|s| s.version)
                    .collect()
            };
            let (unknown, drifted) = (with(MigrationState::Unknown), with(MigrationState::Drifted));
            if !unknown.is_empty() {
                eprintln!("error: {}", Error::DatabaseAhead { versions: unknown });
                ExitCode::from(exit::AHEAD)
            } else if !drifted.is_empty() {
                eprintln!("error: {}", Error::MigrationDrift { versions: drifted });
                ExitCode::from(exit::DRIFT)
            } else if !with(MigrationState::Pending).is_empty() {
                ExitCode::from(exit::PENDING)
            } else {
                ExitCode::SUCCESS
            }
        }
    };
    db.close().await;
    Ok(code)
}
