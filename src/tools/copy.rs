//! Copying every table between two databases of either dialect; the steps
//! are documented on [`copy()`], the checksum that proves the copy identical
//! on [`ContentChecksum`](crate::ContentChecksum).

use std::path::Path;

use super::checksum::{checksum_with, content_checksum_with};
use super::copy_io::{Reader, Writer};
use crate::config::Config;
use crate::db::{Backend, Db};
use crate::error::CopyRefusal;
use crate::error::{Error, Result, Violation};
use crate::migrate::{MigrationState, MigrationStatus};
use crate::types::copy::{ContentChecksum, CopyEvent, CopyOptions, CopyReport};
use crate::types::tables::{KeyValue, TableSpec, TABLES};
use crate::{postgres, sqlite};

/// The largest accepted [`CopyOptions::batch_size`].
const MAX_BATCH: usize = 100_000;

/// Opens the source of a copy: as [`open`](crate::open), except that a
/// SQLite file must already exist (opening would create an empty one).
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) for a SQLite file that does not exist; otherwise as
/// [`open`](crate::open).
pub async fn open_copy_source(config: &Config) -> Result<Db> {
    if let Some(path) = config.sqlite_path() {
        if !path.exists() {
            return Err(Error::Config(format!(
                "source database file {} does not exist",
                path.display()
            )));
        }
    }
    crate::open(config).await
}

/// Copies every table of `from` into `to`, calling `on_event` as it goes.
///
/// The steps, stopping at the first failure:
///
/// 1. **Refusals** (nothing is written; [`Error::CopyRefused`](crate::Error::CopyRefused)): source and
///    target are one database; the source is not exactly at this binary's
///    schema (a pending, drifted or unknown migration); the target has a
///    drifted or unknown migration; the target already holds rows in one of
///    the copied tables and [`CopyOptions::force`] is off.
/// 2. **Migrate the target** when it has pending migrations (a fresh target is
///    migrated from scratch). Both sides are then at the same version.
/// 3. **Empty the target** (only with `force`, only when it holds rows):
///    `DELETE` from every copied table, children first, in one transaction.
/// 4. **Copy** the five tables in foreign-key order (accounts, then sessions,
///    army_loadouts, progression, user_unlocks). The source is read from one
///    consistent snapshot (PostgreSQL: a `REPEATABLE READ, READ ONLY`
///    transaction; SQLite file: a read transaction on a dedicated connection;
///    SQLite in memory: the writer held for the whole copy), in batches by
///    primary-key ranges (keyset pagination: `WHERE key > last ORDER BY key
///    LIMIT n`). Each batch is written in one transaction, with every value
///    as read (user ids included). A failure leaves the batches already
///    committed; copy again with `force`.
/// 5. **Move the id counter** of the target (PostgreSQL identity sequence via
///    `setval(pg_get_serial_sequence('accounts', 'user_id'), n)`; SQLite
///    `sqlite_sequence`) to the largest of: the highest copied `user_id`, the
///    source's counter, the target's own counter. So new accounts get ids
///    above every copied id, above every id the source ever issued (its
///    newest accounts may have been deleted), and never one the target issued.
/// 6. **Verify**: [`ContentChecksum`](crate::ContentChecksum) of the source (in the same snapshot)
///    and of the target; any difference in row counts or checksums is
///    [`Error::CopyMismatch`](crate::Error::CopyMismatch).
///
/// `schema_migrations` is not copied: each side keeps its own history.
/// The target should not be in use during the copy (nothing locks it between
/// the checks and the writes).
///
/// # Errors
/// [`Error::InvalidInput`](crate::Error::InvalidInput) for a batch size outside 1..=100000 (nothing
/// runs); [`Error::CopyRefused`](crate::Error::CopyRefused) (nothing written); migration errors of the
/// target; [`Error::CopyMismatch`](crate::Error::CopyMismatch) when the verification finds a difference;
/// [`Error::Closed`](crate::Error::Closed), [`Error::Unavailable`](crate::Error::Unavailable), [`Error::Timeout`](crate::Error::Timeout),
/// [`Error::Constraint`](crate::Error::Constraint) or a driver error from either side. After a failure
/// in or after the copy step the target holds a partial copy.
pub async fn copy(
    from: &Db,
    to: &Db,
    options: &CopyOptions,
    mut on_event: impl FnMut(&CopyEvent),
) -> Result<CopyReport> {
    if !(1..=MAX_BATCH).contains(&options.batch_size) {
        return Err(Error::invalid(
            "batch_size",
            Violation::OutOfRange {
                min: 1,
                max: MAX_BATCH as i64,
            },
        ));
    }
    let Checked {
        occupied,
        target_pending,
        source_status,
    } = check(from, to, options).await?;
    let mut target_migrated = Vec::new();
    if target_pending {
        let report = to.migrate().await?;
        target_migrated = report
            .applied
            .iter()
            .map(|m| format!("{:04}_{}", m.version, m.name))
            .collect();
        on_event(&CopyEvent::TargetMigrated {
            applied: target_migrated.clone(),
            version: report.version,
        });
    }
    check_target_matches(to, &source_status).await?;
    let schema_version = source_status.iter().map(|s| s.version).max().unwrap_or(0);

    let mut writer = Writer::open(to).await?;
    // Until its checksums are verified, the target is marked incomplete:
    // status, verify and an older binary's migrate all refuse it.
    writer.mark_incomplete(true).await?;
    let mut target_emptied = Vec::new();
    if !occupied.is_empty() {
        writer.empty().await?;
        target_emptied = occupied;
        on_event(&CopyEvent::TargetEmptied {
            tables: target_emptied.clone(),
        });
    }

    let mut reader = Reader::open(from).await?;
    let limit = options.batch_size;
    for spec in &TABLES {
        copy_table(&mut reader, &mut writer, spec, limit, &mut on_event).await?;
    }
    let counter = reader
        .id_counter()
        .await?
        .max(reader.max_user_id().await?)
        .max(writer.id_counter().await?);
    writer.set_id_counter(counter).await?;
    on_event(&CopyEvent::IdCounterSet { user_id: counter });
    drop(writer);

    on_event(&CopyEvent::Verifying);
    let source = checksum_with(&mut reader, limit).await?;
    reader.finish().await?;
    let target = content_checksum_with(to, limit).await?;
    compare_checksums(&source, &target)?;
    Writer::open(to).await?.mark_incomplete(false).await?;
    Ok(CopyReport {
        schema_version,
        target_migrated,
        target_emptied,
        user_id_counter: counter,
        source,
        target,
    })
}

