//! Copying every table between two databases of either dialect, and the
//! content checksum that proves a copy identical.
//!
//! The steps are documented on [`copy()`], the checksum format on
//! [`ContentChecksum`].

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::db::{Backend, Db};
use crate::error::{Error, Result, Violation};
use crate::migrate::{MigrationState, MigrationStatus};
use crate::{postgres, sqlite};

/// The copied tables, in foreign-key order (parents first).
pub const COPY_TABLES: [&str; 5] = [
    "accounts",
    "sessions",
    "army_loadouts",
    "progression",
    "user_unlocks",
];

/// The value class of a copied column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
    Bytes,
}

/// A copied table: its columns (names and classes) and how many leading
/// columns form its primary key.
#[derive(Debug)]
pub(crate) struct TableSpec {
    pub(crate) name: &'static str,
    pub(crate) columns: &'static [(&'static str, Kind)],
    pub(crate) key: usize,
}

impl TableSpec {
    pub(crate) fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn key_columns(&self) -> &'static [(&'static str, Kind)] {
        self.columns.get(..self.key).unwrap_or(self.columns)
    }

    pub(crate) fn key_list(&self) -> String {
        self.key_columns()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `SELECT` of one batch in primary-key order: after the first
    /// `after` key values when given, then the limit, all bound.
    /// `mark(i, kind)` spells placeholder `i` (1-based) in the dialect;
    /// `kind` is the key column's class, `None` for the limit.
    pub(crate) fn batch_sql(
        &self,
        after: Option<usize>,
        mark: impl Fn(usize, Option<Kind>) -> String,
    ) -> String {
        let (cols, keys, name) = (self.column_list(), self.key_list(), self.name);
        match after {
            None => format!(
                "SELECT {cols} FROM {name} ORDER BY {keys} LIMIT {}",
                mark(1, None)
            ),
            Some(n) => {
                let marks: Vec<String> = self
                    .key_columns()
                    .iter()
                    .take(n)
                    .enumerate()
                    .map(|(i, (_, kind))| mark(i + 1, Some(*kind)))
                    .collect();
                format!(
                    "SELECT {cols} FROM {name} WHERE ({keys}) > ({}) ORDER BY {keys} LIMIT {}",
                    marks.join(", "),
                    mark(n + 1, None)
                )
            }
        }
    }
}

const I: Kind = Kind::Int;
const T: Kind = Kind::Text;
const B: Kind = Kind::Bytes;

/// The schema of [`COPY_TABLES`] at this binary's version (a unit test holds
/// it to the migrations).
pub(crate) const TABLES: [TableSpec; 5] = [
    TableSpec {
        name: "accounts",
        columns: &[
            ("user_id", I),
            ("email", T),
            ("email_key", T),
            ("username", T),
            ("username_key", T),
            ("pass_hash", B),
            ("created_at", I),
            ("last_login_at", I),
        ],
        key: 1,
    },
    TableSpec {
        name: "sessions",
        columns: &[
            ("token", B),
            ("user_id", I),
            ("expires_at", I),
            ("created_at", I),
        ],
        key: 1,
    },
    TableSpec {
        name: "army_loadouts",
        columns: &[
            ("user_id", I),
            ("element_id", I),
            ("army_ability_1", I),
            ("army_ability_2", I),
            ("army_ability_3", I),
            ("army_ability_4", I),
            ("ability_pawn", I),
            ("ability_knight", I),
            ("ability_bishop", I),
            ("ability_rook", I),
            ("ability_queen", I),
            ("ability_king", I),
            ("item_1", I),
            ("item_2", I),
            ("item_3", I),
            ("item_4", I),
            ("updated_at", I),
        ],
        key: 1,
    },
    TableSpec {
        name: "progression",
        columns: &[("user_id", I), ("level", I), ("xp", I)],
        key: 1,
    },
    TableSpec {
        name: "user_unlocks",
        columns: &[("user_id", I), ("flag_id", I), ("unlocked_at", I)],
        key: 2,
    },
];

/// One column of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnData {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

/// A primary-key value of the last row of a batch, where the next batch
/// starts after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyValue {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Rows of one table, column-wise (the layout PostgreSQL binds as arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) columns: Vec<ColumnData>,
    pub(crate) len: usize,
}

