//! `persist verify`: compare the live schema with what this binary's
//! migrations produce. The work is `persist::verify`; this prints it.

use std::process::ExitCode;

use persist::{Db, Error};

use super::exit;

/// Arguments of `verify`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text: ok, backend, database,
    /// differences[{kind, object, detail}], integrity_check,
    /// foreign_key_violations, incomplete_copy.
    #[arg(long)]
    pub json: bool,
    /// PostgreSQL: build the expected schema now in a scratch schema of the
    /// live database (needs the CREATE privilege and a writable server)
    /// instead of using the description embedded in this binary.
    #[arg(long)]
    pub scratch: bool,
}

pub async fn run(db: &Db, args: Args) -> Result<ExitCode, Error> {
    let from = if args.scratch {
        persist::ExpectedSchema::Scratch
    } else {
        persist::ExpectedSchema::Embedded
    };
    let report = persist::verify_with(db, from).await;
    let status = db.migration_status().await;
    db.close().await;
    let report = report?;
    // A history that cannot be read (another tool's table) is not a mark;
    // the report above covers the schema either way.
    let incomplete =
        matches!(&status, Ok(s) if s.iter().any(persist::MigrationStatus::marks_incomplete_copy));
    if incomplete {
        eprintln!("error: {}", super::INCOMPLETE_COPY);
    }
    if args.json {
        let mut v = report.to_json_value();
        if let Some(o) = v.as_object_mut() {
            o.insert("incomplete_copy".into(), incomplete.into());
            if incomplete {
                o.insert("ok".into(), false.into());
            }
        }
        println!("{v}");
    } else {
        for d in &report.differences {
            println!("{d}");
        }
        if let Some(rows) = &report.integrity_check {
            println!("integrity_check: {}", rows.join("; "));
        }
        if let Some(by_table) = &report.foreign_key_violations {
            if by_table.is_empty() {
                println!("foreign_key_check: ok");
            } else {
                let list: Vec<String> = by_table.iter().map(|(t, n)| format!("{t}: {n}")).collect();
                println!(
                    "foreign_key_check: {} violation(s) ({})",
                    report.foreign_key_violation_count(),
                    list.join(", ")
                );
            }
        }
        if report.is_ok() {
            println!(
                "ok: the schema of {} matches this binary's migrations",
                report.database
            );
        } else {
            println!(
                "mismatch: {} schema difference(s) in {}{}",
                report.differences.len(),
                report.database,
                if report.integrity_ok() && report.foreign_key_violation_count() == 0 {
                    ""
                } else {
                    ", integrity check failed"
                }
            );
        }
    }
    Ok(if report.is_ok() && !incomplete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::MISMATCH)
    })
}
