//! `persist migrate --plan [--json]`: what `migrate` would apply, changing
//! nothing. Exit 0 when nothing is pending, 3 when something is (4 drift,
//! 5 database ahead, 1 any error, as `migrate`).
//!
//! Text: per pending migration a header (`NNNN_name`, "in a transaction" or
//! "no transaction"), then each statement with its kind, the lock it takes
//! on which table, its first line, and its lint findings; a summary line.
//! JSON: one object, `backend`, `pending[{version, name, in_transaction,
//! statements[{sql, kind, locks[{table, level}], findings[{rule, table,
//! reason}]}]}]` and `findings` (their count).

use std::process::ExitCode;

use persist::{Db, Error, MigrationPlan};

use super::exit;

/// The plan options of `migrate`.
#[derive(clap::Args)]
pub struct Args {
    /// Print what would be applied (statements, transaction or not, the lock
    /// each statement takes, lint findings) and change nothing. Exit 0 when
    /// nothing is pending, 3 when something is.
    #[arg(long)]
    pub plan: bool,
    /// With --plan: print one JSON object instead of text.
    #[arg(long, requires = "plan")]
    pub json: bool,
}

pub async fn run(db: &Db, json: bool) -> Result<ExitCode, Error> {
    let plan = db.migration_plan().await;
    let status = db.migration_status().await;
    db.close().await;
    let plan = plan?;
    let version = status.map_or(0, |s| {
        s.iter()
            .filter(|m| m.state == persist::MigrationState::Applied)
            .map(|m| m.version)
            .max()
            .unwrap_or(0)
    });
    if json {
        let mut v = serde_json::to_value(&plan).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("findings".into(), plan.findings().count().into());
        }
        println!("{v}");
    } else {
        print_text(&plan, version);
    }
    Ok(if plan.pending.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::PENDING)
    })
}

fn print_text(plan: &MigrationPlan, version: i64) {
    if plan.pending.is_empty() {
        println!("nothing pending: schema at version {version}");
        return;
    }
    for m in &plan.pending {
        let how = if m.in_transaction {
            "in a transaction"
        } else {
            "no transaction: one statement at a time"
        };
        println!("{:04}_{} ({how})", m.version, m.name);
        for (i, s) in m.statements.iter().enumerate() {
            let locks: Vec<String> = s
                .locks
                .iter()
                .map(|l| format!("{} on {}", l.level, l.table))
                .collect();
            let locks = if locks.is_empty() {
                "no table lock".to_string()
            } else {
                locks.join(", ")
            };
            println!("  {}. {}: {locks}", i + 1, s.kind);
            let first = s
                .sql
                .lines()
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
                .unwrap_or("");
            println!("       {}", first.trim());
            for f in &s.findings {
                let on = f
                    .table
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default();
                println!("       lint {}{on}: {}", f.rule.id(), f.reason);
            }
        }
    }
    println!(
        "{} pending migration(s), {} lint finding(s); nothing was changed",
        plan.pending.len(),
        plan.findings().count()
    );
}