impl Batch {
    pub(crate) fn new(spec: &TableSpec, capacity: usize) -> Self {
        Batch {
            columns: spec
                .columns
                .iter()
                .map(|(_, k)| match k {
                    Kind::Int => ColumnData::Int(Vec::with_capacity(capacity)),
                    Kind::Text => ColumnData::Text(Vec::with_capacity(capacity)),
                    Kind::Bytes => ColumnData::Bytes(Vec::with_capacity(capacity)),
                })
                .collect(),
            len: 0,
        }
    }

    /// The primary key of the last row.
    fn last_key(&self, spec: &TableSpec) -> Result<Option<Vec<KeyValue>>> {
        let Some(last) = self.len.checked_sub(1) else {
            return Ok(None);
        };
        let mut key = Vec::with_capacity(spec.key);
        for col in self.columns.iter().take(spec.key) {
            let v = match col {
                ColumnData::Int(v) => v.get(last).copied().flatten().map(KeyValue::Int),
                ColumnData::Text(v) => v.get(last).cloned().flatten().map(KeyValue::Text),
                ColumnData::Bytes(v) => v.get(last).cloned().flatten().map(KeyValue::Bytes),
            };
            match v {
                Some(v) => key.push(v),
                None => {
                    return Err(Error::Constraint {
                        constraint: format!("{}_pkey", spec.name),
                        source: format!("NULL in the primary key of {}", spec.name).into(),
                    })
                }
            }
        }
        Ok(Some(key))
    }

    /// Feeds every row to `h` in the documented canonical form.
    fn hash_into(&self, h: &mut Sha256) {
        for row in 0..self.len {
            for col in &self.columns {
                match col {
                    ColumnData::Int(v) => match v.get(row).copied().flatten() {
                        Some(x) => {
                            h.update([1u8]);
                            h.update(x.to_be_bytes());
                        }
                        None => h.update([0u8]),
                    },
                    ColumnData::Text(v) => match v.get(row).and_then(Option::as_deref) {
                        Some(s) => hash_bytes(h, 2, s.as_bytes()),
                        None => h.update([0u8]),
                    },
                    ColumnData::Bytes(v) => match v.get(row).and_then(Option::as_deref) {
                        Some(b) => hash_bytes(h, 3, b),
                        None => h.update([0u8]),
                    },
                }
            }
        }
    }
}

fn hash_bytes(h: &mut Sha256, tag: u8, b: &[u8]) {
    h.update([tag]);
    h.update((b.len() as u64).to_be_bytes());
    h.update(b);
}

/// Row count and content checksum of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChecksum {
    /// The table.
    pub table: &'static str,
    /// Its number of rows.
    pub rows: u64,
    /// SHA-256 of its rows in primary-key order (see [`ContentChecksum`]), 64 hex characters.
    pub sha256: String,
}

/// Row counts and content checksums of every copied table.
///
/// # Format
///
/// Per table, SHA-256 over every row in primary-key order, each row the
/// concatenation of its values in [column order](COPY_TABLES): NULL = byte
/// `0x00`; integer = `0x01` then the value as 8 bytes big-endian two's
/// complement; text = `0x02`, its UTF-8 length as 8 bytes big-endian, its
/// bytes; bytes = `0x03`, length as 8 bytes big-endian, the bytes. The
/// overall checksum is SHA-256 over `table NUL rows NUL table_sha256_hex LF`
/// for each table in copy order. Integers of any width hash alike, so both
/// dialects give the same checksums for the same content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentChecksum {
    /// One entry per table of [`COPY_TABLES`], in that order.
    pub tables: Vec<TableChecksum>,
    /// SHA-256 over the per-table entries, 64 hex characters.
    pub sha256: String,
}

impl ContentChecksum {
    /// Total rows over all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Options of [`copy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// Copy into a target that already holds rows, deleting them first (in
    /// one transaction, children first). Defaults to `false`: such a target
    /// is refused.
    pub force: bool,
    /// Rows per batch (1..=100000): one read and one write transaction each.
    /// Defaults to 1000.
    pub batch_size: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            force: false,
            batch_size: 1000,
        }
    }
}

/// The largest accepted [`CopyOptions::batch_size`].
const MAX_BATCH: usize = 100_000;