/// What the checks before a copy found.
struct Checked {
    /// The target's tables that hold rows.
    occupied: Vec<String>,
    /// The target has pending migrations.
    target_pending: bool,
    /// The source's migration status.
    source_status: Vec<MigrationStatus>,
}

/// Step 1: the refusals, before anything is written.
async fn check(from: &Db, to: &Db, options: &CopyOptions) -> Result<Checked> {
    if same_database(from, to).await? {
        return Err(Error::CopyRefused(CopyRefusal::SameDatabase));
    }
    let source_status = from.migration_status().await?;
    let not_applied = describe_states(&source_status, |s| s != MigrationState::Applied);
    if !not_applied.is_empty() || source_status.is_empty() {
        return Err(Error::CopyRefused(CopyRefusal::SourceSchema {
            detail: if not_applied.is_empty() {
                "no migration applied".into()
            } else {
                not_applied
            },
        }));
    }
    // The mark of an unfinished copy is cleared by this one (after --force
    // if rows were written).
    let mut target_status = to.migration_status().await?;
    target_status.retain(|s| !s.marks_incomplete_copy());
    let in_the_way = describe_states(&target_status, |s| {
        matches!(s, MigrationState::Drifted | MigrationState::Unknown)
    });
    if !in_the_way.is_empty() {
        return Err(Error::CopyRefused(CopyRefusal::TargetSchema {
            detail: in_the_way,
        }));
    }
    let occupied = non_empty_tables(to).await?;
    if !occupied.is_empty() && !options.force {
        return Err(Error::CopyRefused(CopyRefusal::TargetNotEmpty {
            tables: occupied,
        }));
    }
    Ok(Checked {
        occupied,
        target_pending: target_status
            .iter()
            .any(|s| s.state == MigrationState::Pending),
        source_status,
    })
}

/// After migrating the target: both sides are at the same version.
async fn check_target_matches(to: &Db, source_status: &[MigrationStatus]) -> Result<()> {
    let versions = |st: &[MigrationStatus]| -> Vec<i64> { st.iter().map(|s| s.version).collect() };
    let mut target_status = to.migration_status().await?;
    target_status.retain(|s| !s.marks_incomplete_copy());
    let not_applied = describe_states(&target_status, |s| s != MigrationState::Applied);
    if !not_applied.is_empty() || versions(&target_status) != versions(source_status) {
        return Err(Error::CopyRefused(CopyRefusal::TargetSchema {
            detail: if not_applied.is_empty() {
                "its migrations differ from the source's".into()
            } else {
                not_applied
            },
        }));
    }
    Ok(())
}

