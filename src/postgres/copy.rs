//! `copy` on PostgreSQL: batched keyset reads, one-statement batch writes
//! (`INSERT ... SELECT * FROM unnest($1::int8[], ...)`, each column bound as
//! one array), the identity sequence of `accounts.user_id`, and a read
//! snapshot in a `REPEATABLE READ, READ ONLY` transaction.
//!
//! Table and column names come from the fixed list in `crate::copy`; every
//! value is bound. Integers travel as `int8`; the server casts them to the
//! column's type on insert (an out-of-range value is an error, never
//! truncated).

use deadpool_postgres::Object;
use tokio_postgres::types::{ToSql, Type};

use super::secret::Redacted;

use super::error::map;
use super::RawClient;
use crate::error::Result;
use crate::types::tables::{Batch, ColumnData, KeyValue, Kind, TableSpec, TABLES};

/// A dedicated connection (taken out of the pool, closed when dropped, so an
/// abandoned snapshot never returns to the pool inside a transaction) holding
/// a `REPEATABLE READ, READ ONLY` transaction.
pub(crate) struct Snapshot {
    conn: RawClient,
}

impl Snapshot {
    pub(crate) async fn begin(conn: Object) -> Result<Self> {
        let conn = Object::take(conn);
        conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(map)?;
        Ok(Snapshot { conn })
    }

    pub(crate) fn client(&self) -> &RawClient {
        &self.conn
    }

    pub(crate) async fn finish(self) -> Result<()> {
        self.conn.batch_execute("COMMIT").await.map_err(map)
    }
}

fn cast(k: Kind) -> &'static str {
    match k {
        Kind::Int => "int8",
        Kind::Text => "text",
        Kind::Bytes => "bytea",
    }
}

/// The `SELECT` of one batch of `t` in primary-key order: after the first
/// `after` key values when given (`$1::int8`, ..., typed by the key column),
/// then the limit.
fn batch_sql(t: &TableSpec, after: Option<usize>) -> String {
    let (cols, keys, name) = (t.column_list(), t.key_list(), t.name);
    match after {
        None => format!("SELECT {cols} FROM {name} ORDER BY {keys} LIMIT $1"),
        Some(n) => {
            let marks: Vec<String> = t
                .key_columns()
                .iter()
                .take(n)
                .enumerate()
                .map(|(i, (_, kind))| format!("${}::{}", i + 1, cast(*kind)))
                .collect();
            format!(
                "SELECT {cols} FROM {name} WHERE ({keys}) > ({}) ORDER BY {keys} LIMIT ${}",
                marks.join(", "),
                n + 1
            )
        }
    }
}

/// Up to `limit` rows of `t` in primary-key order, after `after` when given.
pub(crate) async fn read_batch(
    c: &RawClient,
    t: &TableSpec,
    after: Option<&[KeyValue]>,
    limit: usize,
) -> Result<Batch> {
    let limit_i64 = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = batch_sql(t, after.map(<[KeyValue]>::len));
    // Key values (token digests, emails' keys) never reach the driver's logs.
    let keys: Vec<Box<dyn ToSql + Sync + '_>> = after
        .iter()
        .flat_map(|k| k.iter())
        .map(|v| -> Box<dyn ToSql + Sync + '_> {
            match v {
                KeyValue::Int(i) => Box::new(Redacted(i)),
                KeyValue::Text(s) => Box::new(Redacted(s)),
                KeyValue::Bytes(b) => Box::new(Redacted(b)),
            }
        })
        .collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = keys.iter().map(|v| v.as_ref()).collect();
    params.push(&limit_i64);
    let st = c.prepare_cached(&sql).await.map_err(map)?;
    let rows = c.query(&st, &params).await.map_err(map)?;
    let mut batch = Batch::new(t, rows.len());
    let types: Vec<Type> = st.columns().iter().map(|c| c.type_().clone()).collect();
    for r in &rows {
        for (i, col) in batch.columns.iter_mut().enumerate() {
            match col {
                ColumnData::Int(v) => v.push(match types.get(i) {
                    Some(&Type::INT2) => {
                        r.try_get::<_, Option<i16>>(i).map_err(map)?.map(i64::from)
                    }
                    Some(&Type::INT4) => {
                        r.try_get::<_, Option<i32>>(i).map_err(map)?.map(i64::from)
                    }
                    _ => r.try_get::<_, Option<i64>>(i).map_err(map)?,
                }),
                ColumnData::Text(v) => v.push(r.try_get(i).map_err(map)?),
                ColumnData::Bytes(v) => v.push(r.try_get(i).map_err(map)?),
            }
        }
        batch.len += 1;
    }
    Ok(batch)
}