/// Why [`copy`] refused to start ([`Error::CopyRefused`]). Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyRefusal {
    /// Source and target are the same database (copying would delete it with
    /// `force`, or duplicate it).
    SameDatabase,
    /// The target holds rows in these tables and `force` is off.
    TargetNotEmpty {
        /// The non-empty tables, in copy order.
        tables: Vec<String>,
    },
    /// The source is not exactly at this binary's schema version.
    SourceSchema {
        /// The migrations that are not applied as shipped, e.g. `0002_x pending`.
        detail: String,
    },
    /// The target cannot be brought to this binary's schema version.
    TargetSchema {
        /// The migrations in the way, e.g. `0001_init drifted`.
        detail: String,
    },
}

impl fmt::Display for CopyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyRefusal::SameDatabase => f.write_str("source and target are the same database"),
            CopyRefusal::TargetNotEmpty { tables } => write!(
                f,
                "the target already holds data (in {}); copy with force (--force) to delete it first",
                tables.join(", ")
            ),
            CopyRefusal::SourceSchema { detail } => write!(
                f,
                "the source is not at this binary's schema version ({detail}); migrate it first"
            ),
            CopyRefusal::TargetSchema { detail } => write!(
                f,
                "the target cannot be migrated to this binary's schema version ({detail})"
            ),
        }
    }
}

/// Progress of [`copy`], reported to its callback as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyEvent {
    /// The target had pending migrations and was migrated.
    TargetMigrated {
        /// The migrations applied, as `NNNN_name`.
        applied: Vec<String>,
        /// The schema version now.
        version: i64,
    },
    /// `force`: the target's rows were deleted.
    TargetEmptied {
        /// The tables that held rows.
        tables: Vec<String>,
    },
    /// A table starts.
    TableStarted {
        /// The table.
        table: &'static str,
        /// Rows to copy.
        rows: u64,
    },
    /// A batch was committed on the target.
    BatchCopied {
        /// The table.
        table: &'static str,
        /// Rows of this table copied so far.
        copied: u64,
        /// Rows of this table to copy.
        rows: u64,
    },
    /// The target's id counter was moved: new accounts get ids above this.
    IdCounterSet {
        /// The counter's value.
        user_id: i64,
    },
    /// Counting and checksumming both sides starts.
    Verifying,
}

/// What [`copy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The schema version of both sides.
    pub schema_version: i64,
    /// Migrations applied to the target first, as `NNNN_name`.
    pub target_migrated: Vec<String>,
    /// Tables whose rows were deleted first (`force`).
    pub target_emptied: Vec<String>,
    /// The target's id counter after the copy: new accounts get larger ids.
    pub user_id_counter: i64,
    /// Row counts and checksums of the source, read in the copy's snapshot.
    pub source: ContentChecksum,
    /// Row counts and checksums of the target after the copy; equal to
    /// `source` (else the copy fails with [`Error::CopyMismatch`]).
    pub target: ContentChecksum,
}

