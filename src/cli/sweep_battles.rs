//! `persist sweep-battles`: delete old battle records in short batches.
//!
//! Runs [`BattlesRepo::delete_ended_before`](persist::BattlesRepo::delete_ended_before)
//! like `sweep-sessions` runs the session sweep: each batch of at most
//! `--batch-size` rows is its own short transaction. A battle record tells a
//! retried report from a new battle, so keep it longer than the match server
//! retries: the default cutoff is seven days before now.
//!
//! Output: `deleted N battle records (ended_at < CUTOFF, batches of B) in S s`
//! on stdout. Exit 0 on success, 1 on any error.

use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use persist::{Db, Error};

/// Default retention of battle records: seven days.
const DEFAULT_KEEP_SECS: i64 = 7 * 86_400;

/// Arguments of `sweep-battles`.
#[derive(clap::Args)]
pub struct Args {
    /// Delete records of battles that ended before SECS (Unix seconds, UTC).
    /// Defaults to seven days before the current time.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    before: Option<i64>,
    /// Most rows deleted per batch (1..=100000); each batch is one short
    /// transaction.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    batch_size: i64,
}

pub async fn run(db: &Db, args: Args) -> Result<ExitCode, Error> {
    let cutoff = args.before.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .saturating_sub(DEFAULT_KEEP_SECS)
    });
    eprintln!(
        "sweeping battle records with ended_at < {cutoff} in batches of {}",
        args.batch_size
    );
    let started = Instant::now();
    let out = db
        .battles()
        .delete_ended_before(cutoff, args.batch_size)
        .await;
    db.close().await;
    let deleted = out?;
    println!(
        "deleted {deleted} battle records (ended_at < {cutoff}, batches of {}) in {:.3} s",
        args.batch_size,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
