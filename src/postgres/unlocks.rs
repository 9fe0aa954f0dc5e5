//! `user_unlocks` on PostgreSQL.

use super::error::map;
use super::Client;
use crate::error::{Entity, Error, Result};
use crate::models::{Unlock, UserId};

pub(crate) async fn grant(c: &Client<'_>, user: UserId, flag: i32, at: i64) -> Result<bool> {
    let st = "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, flag_id) DO NOTHING";
    Ok(c.execute(st, &[&user.0, &flag, &at]).await.map_err(map)? == 1)
}

/// One statement over an array parameter; returns the flags that were new.
pub(crate) async fn grant_many(
    c: &Client<'_>,
    user: UserId,
    flags: &[i32],
    at: i64,
) -> Result<Vec<i32>> {
    let st = "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) \
             SELECT $1, f, $3 FROM unnest($2::int4[]) AS f \
             ON CONFLICT (user_id, flag_id) DO NOTHING RETURNING flag_id";
    let rows = c.query(st, &[&user.0, &flags, &at]).await.map_err(map)?;
    let mut new = rows
        .iter()
        .map(|r| r.try_get::<_, i32>(0).map_err(map))
        .collect::<Result<Vec<_>>>()?;
    new.sort_unstable();
    Ok(new)
}

pub(crate) async fn has(c: &Client<'_>, user: UserId, flag: i32) -> Result<bool> {
    let st = "SELECT 1 FROM user_unlocks WHERE user_id = $1 AND flag_id = $2";
    Ok(c.query_opt(st, &[&user.0, &flag])
        .await
        .map_err(map)?
        .is_some())
}

pub(crate) async fn list(c: &Client<'_>, user: UserId) -> Result<Vec<Unlock>> {
    let st = "SELECT flag_id, unlocked_at FROM user_unlocks WHERE user_id = $1 ORDER BY flag_id";
    let rows = c.query(st, &[&user.0]).await.map_err(map)?;
    collect(&rows)
}

/// At most `limit` flags above `after`, in flag order: a range of the
/// primary key.
pub(crate) async fn list_page(
    c: &Client<'_>,
    user: UserId,
    after: i64,
    limit: i64,
) -> Result<Vec<Unlock>> {
    let st = "SELECT flag_id, unlocked_at FROM user_unlocks WHERE user_id = $1 \
             AND flag_id > $2::int8 ORDER BY flag_id LIMIT $3";
    let rows = c.query(st, &[&user.0, &after, &limit]).await.map_err(map)?;
    collect(&rows)
}

fn collect(rows: &[tokio_postgres::Row]) -> Result<Vec<Unlock>> {
    rows.iter()
        .map(|r| {
            Ok(Unlock {
                flag_id: r.try_get(0).map_err(map)?,
                unlocked_at: r.try_get(1).map_err(map)?,
            })
        })
        .collect()
}

pub(crate) async fn revoke(c: &Client<'_>, user: UserId, flag: i32) -> Result<()> {
    let st = "DELETE FROM user_unlocks WHERE user_id = $1 AND flag_id = $2";
    if c.execute(st, &[&user.0, &flag]).await.map_err(map)? == 0 {
        return Err(Error::NotFound(Entity::Unlock));
    }
    Ok(())
}
