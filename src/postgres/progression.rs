//! `progression` on PostgreSQL.

use super::error::map;
use super::Client;
use crate::error::{Entity, Error, Result};
use crate::models::{Progression, UserId};

pub(crate) async fn get(c: &Client, user: UserId) -> Result<Progression> {
    let st = c
        .prepare_cached("SELECT level, xp FROM progression WHERE user_id = $1")
        .await
        .map_err(map)?;
    match c.query_opt(&st, &[&user.0]).await.map_err(map)? {
        Some(r) => Ok(Progression {
            user_id: user,
            level: r.try_get(0).map_err(map)?,
            xp: r.try_get(1).map_err(map)?,
        }),
        None => Err(Error::NotFound(Entity::Progression)),
    }
}

pub(crate) async fn set(c: &Client, p: &Progression) -> Result<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO progression (user_id, level, xp) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET level = excluded.level, xp = excluded.xp",
        )
        .await
        .map_err(map)?;
    c.execute(&st, &[&p.user_id.0, &p.level, &p.xp])
        .await
        .map_err(map)?;
    Ok(())
}

/// One guarded statement (the same guard as on SQLite): the row changes only
/// when the result stays within `0..=i64::MAX`, so bigint overflow is never
/// raised. `None` means no row changed.
pub(crate) async fn add_xp(c: &Client, user: UserId, delta: i64) -> Result<Option<(i32, i64)>> {
    let st = c
        .prepare_cached(
            "UPDATE progression SET xp = xp + $2::int8 WHERE user_id = $1 AND \
             CASE WHEN $2::int8 >= 0 THEN xp <= 9223372036854775807 - $2::int8 \
             ELSE xp + $2::int8 >= 0 END \
             RETURNING level, xp",
        )
        .await
        .map_err(map)?;
    match c.query_opt(&st, &[&user.0, &delta]).await.map_err(map)? {
        Some(r) => Ok(Some((
            r.try_get(0).map_err(map)?,
            r.try_get(1).map_err(map)?,
        ))),
        None => Ok(None),
    }
}
