//! `persist status [--json]`: where each migration stands in the database.
//!
//! Exit codes, the same with and without `--json`: 0 up to date, 3 migrations
//! pending, 4 drift (an applied migration was edited after it was applied),
//! 5 the database records migrations this binary does not ship, 7 the
//! database is the target of a `copy` that did not finish, 9 a
//! no-transaction migration was interrupted (incomplete; `migrate` resumes
//! it), 1 any error
//! (then stderr has one `error:` line; the table prints nothing on stdout,
//! `--json` prints an error object, below).
//! On drift, "ahead" and an incomplete copy, stderr also has one `error:` line.
//!
//! # Text output
//!
//! A table `VERSION NAME STATE APPLIED_AT`, one row per migration.
//!
//! # JSON output (`--json`)
//!
//! One JSON object on one line of stdout. These fields are stable: later
//! versions may add fields, never rename, remove or retype one.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `backend` | string | `"sqlite"` or `"postgres"` |
//! | `url` | string | the database URL, password replaced by `***` |
//! | `status` | string | `"up_to_date"` (exit 0), `"pending"` (3), `"drifted"` (4), `"ahead"` (5), `"incomplete_copy"` (7) or `"incomplete"` (9); when several apply, the one with the higher exit code |
//! | `up_to_date` | bool | `status == "up_to_date"` |
//! | `schema_version` | integer | highest version recorded in the database's `schema_migrations` (applied, drifted or unknown), 0 when none |
//! | `latest_version` | integer | highest version this binary ships |
//! | `migrations` | array | one object per migration, ascending by `version` |
//! | `migrations[].version` | integer | version |
//! | `migrations[].name` | string | name (the shipped one; the recorded one for `unknown`) |
//! | `migrations[].state` | string | `"applied"`, `"pending"`, `"drifted"`, `"unknown"` (recorded, not shipped) or `"incomplete"` (a no-transaction migration started and not finished) |
//! | `migrations[].applied_at` | integer or null | when it was applied, Unix seconds (UTC); `null` when pending |
//! | `health` | object | `Db::health()`: `live`, `ready`, ... (docs/OBSERVABILITY.md) |
//! | `replicas` | array | only when read replicas are configured: one object per replica, checked now (`Db::check_replicas`) |
//! | `replicas[].url` | string | its URL, password replaced by `***` |
//! | `replicas[].state` | string | `"healthy"`, `"lagging"`, `"unreachable"`, `"promoted"` or `"starting"` |
//! | `replicas[].replayed` | integer | WAL position it has replayed, bytes from `0/0` |
//! | `replicas[].lag` | integer or null | lag in milliseconds (see `ReplicaStatus::lag`) |
//! | `replicas[].behind_bytes` | integer or null | WAL bytes it had not replayed |
//! | `replicas[].reads` | integer | reads it answered (0 here) |
//! | `replicas[].last_error` | string or null | why it is out of the rotation |
//!
//! ```json
//! {"backend":"sqlite","url":"sqlite://persist.db","status":"up_to_date","up_to_date":true,"schema_version":1,"latest_version":1,"migrations":[{"version":1,"name":"init","state":"applied","applied_at":1764270000}]}
//! ```
//!
//! On any error (exit 1) `--json` prints one object with `status` `"error"`,
//! `up_to_date` `false`, `error` (the message, as on stderr) and `kind`
//! (`Error::kind`), so a consumer always has an object to read and
//! `jq -e .up_to_date` fails:
//!
//! ```json
//! {"status":"error","up_to_date":false,"error":"database unavailable: ...","kind":"unavailable"}
//! ```

use std::process::ExitCode;

use persist::{Db, Error, MigrationState, MigrationStatus, Migrations};
use serde::Serialize;

use super::exit;

/// Arguments of `status`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object (stable fields, see the docs) instead of the
    /// table. Exit codes are the same.
    #[arg(long)]
    json: bool,
}

/// The `--json` object.
#[derive(Serialize)]
struct StatusJson<'a> {
    backend: String,
    url: String,
    status: &'static str,
    up_to_date: bool,
    schema_version: i64,
    latest_version: i64,
    migrations: Vec<MigrationJson<'a>>,
    health: persist::Health,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replicas: Vec<persist::ReplicaStatus>,
}

#[derive(Serialize)]
struct MigrationJson<'a> {
    version: i64,
    name: &'a str,
    state: String,
    applied_at: Option<i64>,
}

