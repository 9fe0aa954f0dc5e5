//! `persist sweep-sessions`: delete expired sessions in short batches.
//!
//! Runs [`SessionsRepo::delete_expired`](persist::SessionsRepo::delete_expired): each
//! batch of at most `--batch-size` rows is its own short transaction, so the
//! server keeps serving while it runs (SQLite: the writer is released between
//! batches; PostgreSQL: rows locked by others are skipped). A session expiring
//! exactly at `--now` is expired.
//!
//! Output: `deleted N expired sessions (expires_at <= NOW, batches of B) in
//! S s` on stdout. The repository loops over the batches itself and reports
//! only the total, so while it runs stderr shows a spinner on a terminal and
//! one `sweeping ...` line otherwise. Exit 0 on success, 1 on any error.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use persist::{Db, Error};

/// Arguments of `sweep-sessions`.
#[derive(clap::Args)]
pub struct Args {
    /// Delete sessions with expires_at <= SECS (Unix seconds, UTC).
    /// Defaults to the current time.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(0..))]
    now: Option<i64>,
    /// Most rows deleted per batch (1..=100000); each batch is one short
    /// transaction.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    batch_size: i64,
}

pub async fn run(db: &Db, args: Args) -> Result<ExitCode, Error> {
    let now = args.now.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    });
    let what = format!(
        "sweeping sessions with expires_at <= {now} in batches of {}",
        args.batch_size
    );
    let spinner = if std::io::stderr().is_terminal() {
        let s = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
            s.set_style(style);
        }
        s.set_message(what);
        s.enable_steady_tick(Duration::from_millis(100));
        Some(s)
    } else {
        eprintln!("{what}");
        None
    };
    let started = Instant::now();
    let out = db.sessions().delete_expired(now, args.batch_size).await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    db.close().await;
    let deleted = out?;
    println!(
        "deleted {deleted} expired sessions (expires_at <= {now}, batches of {}) in {:.3} s",
        args.batch_size,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
