//! Schema verification: the live schema against what this binary's
//! migrations produce.
//!
//! [`verify`] builds the expected schema on a scratch database of the same
//! dialect, reads both catalogs ([`read_schema`](crate::read_schema)) and
//! lists every difference ([`compare`]). SQLite also runs
//! `PRAGMA integrity_check` and `PRAGMA foreign_key_check` on the live file.
//!
//! - SQLite: the scratch database is a private in-memory database, migrated
//!   with the embedded migrations.
//! - PostgreSQL, by default: the description of the expected schema
//!   embedded in this binary at build time
//!   (`migrations/postgres/expected_schema.json`, [`embedded_schema`]; a test
//!   proves it equal to what the migrations build). Only the catalog is
//!   read: this works on a hot standby and without the `CREATE` privilege.
//! - PostgreSQL with [`ExpectedSchema::Scratch`]: the scratch is a schema `persist_verify_<random>` created in
//!   the live database, migrated through its own connection whose
//!   `search_path` is that schema, read, then dropped (also when migrating or
//!   reading it fails; a future dropped mid-way drops it from a spawned task).
//!   The user needs the `CREATE` privilege on the database. Nothing outside
//!   the scratch schema is written.
//!
//! The JSON form is documented on [`VerifyReport`].

use super::compare::compare;
use super::introspect::read_schema;
use crate::backend::BackendKind;
use crate::config::Config;
use crate::db::{Backend, Db};
use crate::error::Error;
use crate::error::Result;
use crate::types::schema::Schema;
use crate::types::verify::{ExpectedSchema, VerifyReport};
use crate::{postgres, sqlite};

/// The expected PostgreSQL schema, as `verify` compares it by default.
const POSTGRES_EXPECTED: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/migrations/postgres/expected_schema.json"
));

/// The schema this binary's migrations build on PostgreSQL, from the
/// description embedded at build time (`migrations/postgres/expected_schema.json`;
/// a test migrates a database and proves the two equal).
///
/// # Errors
/// [`Error::InvalidMigrations`] if the embedded description cannot be read
/// (a test keeps this from shipping).
pub fn embedded_schema() -> Result<Schema> {
    serde_json::from_str(POSTGRES_EXPECTED).map_err(|e| {
        Error::InvalidMigrations(format!(
            "the embedded expected schema (migrations/postgres/expected_schema.json) is unreadable: {e}"
        ))
    })
}

/// Compares the live schema of `db` with what this binary's migrations
/// produce, and (SQLite) runs the integrity and foreign-key checks.
/// PostgreSQL: against the embedded description ([`ExpectedSchema::Embedded`]),
/// reading only; see [`verify_with`] for the scratch-schema mode.
///
/// # Errors
/// As [`verify_with`].
pub async fn verify(db: &Db) -> Result<VerifyReport> {
    verify_with(db, ExpectedSchema::Embedded).await
}

/// [`verify`], taking the expected PostgreSQL schema from `from`.
///
/// SQLite builds the expected schema in a private in-memory database
/// whatever `from` says. PostgreSQL: [`ExpectedSchema::Embedded`] reads only
/// the live catalog; [`ExpectedSchema::Scratch`] builds it in a
/// schema
/// `persist_verify_<random>` created in the live database, migrated through
/// its own connection whose `search_path` is that schema, read, then dropped
/// (also when migrating or reading it fails; if the call is cancelled, from a
/// task spawned on the runtime). The user needs the `CREATE` privilege on the
/// database. Nothing outside the scratch schema is written.
///
/// # Errors
/// [`Error::Closed`](crate::Error::Closed),
/// [`Error::Unavailable`](crate::Error::Unavailable),
/// [`Error::Timeout`](crate::Error::Timeout) or a driver error when a catalog
/// cannot be read; on PostgreSQL also a driver error when the scratch schema
/// cannot be created (no `CREATE` privilege on the database) or migrated.
/// Differences are not errors: they are in the report.
pub async fn verify_with(db: &Db, from: ExpectedSchema) -> Result<VerifyReport> {
    let database = db.config().redacted_url();
    match db.live()? {
        Backend::Sqlite(p) => {
            // The integrity check first: on a damaged file the later reads
            // can fail with SQLITE_CORRUPT, and its findings must survive.
            let integrity = match p.read(sqlite::introspect::integrity_check).await {
                Ok(rows) => rows,
                // SQLite's own words ("database disk image is malformed").
                Err(e) if is_corrupt(&e) => vec![std::error::Error::source(&e)
                    .and_then(std::error::Error::source)
                    .map_or_else(|| e.to_string(), ToString::to_string)],
                Err(e) => return Err(e),
            };
            let sound = integrity.len() == 1 && integrity[0] == "ok";
            let expected = sqlite_expected().await?;
            let live = p.read(sqlite::introspect::schema).await;
            let fk = p.read(sqlite::introspect::foreign_key_violations).await;
            let (differences, fk) = match (live, fk) {
                (Ok(live), Ok(fk)) => (compare(&expected, &live), Some(fk)),
                // Not comparable on a damaged file: the findings say why.
                (live, fk) if !sound => (
                    live.map(|l| compare(&expected, &l)).unwrap_or_default(),
                    fk.ok(),
                ),
                (Err(e), _) | (_, Err(e)) => return Err(e),
            };
            Ok(VerifyReport {
                backend: BackendKind::Sqlite,
                database,
                differences,
                integrity_check: Some(integrity),
                foreign_key_violations: fk,
            })
        }
        Backend::Postgres(p) => {
            let live = postgres::introspect::schema(&*p.get().await?).await?;
            let expected = match from {
                ExpectedSchema::Embedded => embedded_schema()?,
                ExpectedSchema::Scratch => postgres_expected(db.config(), p).await?,
            };
            Ok(VerifyReport {
                backend: BackendKind::Postgres,
                database,
                differences: compare(&expected, &live),
                integrity_check: None,
                foreign_key_violations: None,
            })
        }
    }
}

/// SQLite reported the file damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`).
fn is_corrupt(e: &crate::Error) -> bool {
    match e {
        crate::Error::Database(d) => matches!(d.sqlite_code().map(|c| c & 0xff), Some(11 | 26)),
        _ => false,
    }
}

async fn sqlite_expected() -> Result<Schema> {
    let scratch = crate::open(&Config::from_url("sqlite::memory:")?).await?;
    let result = async {
        scratch.migrate().await?;
        read_schema(&scratch).await
    }
    .await;
    scratch.close().await;
    result
}

async fn postgres_expected(config: &Config, pool: &postgres::Pool) -> Result<Schema> {
    let scratch = postgres::scratch::Scratch::create(pool).await?;
    let result = async {
        let cfg = scratch.config(config)?.with_pool_size(1);
        let db = crate::open(&cfg).await?;
        let r = async {
            db.migrate().await?;
            read_schema(&db).await
        }
        .await;
        db.close().await;
        r
    }
    .await;
    let dropped = scratch.drop_now().await;
    let schema = result?;
    dropped?;
    Ok(schema)
}