/// Inserts every row of `batch` into `t` with one statement, in one
/// transaction.
pub(crate) async fn write_batch(c: &mut RawClient, t: &TableSpec, batch: &Batch) -> Result<()> {
    let arrays: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, k))| format!("${}::{}[]", i + 1, cast(*k)))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) SELECT * FROM unnest({})",
        t.name,
        t.column_list(),
        arrays.join(", ")
    );
    // Row values (emails, hashes, digests) never reach the driver's logs.
    let values: Vec<Box<dyn ToSql + Sync + '_>> = batch
        .columns
        .iter()
        .map(|col| -> Box<dyn ToSql + Sync + '_> {
            match col {
                ColumnData::Int(v) => Box::new(Redacted(v)),
                ColumnData::Text(v) => Box::new(Redacted(v)),
                ColumnData::Bytes(v) => Box::new(Redacted(v)),
            }
        })
        .collect();
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
    let tx = c.transaction().await.map_err(map)?;
    let st = tx.prepare_cached(&sql).await.map_err(map)?;
    tx.execute(&st, &params).await.map_err(map)?;
    tx.commit().await.map_err(map)
}

/// Deletes every row of every copied table, children first, in one
/// transaction.
pub(crate) async fn empty(c: &mut RawClient) -> Result<()> {
    let tx = c.transaction().await.map_err(map)?;
    for t in TABLES.iter().rev() {
        tx.execute(&format!("DELETE FROM {}", t.name), &[])
            .await
            .map_err(map)?;
    }
    tx.commit().await.map_err(map)
}

/// The number of rows of `t`.
pub(crate) async fn count(c: &RawClient, t: &TableSpec) -> Result<u64> {
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {}", t.name), &[])
        .await
        .map_err(map)?
        .try_get(0)
        .map_err(map)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The copied tables that exist and hold at least one row, in copy order.
pub(crate) async fn non_empty_tables(c: &RawClient) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in &TABLES {
        let exists: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t.name])
            .await
            .map_err(map)?
            .try_get(0)
            .map_err(map)?;
        if !exists {
            continue;
        }
        let any: bool = c
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {})", t.name), &[])
            .await
            .map_err(map)?
            .try_get(0)
            .map_err(map)?;
        if any {
            out.push(t.name.to_string());
        }
    }
    Ok(out)
}

/// The last value the identity sequence of `accounts.user_id` issued (0 when
/// it issued none).
pub(crate) async fn id_counter(c: &RawClient) -> Result<i64> {
    c.query_one(
        "SELECT coalesce(pg_sequence_last_value(\
           pg_get_serial_sequence('accounts', 'user_id')::regclass), 0)::int8",
        &[],
    )
    .await
    .map_err(map)?
    .try_get(0)
    .map_err(map)
}

/// The highest `accounts.user_id`, 0 when there is none.
pub(crate) async fn max_user_id(c: &RawClient) -> Result<i64> {
    c.query_one("SELECT coalesce(max(user_id), 0)::int8 FROM accounts", &[])
        .await
        .map_err(map)?
        .try_get(0)
        .map_err(map)
}

/// Moves the identity sequence so that the next id is `value + 1`.
pub(crate) async fn set_id_counter(c: &RawClient, value: i64) -> Result<()> {
    if value >= 1 {
        c.query_one(
            "SELECT setval(pg_get_serial_sequence('accounts', 'user_id'), $1::int8)",
            &[&value],
        )
        .await
        .map_err(map)?;
    } else {
        c.query_one(
            "SELECT setval(pg_get_serial_sequence('accounts', 'user_id'), 1, false)",
            &[],
        )
        .await
        .map_err(map)?;
    }
    Ok(())
}

/// What identifies one database and schema on one server run: the server's
/// start time, the database's oid and name, the current schema.
pub(crate) async fn fingerprint(c: &RawClient) -> Result<String> {
    c.query_one(
        "SELECT concat_ws('/', pg_postmaster_start_time()::text, d.oid::text, d.datname::text, \
                current_schema()::text) \
         FROM pg_database d WHERE d.datname = current_database()",
        &[],
    )
    .await
    .map_err(map)?
    .try_get(0)
    .map_err(map)
}

/// Sets (`on`) or clears the incomplete-copy marker row of
/// `schema_migrations`.
pub(crate) async fn mark_incomplete(c: &RawClient, on: bool, now: i64) -> Result<()> {
    use crate::migrate::{INCOMPLETE_COPY_NAME, INCOMPLETE_COPY_VERSION};
    if on {
        c.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at, execution_ms) \
             VALUES ($1, $2, '-', $3, 0) ON CONFLICT (version) DO NOTHING",
            &[&INCOMPLETE_COPY_VERSION, &INCOMPLETE_COPY_NAME, &now],
        )
        .await
    } else {
        c.execute(
            "DELETE FROM schema_migrations WHERE version = $1",
            &[&INCOMPLETE_COPY_VERSION],
        )
        .await
    }
    .map_err(map)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_queries_bind_typed_keys_and_the_limit() {
        let unlocks = &TABLES[4];
        let cols = unlocks.column_list();
        assert_eq!(
            batch_sql(unlocks, None),
            format!("SELECT {cols} FROM user_unlocks ORDER BY user_id, flag_id LIMIT $1")
        );
        assert_eq!(
            batch_sql(unlocks, Some(2)),
            format!(
                "SELECT {cols} FROM user_unlocks WHERE (user_id, flag_id) > ($1::int8, $2::int8) \
                 ORDER BY user_id, flag_id LIMIT $3"
            )
        );
        let sessions = &TABLES[1];
        assert!(batch_sql(sessions, Some(1)).contains("(token) > ($1::bytea)"));
    }
}
