//! `copy` on SQLite: batched keyset reads, batched writes, the
//! `sqlite_sequence` counter, and a read snapshot on a dedicated connection.
//!
//! Table and column names come from the fixed list in `crate::copy`; every
//! value is bound.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension, ToSql};

use super::error::map;
use super::table_exists;
use super::tx::in_immediate_transaction;
use crate::error::{Error, Result};
use crate::types::tables::{Batch, ColumnData, KeyValue, TableSpec, TABLES};

/// A dedicated connection holding a read transaction: every read sees the
/// database as it was when the snapshot was opened (WAL), whatever other
/// connections commit meanwhile.
pub(crate) struct Snapshot {
    conn: Connection,
}

impl Snapshot {
    /// Opens `path` (which must exist) and starts the read transaction.
    pub(crate) fn open(path: &Path, busy_timeout: Duration) -> Result<Self> {
        let fail = |e: rusqlite::Error| {
            Error::unavailable(
                format!("cannot open SQLite database {}: {e}", path.display()),
                Some(e.into()),
            )
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(fail)?;
        conn.busy_timeout(busy_timeout).map_err(fail)?;
        conn.pragma_update(None, "query_only", true).map_err(fail)?;
        // A deferred BEGIN takes its snapshot at the first read.
        conn.execute_batch("BEGIN").map_err(map)?;
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(map)?;
        Ok(Snapshot { conn })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Ends the read transaction (closing the connection would too).
    pub(crate) fn finish(self) -> Result<()> {
        self.conn.execute_batch("COMMIT").map_err(map)
    }
}

impl ToSql for KeyValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            KeyValue::Int(i) => ValueRef::Integer(*i),
            KeyValue::Text(s) => ValueRef::Text(s.as_bytes()),
            KeyValue::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

/// The `SELECT` of one batch of `t` in primary-key order: after the first
/// `after` key values when given (`?1`, `?2`, ...), then the limit.
fn batch_sql(t: &TableSpec, after: Option<usize>) -> String {
    let (cols, keys, name) = (t.column_list(), t.key_list(), t.name);
    match after {
        None => format!("SELECT {cols} FROM {name} ORDER BY {keys} LIMIT ?1"),
        Some(n) => {
            let marks: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
            format!(
                "SELECT {cols} FROM {name} WHERE ({keys}) > ({}) ORDER BY {keys} LIMIT ?{}",
                marks.join(", "),
                n + 1
            )
        }
    }
}

/// Up to `limit` rows of `t` in primary-key order, after `after` when given.
pub(crate) fn read_batch(
    c: &Connection,
    t: &TableSpec,
    after: Option<&[KeyValue]>,
    limit: usize,
) -> Result<Batch> {
    let limit_i64 = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = batch_sql(t, after.map(<[KeyValue]>::len));
    let mut params: Vec<&dyn ToSql> = Vec::new();
    if let Some(k) = after {
        params.extend(k.iter().map(|v| v as &dyn ToSql));
    }
    params.push(&limit_i64);
    let mut st = c.prepare_cached(&sql).map_err(map)?;
    let mut rows = st.query(params_from_iter(params)).map_err(map)?;
    let mut batch = Batch::new(t, limit.min(4096));
    while let Some(r) = rows.next().map_err(map)? {
        for (i, col) in batch.columns.iter_mut().enumerate() {
            match col {
                ColumnData::Int(v) => v.push(r.get(i).map_err(map)?),
                ColumnData::Text(v) => v.push(r.get(i).map_err(map)?),
                ColumnData::Bytes(v) => v.push(r.get(i).map_err(map)?),
            }
        }
        batch.len += 1;
    }
    Ok(batch)
}

fn cell(col: &ColumnData, row: usize) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(match col {
        ColumnData::Int(v) => v
            .get(row)
            .copied()
            .flatten()
            .map_or(ValueRef::Null, ValueRef::Integer),
        ColumnData::Text(v) => v
            .get(row)
            .and_then(Option::as_deref)
            .map_or(ValueRef::Null, |s| ValueRef::Text(s.as_bytes())),
        ColumnData::Bytes(v) => v
            .get(row)
            .and_then(Option::as_deref)
            .map_or(ValueRef::Null, ValueRef::Blob),
    })
}

/// Inserts every row of `batch` into `t` in one transaction.
pub(crate) fn write_batch(c: &Connection, t: &TableSpec, batch: &Batch) -> Result<()> {
    let marks: Vec<String> = (1..=t.columns.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        t.name,
        t.column_list(),
        marks.join(", ")
    );
    in_immediate_transaction(c, |c| {
        let mut st = c.prepare_cached(&sql).map_err(map)?;
        for row in 0..batch.len {
            let cells: Vec<ToSqlOutput<'_>> =
                batch.columns.iter().map(|col| cell(col, row)).collect();
            st.execute(params_from_iter(cells.iter())).map_err(map)?;
        }
        Ok(())
    })
}

/// Deletes every row of every copied table, children first, in one
/// transaction.
pub(crate) fn empty(c: &Connection) -> Result<()> {
    in_immediate_transaction(c, |c| {
        for t in TABLES.iter().rev() {
            c.execute(&format!("DELETE FROM {}", t.name), [])
                .map_err(map)?;
        }
        Ok(())
    })
}

/// The number of rows of `t`.
pub(crate) fn count(c: &Connection, t: &TableSpec) -> Result<u64> {
    let n: i64 = c
        .query_row(&format!("SELECT count(*) FROM {}", t.name), [], |r| {
            r.get(0)
        })
        .map_err(map)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The copied tables that exist and hold at least one row, in copy order.
pub(crate) fn non_empty_tables(c: &Connection) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in &TABLES {
        if !table_exists(c, t.name)? {
            continue;
        }
        let any: bool = c
            .query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM {})", t.name),
                [],
                |r| r.get(0),
            )
            .map_err(map)?;
        if any {
            out.push(t.name.to_string());
        }
    }
    Ok(out)
}