/// Opens the source of a copy: as [`open`](crate::open), except that a
/// SQLite file must already exist (opening would create an empty one).
///
/// # Errors
/// [`Error::Config`] for a SQLite file that does not exist; otherwise as
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
/// 1. **Refusals** (nothing is written; [`Error::CopyRefused`]): source and
///    target are one database; the source is not exactly at this binary's
///    schema (a pending, drifted or unknown migration); the target has a
///    drifted or unknown migration; the target already holds rows in one of
///    the copied tables and [`CopyOptions::force`] is off.
/// 2. **Migrate the target** when it has pending migrations (a fresh target is
///    migrated from scratch). Both sides are then at the same version.
/// 3. **Empty the target** (only with `force`, only when it holds rows):
///    `DELETE` from every copied table, children first, in one transaction.
/// 4. **Copy** [`COPY_TABLES`] in foreign-key order (accounts, then sessions,
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
/// 6. **Verify**: [`ContentChecksum`] of the source (in the same snapshot)
///    and of the target; any difference in row counts or checksums is
///    [`Error::CopyMismatch`].
///
/// `schema_migrations` is not copied: each side keeps its own history.
/// The target should not be in use during the copy (nothing locks it between
/// the checks and the writes).
///
/// # Errors
/// [`Error::InvalidInput`] for a batch size outside 1..=100000 (nothing
/// runs); [`Error::CopyRefused`] (nothing written); migration errors of the
/// target; [`Error::CopyMismatch`] when the verification finds a difference;
/// [`Error::Closed`], [`Error::Unavailable`], [`Error::Timeout`],
/// [`Error::Constraint`] or a driver error from either side. After a failure
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
    let target_status = to.migration_status().await?;
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

    let mut target_migrated = Vec::new();
    if target_status
        .iter()
        .any(|s| s.state == MigrationState::Pending)
    {
        let report = to.migrate().await?;
        target_migrated = report
            .applied
            .iter()
            .map(|(v, n, _)| format!("{v:04}_{n}"))
            .collect();
        on_event(&CopyEvent::TargetMigrated {
            applied: target_migrated.clone(),
            version: report.version,
        });
    }
    let versions = |st: &[MigrationStatus]| -> Vec<i64> { st.iter().map(|s| s.version).collect() };
    let target_status = to.migration_status().await?;
    let not_applied = describe_states(&target_status, |s| s != MigrationState::Applied);
    if !not_applied.is_empty() || versions(&target_status) != versions(&source_status) {
        return Err(Error::CopyRefused(CopyRefusal::TargetSchema {
            detail: if not_applied.is_empty() {
                "its migrations differ from the source's".into()
            } else {
                not_applied
            },
        }));
    }
    let schema_version = source_status.iter().map(|s| s.version).max().unwrap_or(0);

    let mut writer = Writer::open(to).await?;
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
                break;
            }
            writer.write(spec, &batch).await?;
            copied += batch.len as u64;
            on_event(&CopyEvent::BatchCopied {
                table: spec.name,
                copied,
                rows,
            });
            if batch.len < limit {
                break;
            }
            after = batch.last_key(spec)?;
        }
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
    Ok(CopyReport {
        schema_version,
        target_migrated,
        target_emptied,
        user_id_counter: counter,
        source,
        target,
    })
}

/// Row counts and content checksums of every copied table of `db`, read from
/// one consistent snapshot. Computed identically on both dialects (see the
/// [`ContentChecksum`]), so equal content gives equal
/// checksums across SQLite and PostgreSQL.
///
/// # Errors
/// [`Error::Closed`], [`Error::Unavailable`], [`Error::Timeout`] or a driver
/// error (also when a copied table does not exist: migrate first).
pub async fn content_checksum(db: &Db) -> Result<ContentChecksum> {
    content_checksum_with(db, CopyOptions::default().batch_size).await
}

async fn content_checksum_with(db: &Db, batch: usize) -> Result<ContentChecksum> {
    let mut reader = Reader::open(db).await?;
    let sum = checksum_with(&mut reader, batch).await?;
    reader.finish().await?;
    Ok(sum)
}

