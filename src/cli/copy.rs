//! `persist copy`: every table from one database to another, either
//! dialect. The work is `persist::copy`; this prints its progress (stderr)
//! and the per-table verification (stdout).

use std::process::ExitCode;

use persist::{Config, CopyEvent, CopyOptions, Error};

/// Arguments of `copy`.
#[derive(clap::Args)]
pub struct Args {
    /// Source database URL. Read only; must be at this binary's schema version.
    #[arg(long, value_name = "URL")]
    pub from: String,

    /// Target database URL. Migrated first if needed; must hold no rows
    /// unless --force.
    #[arg(long, value_name = "URL")]
    pub to: String,

    /// When the target holds rows, delete them first (children first, in one
    /// transaction), then copy.
    #[arg(long)]
    pub force: bool,

    /// Rows per batch: one read and one write transaction each (1..=100000).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
}

fn progress(e: &CopyEvent) {
    match e {
        CopyEvent::TargetMigrated { applied, version } => eprintln!(
            "copy: migrated the target to version {version} ({})",
            applied.join(", ")
        ),
        CopyEvent::TargetEmptied { tables } => {
            eprintln!(
                "copy: --force: deleted the target's rows ({})",
                tables.join(", ")
            )
        }
        CopyEvent::TableStarted { table, rows } => eprintln!("copy: {table}: {rows} row(s)"),
        CopyEvent::BatchCopied {
            table,
            copied,
            rows,
        } => eprintln!("copy: {table}: {copied}/{rows}"),
        CopyEvent::IdCounterSet { user_id } => {
            eprintln!("copy: user id counter set to {user_id}; new accounts get larger ids")
        }
        CopyEvent::Verifying => eprintln!("copy: verifying row counts and checksums"),
        _ => {}
    }
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    let options = CopyOptions {
        force: args.force,
        batch_size: usize::try_from(args.batch_size).unwrap_or(usize::MAX),
    };
    let from_config = Config::from_url(&args.from)?;
    crate::warn_if_password_on_command_line("--from", &from_config);
    let to_config = Config::from_url(&args.to)?;
    crate::warn_if_password_on_command_line("--to", &to_config);
    let from = persist::open_copy_source(&from_config).await?;
    let to = match persist::open(&to_config).await {
        Ok(db) => db,
        Err(e) => {
            from.close().await;
            return Err(e);
        }
    };
    let result = persist::copy(&from, &to, &options, progress).await;
    from.close().await;
    to.close().await;
    let report = result?;

    println!(
        "{:<14} {:>12} {:>12}  {:<64}  {:<64}",
        "TABLE", "SOURCE_ROWS", "TARGET_ROWS", "SOURCE_SHA256", "TARGET_SHA256"
    );
    for (s, t) in report.source.tables.iter().zip(&report.target.tables) {
        println!(
            "{:<14} {:>12} {:>12}  {}  {}",
            s.table, s.rows, t.rows, s.sha256, t.sha256
        );
    }
    println!(
        "{:<14} {:>12} {:>12}  {}  {}",
        "total",
        report.source.rows(),
        report.target.rows(),
        report.source.sha256,
        report.target.sha256
    );
    println!(
        "ok: copied {} row(s) from {} to {} (schema version {}); row counts and checksums match; \
         new accounts get ids above {}",
        report.target.rows(),
        from_config.redacted_url(),
        to_config.redacted_url(),
        report.schema_version,
        report.user_id_counter
    );
    Ok(ExitCode::SUCCESS)
}
