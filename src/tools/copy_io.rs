//! The two sides of a copy: the source read from one consistent snapshot,
//! the target written batch by batch.

use crate::db::{Backend, Db};
use crate::error::Result;
use crate::types::tables::{Batch, KeyValue, TableSpec};
use crate::{postgres, sqlite};

/// The source side: one consistent snapshot for the whole copy.
pub(super) enum Reader {
    /// A dedicated connection in a read transaction (SQLite file).
    SqliteFile(sqlite::copy::Snapshot),
    /// The writer, held (SQLite in memory, whose connections cannot share).
    SqliteMemory(sqlite::WriteGuard),
    /// A dedicated connection in a `REPEATABLE READ, READ ONLY` transaction.
    Postgres(postgres::copy::Snapshot),
}

impl Reader {
    pub(super) async fn open(db: &Db) -> Result<Reader> {
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

    pub(super) async fn batch(
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

    pub(super) async fn count(&mut self, spec: &TableSpec) -> Result<u64> {
        match self {
            Reader::SqliteFile(s) => sqlite::copy::count(s.conn(), spec),
            Reader::SqliteMemory(g) => g.slot().with(|c| sqlite::copy::count(c, spec)),
            Reader::Postgres(s) => postgres::copy::count(s.client(), spec).await,
        }
    }

    pub(super) async fn id_counter(&mut self) -> Result<i64> {
        match self {
            Reader::SqliteFile(s) => sqlite::copy::id_counter(s.conn()),
            Reader::SqliteMemory(g) => g.slot().with(sqlite::copy::id_counter),
            Reader::Postgres(s) => postgres::copy::id_counter(s.client()).await,
        }
    }

    pub(super) async fn max_user_id(&mut self) -> Result<i64> {
        match self {
            Reader::SqliteFile(s) => sqlite::copy::max_user_id(s.conn()),
            Reader::SqliteMemory(g) => g.slot().with(sqlite::copy::max_user_id),
            Reader::Postgres(s) => postgres::copy::max_user_id(s.client()).await,
        }
    }

    pub(super) async fn finish(self) -> Result<()> {
        match self {
            Reader::SqliteFile(s) => s.finish(),
            Reader::SqliteMemory(_) => Ok(()),
            Reader::Postgres(s) => s.finish().await,
        }
    }
}

/// The target side.
pub(super) enum Writer<'a> {
    /// Each batch through the pool's writer (released between batches).
    Sqlite(&'a sqlite::Pool),
    /// A dedicated connection, closed (never pooled again) when done.
    Postgres(postgres::RawClient),
}

impl<'a> Writer<'a> {
    pub(super) async fn open(db: &'a Db) -> Result<Writer<'a>> {
        match db.live()? {
            Backend::Sqlite(p) => Ok(Writer::Sqlite(p)),
            Backend::Postgres(p) => Ok(Writer::Postgres(deadpool_postgres::Object::take(
                p.get().await?,
            ))),
        }
    }

    pub(super) async fn write(&mut self, spec: &TableSpec, batch: &Batch) -> Result<()> {
        match self {
            Writer::Sqlite(p) => p.write(|c| sqlite::copy::write_batch(c, spec, batch)).await,
            Writer::Postgres(c) => postgres::copy::write_batch(c, spec, batch).await,
        }
    }

    pub(super) async fn empty(&mut self) -> Result<()> {
        match self {
            Writer::Sqlite(p) => p.write(sqlite::copy::empty).await,
            Writer::Postgres(c) => postgres::copy::empty(c).await,
        }
    }

    pub(super) async fn id_counter(&mut self) -> Result<i64> {
        match self {
            Writer::Sqlite(p) => p.write(sqlite::copy::id_counter).await,
            Writer::Postgres(c) => postgres::copy::id_counter(c).await,
        }
    }

    /// Sets or clears the target's incomplete-copy marker.
    pub(super) async fn mark_incomplete(&mut self, on: bool) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        match self {
            Writer::Sqlite(p) => p.write(|c| sqlite::copy::mark_incomplete(c, on, now)).await,
            Writer::Postgres(c) => postgres::copy::mark_incomplete(c, on, now).await,
        }
    }

    pub(super) async fn set_id_counter(&mut self, value: i64) -> Result<()> {
        match self {
            Writer::Sqlite(p) => p.write(|c| sqlite::copy::set_id_counter(c, value)).await,
            Writer::Postgres(c) => postgres::copy::set_id_counter(c, value).await,
        }
    }
}