async fn checksum_with(reader: &mut Reader, limit: usize) -> Result<ContentChecksum> {
    let mut tables = Vec::with_capacity(TABLES.len());
    let mut all = Sha256::new();
    for spec in &TABLES {
        let mut h = Sha256::new();
        let mut rows = 0u64;
        let mut after: Option<Vec<KeyValue>> = None;
        loop {
            let batch = reader.batch(spec, after.as_deref(), limit).await?;
            batch.hash_into(&mut h);
            rows += batch.len as u64;
            if batch.len < limit {
                break;
            }
            after = batch.last_key(spec)?;
        }
        let sha256 = hex::encode(h.finalize());
        all.update(format!("{}\0{rows}\0{sha256}\n", spec.name).as_bytes());
        tables.push(TableChecksum {
            table: spec.name,
            rows,
            sha256,
        });
    }
    Ok(ContentChecksum {
        tables,
        sha256: hex::encode(all.finalize()),
    })
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

/// The tables of [`COPY_TABLES`] that exist in `db` and hold rows.
async fn non_empty_tables(db: &Db) -> Result<Vec<String>> {
    match db.live()? {
        Backend::Sqlite(p) => p.read(sqlite::copy::non_empty_tables).await,
        Backend::Postgres(p) => postgres::copy::non_empty_tables(&*p.get().await?).await,
    }
}

/// The source side: one consistent snapshot for the whole copy.
enum Reader {
    /// A dedicated connection in a read transaction (SQLite file).
    SqliteFile(sqlite::copy::Snapshot),
    /// The writer, held (SQLite in memory, whose connections cannot share).
    SqliteMemory(sqlite::WriteGuard),
    /// A dedicated connection in a `REPEATABLE READ, READ ONLY` transaction.
    Postgres(postgres::copy::Snapshot),
}

impl Reader {
    async fn open(db: &Db) -> Result<Reader> {
        match db.live()? {
            Backend::Sqlite(p) => match db.config().sqlite_path() {
                Some(path) => Ok(Reader::SqliteFile(sqlite::copy::Snapshot::open(
                    path,
                    p.busy_timeout(),
                )?)),
                None => Ok(Reader::SqliteMemory(p.write_guard().await?)),
            },
            Backend::Postgres(p) => Ok(Reader::Postgres(
                postgres::copy::Snapshot::begin(p.get().await?).await?,
            )),
        }
    }

    async fn batch(
        &mut self,
        spec: &TableSpec,
        after: Option<&[KeyValue]>,
        limit: usize,
    ) -> Result<Batch> {
        match self {
            Reader::SqliteFile(s) => sqlite::copy::read_batch(s.conn(), spec, after, limit),
            Reader::SqliteMemory(g) => g
                .slot()
                .with(|c| sqlite::copy::read_batch(c, spec, after, limit)),
            Reader::Postgres(s) => postgres::copy::read_batch(s.client(), spec, after, limit).await,
        }
    }

    async fn count(&mut self, spec: &TableSpec) -> Result<u64> {
        match self {
            Reader::SqliteFile(s) => sqlite::copy::count(s.conn(), spec),
            Reader::SqliteMemory(g) => g.slot().with(|c| sqlite::copy::count(c, spec)),
            Reader::Postgres(s) => postgres::copy::count(s.client(), spec).await,
        }
    }

    async fn id_counter(&mut self) -> Result<i64> {
        match self {
            Reader::SqliteFile(s) => sqlite::copy::id_counter(s.conn()),
            Reader::SqliteMemory(g) => g.slot().with(sqlite::copy::id_counter),
            Reader::Postgres(s) => postgres::copy::id_counter(s.client()).await,
        }
    }

    async fn max_user_id(&mut self) -> Result<i64> {
        match self {
            Reader::SqliteFile(s) => sqlite::copy::max_user_id(s.conn()),
            Reader::SqliteMemory(g) => g.slot().with(sqlite::copy::max_user_id),
            Reader::Postgres(s) => postgres::copy::max_user_id(s.client()).await,
        }
    }

    async fn finish(self) -> Result<()> {
        match self {
            Reader::SqliteFile(s) => s.finish(),
            Reader::SqliteMemory(_) => Ok(()),
            Reader::Postgres(s) => s.finish().await,
        }
    }
}

/// The target side.
enum Writer<'a> {
    /// Each batch through the pool's writer (released between batches).
    Sqlite(&'a sqlite::Pool),
    /// A dedicated connection, closed (never pooled again) when done.
    Postgres(postgres::Client),
}

impl<'a> Writer<'a> {
    async fn open(db: &'a Db) -> Result<Writer<'a>> {
        match db.live()? {
            Backend::Sqlite(p) => Ok(Writer::Sqlite(p)),
            Backend::Postgres(p) => Ok(Writer::Postgres(deadpool_postgres::Object::take(
                p.get().await?,
            ))),
        }
    }

    async fn write(&mut self, spec: &TableSpec, batch: &Batch) -> Result<()> {
        match self {
            Writer::Sqlite(p) => p.write(|c| sqlite::copy::write_batch(c, spec, batch)).await,
            Writer::Postgres(c) => postgres::copy::write_batch(c, spec, batch).await,
        }
    }

    async fn empty(&mut self) -> Result<()> {
        match self {
            Writer::Sqlite(p) => p.write(sqlite::copy::empty).await,
            Writer::Postgres(c) => postgres::copy::empty(c).await,
        }
    }

    async fn id_counter(&mut self) -> Result<i64> {
        match self {
            Writer::Sqlite(p) => p.write(sqlite::copy::id_counter).await,
            Writer::Postgres(c) => postgres::copy::id_counter(c).await,
        }
    }

    async fn set_id_counter(&mut self, value: i64) -> Result<()> {
        match self {
            Writer::Sqlite(p) => p.write(|c| sqlite::copy::set_id_counter(c, value)).await,
            Writer::Postgres(c) => postgres::copy::set_id_counter(c, value).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_in_foreign_key_order_and_named_like_the_spec() {
        let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        assert_eq!(names, COPY_TABLES);
        assert_eq!(TABLES[4].key_list(), "user_id, flag_id");
        assert_eq!(TABLES[1].key_list(), "token");
    }

    #[test]
    fn batch_queries_bind_the_keys_and_the_limit_in_each_dialect() {
        let unlocks = &TABLES[4];
        let cols = unlocks.column_list();
        let sqlite = |i: usize, _: Option<Kind>| format!("?{i}");
        assert_eq!(
            unlocks.batch_sql(None, sqlite),
            format!("SELECT {cols} FROM user_unlocks ORDER BY user_id, flag_id LIMIT ?1")
        );
        assert_eq!(
            unlocks.batch_sql(Some(2), sqlite),
            format!(
                "SELECT {cols} FROM user_unlocks WHERE (user_id, flag_id) > (?1, ?2) \
                 ORDER BY user_id, flag_id LIMIT ?3"
            )
        );
        let postgres = |i: usize, k: Option<Kind>| match k {
            Some(Kind::Int) => format!("${i}::int8"),
            Some(other) => format!("${i}::{other:?}"),
            None => format!("${i}"),
        };
        assert_eq!(
            unlocks.batch_sql(Some(2), postgres),
            format!(
                "SELECT {cols} FROM user_unlocks WHERE (user_id, flag_id) > ($1::int8, $2::int8) \
                 ORDER BY user_id, flag_id LIMIT $3"
            )
        );
    }

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

    #[test]
    fn checksum_encoding_is_canonical() {
        let spec = &TABLES[3]; // progression: three integers
        let mut b = Batch::new(spec, 1);
        for (i, col) in b.columns.iter_mut().enumerate() {
            if let ColumnData::Int(v) = col {
                v.push(Some(i as i64 + 1));
            }
        }
        b.len = 1;
        let mut h = Sha256::new();
        b.hash_into(&mut h);
        let mut want = Sha256::new();
        for x in [1i64, 2, 3] {
            want.update([1u8]);
            want.update(x.to_be_bytes());
        }
        assert_eq!(h.finalize(), want.finalize());
        assert_eq!(b.last_key(spec).unwrap(), Some(vec![KeyValue::Int(1)]));

        // Text and bytes carry a tag and a length, so ("ab", "") and ("a", "b")
        // hash differently; NULL differs from empty.
        let digest = |vals: &[Option<&str>]| {
            let mut h = Sha256::new();
            for v in vals {
                match v {
                    Some(s) => hash_bytes(&mut h, 2, s.as_bytes()),
                    None => h.update([0u8]),
                }
            }
            hex::encode(h.finalize())
        };
        assert_ne!(
            digest(&[Some("ab"), Some("")]),
            digest(&[Some("a"), Some("b")])
        );
        assert_ne!(digest(&[None]), digest(&[Some("")]));
    }

    #[test]
    fn empty_batches_have_no_key_and_null_keys_are_errors() {
        let spec = &TABLES[0];
        let b = Batch::new(spec, 0);
        assert_eq!(b.last_key(spec).unwrap(), None);
        let mut b = Batch::new(spec, 1);
        for col in &mut b.columns {
            match col {
                ColumnData::Int(v) => v.push(None),
                ColumnData::Text(v) => v.push(None),
                ColumnData::Bytes(v) => v.push(None),
            }
        }
        b.len = 1;
        assert!(matches!(b.last_key(spec), Err(Error::Constraint { .. })));
    }

    #[test]
    fn refusals_explain_themselves() {
        let r = CopyRefusal::TargetNotEmpty {
            tables: vec!["accounts".into(), "sessions".into()],
        };
        assert_eq!(
            Error::CopyRefused(r).to_string(),
            "copy refused: the target already holds data (in accounts, sessions); \
             copy with force (--force) to delete it first"
        );
    }
}
