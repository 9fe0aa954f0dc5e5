//! The peer: sqlx, the same SQL, in two setups. "default": the pool as a
//! user gets it (`test_before_acquire` on: a ping per checkout) with 8
//! connections. "tuned": `test_before_acquire(false)`, and on SQLite one
//! writer connection (a pool of 1 for writes) beside a pool of 8 for reads,
//! so writers queue in the pool instead of fighting over SQLite's write lock.
//! sqlx caches prepared statements per connection by default.

use std::hint::black_box;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use crate::data::{digest, loadout_values, Inputs, BULK_ROWS, PASS_HASH};
use crate::ops::Op;
use crate::raw_sqlite::Sync;

/// Same size as persist's default pool.
pub const POOL_SIZE: u32 = 8;

pub async fn open_sqlite(path: &Path, sync: Sync) -> Result<SqlitePool> {
    Ok(SqlitePoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect_with(sqlite_options(path, sync))
        .await?)
}

/// The tuned SQLite setup: (writer pool of 1, reader pool of 8), no ping.
pub async fn open_sqlite_tuned(path: &Path, sync: Sync) -> Result<(SqlitePool, SqlitePool)> {
    let w = SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(sqlite_options(path, sync))
        .await?;
    let r = SqlitePoolOptions::new()
        .max_connections(POOL_SIZE)
        .test_before_acquire(false)
        .connect_with(sqlite_options(path, sync))
        .await?;
    Ok((w, r))
}

pub async fn open_postgres_tuned(url: &str) -> Result<PgPool> {
    let opts = PgConnectOptions::from_str(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .test_before_acquire(false)
        .connect_with(opts)
        .await?)
}

fn sqlite_options(path: &Path, sync: Sync) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match sync {
            Sync::Full => SqliteSynchronous::Full,
            Sync::Normal => SqliteSynchronous::Normal,
        })
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
}

pub async fn open_postgres(url: &str) -> Result<PgPool> {
    let opts = PgConnectOptions::from_str(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect_with(opts)
        .await?)
}