/// Step 4 for one table: keyset batches from the snapshot, one write
/// transaction each.
async fn copy_table(
    reader: &mut Reader,
    writer: &mut Writer<'_>,
    spec: &TableSpec,
    limit: usize,
    on_event: &mut impl FnMut(&CopyEvent),
) -> Result<()> {
    let rows = reader.count(spec).await?;
    on_event(&CopyEvent::TableStarted {
        table: spec.name,
        rows,
    });
    let mut copied = 0u64;
    let mut after: Option<Vec<KeyValue>> = None;
    loop {
        let batch = reader.batch(spec, after.as_deref(), limit).await?;
        if batch.len == 0 {
            return Ok(());
        }
        writer.write(spec, &batch).await?;
        copied += batch.len as u64;
        on_event(&CopyEvent::BatchCopied {
            table: spec.name,
            copied,
            rows,
        });
        if batch.len < limit {
            return Ok(());
        }
        after = batch.last_key(spec)?;
    }
}

/// Step 6: any difference in row counts or checksums is
/// [`Error::CopyMismatch`](crate::Error::CopyMismatch).
fn compare_checksums(source: &ContentChecksum, target: &ContentChecksum) -> Result<()> {
    let mismatched: Vec<String> = source
        .tables
        .iter()
        .zip(&target.tables)
        .filter(|(s, t)| s != t)
        .map(|(s, t)| {
            format!(
                "{}: source {} rows sha256 {}, target {} rows sha256 {}",
                s.table, s.rows, s.sha256, t.rows, t.sha256
            )
        })
        .collect();
    if !mismatched.is_empty() || source.sha256 != target.sha256 {
        return Err(Error::CopyMismatch(mismatched.join("; ")));
    }
    Ok(())
}

/// `NNNN_name state` of every migration whose state `pick` selects.
fn describe_states(status: &[MigrationStatus], pick: impl Fn(MigrationState) -> bool) -> String {
    status
        .iter()
        .filter(|s| pick(s.state))
        .map(|s| format!("{:04}_{} {}", s.version, s.name, s.state))
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when `a` and `b` reach the same database: one handle, one SQLite
/// file, or the same PostgreSQL server, database and schema.
async fn same_database(a: &Db, b: &Db) -> Result<bool> {
    let (ba, bb) = (a.live()?, b.live()?);
    if std::ptr::eq(ba, bb) {
        return Ok(true);
    }
    match (ba, bb) {
        (Backend::Sqlite(_), Backend::Sqlite(_)) => {
            Ok(match (a.config().sqlite_path(), b.config().sqlite_path()) {
                (Some(x), Some(y)) => same_file(x, y),
                _ => false,
            })
        }
        (Backend::Postgres(x), Backend::Postgres(y)) => {
            let fx = postgres::copy::fingerprint(&*x.get().await?).await?;
            let fy = postgres::copy::fingerprint(&*y.get().await?).await?;
            Ok(fx == fy)
        }
        _ => Ok(false),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The copied tables that exist in `db` and hold rows.
async fn non_empty_tables(db: &Db) -> Result<Vec<String>> {
    match db.live()? {
        Backend::Sqlite(p) => p.read(sqlite::copy::non_empty_tables).await,
        Backend::Postgres(p) => postgres::copy::non_empty_tables(&*p.get().await?).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::tables::Kind;

    #[tokio::test(flavor = "current_thread")]
    async fn specs_match_the_migrated_schema() {
        let db = crate::open(&Config::from_url("sqlite::memory:").unwrap())
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let schema = crate::read_schema(&db).await.unwrap();
        for spec in &TABLES {
            let t = &schema.tables[spec.name];
            let cols: Vec<(&str, Kind)> = t
                .columns
                .iter()
                .map(|c| {
                    let k = match c.class {
                        crate::TypeClass::Integer => Kind::Int,
                        crate::TypeClass::Text => Kind::Text,
                        _ => Kind::Bytes,
                    };
                    (c.name.as_str(), k)
                })
                .collect();
            assert_eq!(cols, spec.columns.to_vec(), "{}", spec.name);
            let key: Vec<&str> = spec.key_columns().iter().map(|(n, _)| *n).collect();
            assert_eq!(t.primary_key, key, "{}", spec.name);
        }
        db.close().await;
    }
}