/// The AUTOINCREMENT counter of `accounts`: the largest id ever issued (0
/// when none was).
pub(crate) fn id_counter(c: &Connection) -> Result<i64> {
    if !table_exists(c, "sqlite_sequence")? {
        return Ok(0);
    }
    let seq: Option<i64> = c
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'accounts'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(map)?;
    Ok(seq.unwrap_or(0).max(0))
}

/// The highest `accounts.user_id`, 0 when there is none.
pub(crate) fn max_user_id(c: &Connection) -> Result<i64> {
    c.query_row("SELECT coalesce(max(user_id), 0) FROM accounts", [], |r| {
        r.get(0)
    })
    .map_err(map)
}

/// Sets the AUTOINCREMENT counter of `accounts` to `value`: the next id is
/// above it.
pub(crate) fn set_id_counter(c: &Connection, value: i64) -> Result<()> {
    in_immediate_transaction(c, |c| {
        let changed = c
            .execute(
                "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'accounts'",
                [value],
            )
            .map_err(map)?;
        if changed == 0 {
            c.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('accounts', ?1)",
                [value],
            )
            .map_err(map)?;
        }
        Ok(())
    })
}

/// Sets (`on`) or clears the incomplete-copy marker row of
/// `schema_migrations`.
pub(crate) fn mark_incomplete(c: &Connection, on: bool, now: i64) -> Result<()> {
    use crate::migrate::{INCOMPLETE_COPY_NAME, INCOMPLETE_COPY_VERSION};
    if on {
        c.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at, execution_ms) \
             VALUES (?1, ?2, '-', ?3, 0) ON CONFLICT (version) DO NOTHING",
            rusqlite::params![INCOMPLETE_COPY_VERSION, INCOMPLETE_COPY_NAME, now],
        )
    } else {
        c.execute(
            "DELETE FROM schema_migrations WHERE version = ?1",
            [INCOMPLETE_COPY_VERSION],
        )
    }
    .map_err(map)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_queries_bind_the_keys_and_the_limit() {
        let unlocks = &TABLES[4];
        let cols = unlocks.column_list();
        assert_eq!(
            batch_sql(unlocks, None),
            format!("SELECT {cols} FROM user_unlocks ORDER BY user_id, flag_id LIMIT ?1")
        );
        assert_eq!(
            batch_sql(unlocks, Some(2)),
            format!(
                "SELECT {cols} FROM user_unlocks WHERE (user_id, flag_id) > (?1, ?2) \
                 ORDER BY user_id, flag_id LIMIT ?3"
            )
        );
    }
}