/// The body is the same for both databases; only the SQL text, the pool
/// type and the statement that begins a write transaction differ.
macro_rules! sqlx_run {
    ($name:ident, $pool:ty, $q:path, $begin:ident($($arg:expr),*)) => {
        pub async fn $name(pool: &$pool, op: Op, x: &Inputs) -> Result<()> {
            use $q as q;
            match op {
                Op::SessionLookup => {
                    let d = digest(&x.lookup_token());
                    let row = sqlx::query(q::LOOKUP)
                        .bind(&d[..])
                        .fetch_optional(pool)
                        .await?
                        .ok_or_else(|| anyhow!("session not found"))?;
                    black_box((
                        row.try_get::<i64, _>(0)?,
                        row.try_get::<i64, _>(1)?,
                        row.try_get::<i64, _>(2)?,
                    ));
                }
                Op::UnlockList => {
                    let rows = sqlx::query(q::LIST_UNLOCKS)
                        .bind(x.list_user())
                        .fetch_all(pool)
                        .await?;
                    let v = rows
                        .iter()
                        .map(|r| Ok((r.try_get::<i32, _>(0)?, r.try_get::<i64, _>(1)?)))
                        .collect::<Result<Vec<_>, sqlx::Error>>()?;
                    ensure!(!v.is_empty(), "unlock list came back empty");
                    black_box(v);
                }
                Op::AccountCreate => {
                    let (email, username) = x.new_account("c");
                    let id: i64 = sqlx::query_scalar(q::CREATE_ACCOUNT)
                        .bind(&email)
                        .bind(persist::canonical_key(&email))
                        .bind(&username)
                        .bind(persist::canonical_key(&username))
                        .bind(PASS_HASH)
                        .bind(x.at())
                        .fetch_one(pool)
                        .await?;
                    black_box(id);
                }
                Op::LoginStamp => {
                    let n = sqlx::query(q::TOUCH_LOGIN)
                        .bind(x.user())
                        .bind(x.at())
                        .execute(pool)
                        .await?
                        .rows_affected();
                    ensure!(n == 1, "no account");
                }
                Op::LoadoutSave => {
                    let l = x.loadout(x.user());
                    let mut qy = sqlx::query(q::SAVE_LOADOUT).bind(l.user_id.0);
                    for v in loadout_values(&l) {
                        qy = qy.bind(v);
                    }
                    qy.bind(l.updated_at).execute(pool).await?;
                }
                Op::UnlockGrant => {
                    let n = sqlx::query(q::GRANT)
                        .bind(x.grant_user())
                        .bind(x.grant_flag())
                        .bind(x.at())
                        .execute(pool)
                        .await?
                        .rows_affected();
                    black_box(n == 1);
                }
                Op::AddXp => {
                    let r = sqlx::query(q::ADD_XP)
                        .bind(x.user())
                        .bind(10i64)
                        .fetch_optional(pool)
                        .await?
                        .ok_or_else(|| anyhow!("no progression row"))?;
                    black_box((r.try_get::<i32, _>(0)?, r.try_get::<i64, _>(1)?));
                }
                Op::RegisterTx => {
                    let (email, username) = x.new_account("r");
                    let mut tx = pool.$begin($($arg),*).await?;
                    let id: i64 = sqlx::query_scalar(q::CREATE_ACCOUNT)
                        .bind(&email)
                        .bind(persist::canonical_key(&email))
                        .bind(&username)
                        .bind(persist::canonical_key(&username))
                        .bind(PASS_HASH)
                        .bind(x.at())
                        .fetch_one(&mut *tx)
                        .await?;
                    sqlx::query(q::SET_PROGRESSION)
                        .bind(id)
                        .bind(0i32)
                        .bind(0i64)
                        .execute(&mut *tx)
                        .await?;
                    let l = x.loadout(id);
                    let mut qy = sqlx::query(q::SAVE_LOADOUT).bind(id);
                    for v in loadout_values(&l) {
                        qy = qy.bind(v);
                    }
                    qy.bind(l.updated_at).execute(&mut *tx).await?;
                    tx.commit().await?;
                }
                Op::BattleEndTx => {
                    let user = x.grant_user();
                    let mut tx = pool.$begin($($arg),*).await?;
                    let r = sqlx::query(q::ADD_XP)
                        .bind(user)
                        .bind(25i64)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| anyhow!("no progression row"))?;
                    black_box((r.try_get::<i32, _>(0)?, r.try_get::<i64, _>(1)?));
                    for f in x.battle_flags() {
                        let n = sqlx::query(q::GRANT)
                            .bind(user)
                            .bind(f)
                            .bind(x.at())
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        black_box(n);
                    }
                    tx.commit().await?;
                }
                Op::Insert1000Tx => {
                    let mut tx = pool.$begin($($arg),*).await?;
                    for j in 0..BULK_ROWS {
                        let (email, username) = x.bulk_account(j);
                        let id: i64 = sqlx::query_scalar(q::CREATE_ACCOUNT)
                            .bind(&email)
                            .bind(persist::canonical_key(&email))
                            .bind(&username)
                            .bind(persist::canonical_key(&username))
                            .bind(PASS_HASH)
                            .bind(x.at())
                            .fetch_one(&mut *tx)
                            .await?;
                        black_box(id);
                    }
                    tx.commit().await?;
                }
                other => anyhow::bail!("{} is not measured with sqlx", other.name()),
            }
            Ok(())
        }
    };
}

// SQLite write transactions begin IMMEDIATE, as persist's do (a deferred
// BEGIN that later writes can fail with SQLITE_BUSY without waiting).
sqlx_run!(
    run_sqlite,
    SqlitePool,
    crate::sql::sqlite,
    begin_with("BEGIN IMMEDIATE")
);
sqlx_run!(run_postgres, PgPool, crate::sql::postgres, begin());