/// The `--json` object on error.
#[derive(Serialize)]
struct ErrorJson {
    status: &'static str,
    up_to_date: bool,
    error: String,
    kind: &'static str,
}

pub async fn run(db: Result<Db, Error>, args: Args) -> Result<ExitCode, Error> {
    let json = args.json;
    let out = match db {
        Ok(db) => {
            let out = report(&db, args).await;
            db.close().await;
            out
        }
        Err(e) => Err(e),
    };
    if let (Err(e), true) = (&out, json) {
        print_error_json(e);
    }
    out
}

/// Prints the `--json` error object (the caller prints the `error:` line).
fn print_error_json(e: &Error) {
    let json = ErrorJson {
        status: "error",
        up_to_date: false,
        error: crate::chain(e),
        kind: e.kind(),
    };
    if let Ok(line) = serde_json::to_string(&json) {
        println!("{line}");
    }
}

async fn report(db: &Db, args: Args) -> Result<ExitCode, Error> {
    let mut status = db.migration_status().await?;
    let incomplete = status.iter().any(MigrationStatus::marks_incomplete_copy);
    status.retain(|s| !s.marks_incomplete_copy());
    let with = |st: MigrationState| -> Vec<i64> {
        status
            .iter()
            .filter(|s| s.state == st)
            .map(|s| s.version)
            .collect()
    };
    let (unknown, drifted) = (with(MigrationState::Unknown), with(MigrationState::Drifted));
    let pending = !with(MigrationState::Pending).is_empty();
    let interrupted = with(MigrationState::Incomplete);
    let (code, word) = if !interrupted.is_empty() {
        (exit::INTERRUPTED, "incomplete")
    } else if incomplete {
        (exit::INCOMPLETE, "incomplete_copy")
    } else if !unknown.is_empty() {
        (exit::AHEAD, "ahead")
    } else if !drifted.is_empty() {
        (exit::DRIFT, "drifted")
    } else if pending {
        (exit::PENDING, "pending")
    } else {
        (0, "up_to_date")
    };

    if args.json {
        let latest_version = Migrations::embedded(db.backend())?.latest_version();
        let health = db.health().await;
        let replicas = db.check_replicas().await;
        if !print_json(db, &status, word, latest_version, (health, replicas)) {
            return Ok(ExitCode::from(exit::ERROR));
        }
    } else {
        print_table(&status);
    }

    if !interrupted.is_empty() {
        let list: Vec<String> = interrupted.iter().map(|v| format!("{v:04}")).collect();
        eprintln!(
            "error: no-transaction migration(s) {} started and did not finish: run migrate to \
             resume",
            list.join(", ")
        );
    } else if incomplete {
        eprintln!("error: {}", super::INCOMPLETE_COPY);
    } else if !unknown.is_empty() {
        eprintln!("error: {}", Error::DatabaseAhead { versions: unknown });
    } else if !drifted.is_empty() {
        eprintln!("error: {}", Error::MigrationDrift { versions: drifted });
    }
    Ok(ExitCode::from(code))
}

fn print_table(status: &[MigrationStatus]) {
    println!("{:<8} {:<24} {:<8} APPLIED_AT", "VERSION", "NAME", "STATE");
    for s in status {
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
}

/// Prints the `--json` object; false when it could not be encoded.
fn print_json(
    db: &Db,
    status: &[MigrationStatus],
    word: &'static str,
    latest_version: i64,
    (health, replicas): (persist::Health, Vec<persist::ReplicaStatus>),
) -> bool {
    let mut migrations: Vec<MigrationJson<'_>> = status
        .iter()
        .map(|s| MigrationJson {
            version: s.version,
            name: &s.name,
            state: s.state.to_string(),
            applied_at: s.applied_at,
        })
        .collect();
    migrations.sort_by_key(|m| m.version);
    let schema_version = status
        .iter()
        .filter(|s| {
            !matches!(
                s.state,
                MigrationState::Pending | MigrationState::Incomplete
            )
        })
        .map(|s| s.version)
        .max()
        .unwrap_or(0);
    let json = StatusJson {
        backend: db.backend().to_string(),
        url: db.config().redacted_url(),
        status: word,
        up_to_date: word == "up_to_date",
        schema_version,
        latest_version,
        migrations,
        health,
        replicas,
    };
    match serde_json::to_string(&json) {
        Ok(line) => {
            println!("{line}");
            true
        }
        // Not reachable with these types; never panic on it.
        Err(e) => {
            eprintln!("error: cannot encode the status as JSON: {e}");
            false
        }
    }
}
