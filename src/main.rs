//! `persist`: the command-line shell over the library. Argument parsing and
//! printing only.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use persist::{Config, Db, Error};

mod cli;

use cli::exit;

#[derive(Parser)]
#[command(
    name = "persist",
    version,
    about = "Schema, migrations and data of the game server"
)]
struct Cli {
    /// Database URL (sqlite://path.db, sqlite::memory:, postgres://user@host/db).
    /// Defaults to $DATABASE_URL, then sqlite://persist.db. Also accepted
    /// after the subcommand; `copy` takes --from and --to instead.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,

    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

/// The database option of the subcommands that work on one database.
#[derive(clap::Args)]
struct DbArg {
    /// Database URL (sqlite://path.db, sqlite::memory:, postgres://user@host/db).
    /// Defaults to $DATABASE_URL, then sqlite://persist.db.
    #[arg(long = "database-url", value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply every pending migration.
    Migrate(DbArg),
    /// Show each migration as applied, pending, drifted or unknown.
    /// Exit 0 when up to date, 3 when migrations are pending, 4 on drift,
    /// 5 when the database is newer than this binary, 1 on any error.
    Status {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        args: cli::status::Args,
    },
    /// Check that the database answers.
    Ping(DbArg),
    /// Migrate, then play the game's flows for synthetic players and print a summary.
    Demo {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        args: cli::demo::Args,
    },
    /// Compare the live schema with what this binary's migrations produce.
    Verify {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        args: cli::verify::Args,
    },
    /// Delete expired sessions in short batches (safe while the server serves).
    SweepSessions {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        args: cli::sweep::Args,
    },
    /// Delete old battle records (exactly-once battle ends) in short batches.
    SweepBattles {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        args: cli::sweep_battles::Args,
    },
    /// Copy every table from one database to another (either dialect).
    Copy(cli::copy::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
                Error::ReadOnlyServer { .. } | Error::PendingOnStandby { .. } => exit::READ_ONLY,
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
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The PostgreSQL driver logs every statement's parameters (emails,
    // hashes, token digests) at debug level: cap it whatever RUST_LOG says.
    // A later directive for the same target replaces an earlier one.
    if let Ok(cap) = "tokio_postgres=warn".parse() {
        filter = filter.add_directive(cap);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The error and its sources on one line, without repeating a source whose
/// text the error already shows.
pub(crate) fn chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        // A PostgreSQL server error's own text carries its DETAIL line, which
        // can quote row values (emails, hashes); the crate's message already
        // holds the server's primary message and SQLSTATE.
        if s.is::<tokio_postgres::Error>() || s.is::<tokio_postgres::error::DbError>() {
            break;
        }
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out.replace('\n', " ")
}

/// Opens the database the global `--database-url` (or `DATABASE_URL`) names.
async fn open(database_url: Option<&str>) -> Result<Db, Error> {
    persist::open(&config(database_url)?).await
}

/// Opens it for inspection: a SQLite file must exist and is opened read-only
/// (`status`, `ping`, `verify` never create or change it).
async fn inspect(database_url: Option<&str>) -> Result<Db, Error> {
    persist::open(&config(database_url)?.with_read_only(true)).await
}

fn config(database_url: Option<&str>) -> Result<Config, Error> {
    let config = match database_url {
        Some(url) => {
            let config = Config::from_url(url)?;
            warn_if_password_on_command_line("--database-url", &config);
            config
        }
        None => Config::from_env()?,
    };
    Ok(config)
}

/// Warns on stderr when `config`'s password came from a URL given as the
/// command-line option `flag`: other local users see it in the process list.
pub(crate) fn warn_if_password_on_command_line(flag: &str, config: &Config) {
    if config.password_source() == Some(persist::PasswordSource::Url) {
        eprintln!(
            "warning: the password in {flag} is visible to other local users in the process \
             list; leave it out of the URL and use PGPASSWORD, a password file (~/.pgpass or \
             PGPASSFILE) or DATABASE_URL instead"
        );
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let top = cli.database_url;
    // The option after the subcommand wins over the one before it.
    let pick = |a: DbArg| a.database_url.or(top.clone());
    match cli.command {
        Command::Ping(a) => {
            // The liveness half of the health check: the same deadline and
            // error an orchestrator's probe would see.
            let db = inspect(pick(a).as_deref()).await?;
            let health = db.health().await;
            db.close().await;
            match (health.live, health.error) {
                (true, _) => {
                    println!("ok: {} answers", db.config().redacted_url());
                    Ok(ExitCode::SUCCESS)
                }
                (false, error) => {
                    let message = error.map_or_else(|| "no answer".to_string(), |e| e.message);
                    eprintln!("error: {}", message.replace('\n', " "));
                    Ok(ExitCode::from(exit::ERROR))
                }
            }
        }
        Command::Migrate(a) => {
            let db = open(pick(a).as_deref()).await?;
            let report = db.migrate().await?;
            for m in &report.applied {
                println!("applied {:04}_{} ({} ms)", m.version, m.name, m.millis);
            }
            println!(
                "schema at version {} ({} applied now)",
                report.version,
                report.applied.len()
            );
            db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { db: a, args } => {
            cli::status::run(inspect(pick(a).as_deref()).await, args).await
        }
        Command::Demo { db: a, args } => {
            let config = args.with_replicas(config(pick(a).as_deref())?)?;
            cli::demo::run(&persist::open(&config).await?, args).await
        }
        Command::Verify { db: a, args } => {
            cli::verify::run(&inspect(pick(a).as_deref()).await?, args).await
        }
        Command::SweepSessions { db: a, args } => {
            cli::sweep::run(&open(pick(a).as_deref()).await?, args).await
        }
        Command::SweepBattles { db: a, args } => {
            cli::sweep_battles::run(&open(pick(a).as_deref()).await?, args).await
        }
        Command::Copy(args) => {
            if top.is_some() {
                return Err(Error::Config(
                    "copy reads --from and writes --to; it takes no --database-url".into(),
                ));
            }
            cli::copy::run(args).await
        }
    }
}
