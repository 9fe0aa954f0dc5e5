//! `progression` on PostgreSQL.

use super::error::map;
use super::{Client, Param};
use crate::error::{Entity, Error, Result};
use crate::models::{Progression, UserId};

pub(crate) async fn get(c: &Client<'_>, user: UserId) -> Result<Progression> {
    get_versioned(c, user).await.map(|(p, _)| p)
}

/// The progression and its version.
pub(crate) async fn get_versioned(c: &Client<'_>, user: UserId) -> Result<(Progression, i64)> {
    let st = "SELECT level, xp, version FROM progression WHERE user_id = $1";
    match c.query_opt(st, &[&user.0]).await.map_err(map)? {
        Some(r) => Ok((
            Progression {
                user_id: user,
                level: r.try_get(0).map_err(map)?,
                xp: r.try_get(1).map_err(map)?,
            },
            r.try_get(2).map_err(map)?,
        )),
        None => Err(Error::NotFound(Entity::Progression)),
    }
}

pub(crate) async fn set(c: &Client<'_>, p: &Progression) -> Result<()> {
    let st = "INSERT INTO progression (user_id, level, xp) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET level = excluded.level, xp = excluded.xp, \
             version = progression.version + 1";
    c.execute(st, &[&p.user_id.0, &p.level, &p.xp])
        .await
        .map_err(map)?;
    Ok(())
}

/// Sets only when the stored version is `expected` (0: only when there is no
/// row yet); returns the new version, or `None` when the check failed.
pub(crate) async fn set_if_version(
    c: &Client<'_>,
    p: &Progression,
    expected: i64,
) -> Result<Option<i64>> {
    let sql = if expected == 0 {
        "INSERT INTO progression (user_id, level, xp, version) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (user_id) DO NOTHING RETURNING version"
    } else {
        "UPDATE progression SET level = $2, xp = $3, version = version + 1 \
         WHERE user_id = $1 AND version = $4::int8 RETURNING version"
    };
    let st = sql;
    let values: [&dyn Param; 4] = [&p.user_id.0, &p.level, &p.xp, &expected];
    // The insert (expected 0) has no version parameter.
    let n = if expected == 0 { 3 } else { 4 };
    let row = c.query_opt(st, &values[..n]).await.map_err(map)?;
    row.map(|r| r.try_get(0).map_err(map)).transpose()
}

/// One guarded statement (the same guard as on SQLite): the row changes only
/// when the result stays within `0..=i64::MAX`, so bigint overflow is never
/// raised. `None` means no row changed.
pub(crate) async fn add_xp(c: &Client<'_>, user: UserId, delta: i64) -> Result<Option<(i32, i64)>> {
    let st =
        "UPDATE progression SET xp = xp + $2::int8, version = version + 1 WHERE user_id = $1 AND \
             CASE WHEN $2::int8 >= 0 THEN xp <= 9223372036854775807 - $2::int8 \
             ELSE xp + $2::int8 >= 0 END \
             RETURNING level, xp";
    match c.query_opt(st, &[&user.0, &delta]).await.map_err(map)? {
        Some(r) => Ok(Some((
            r.try_get(0).map_err(map)?,
            r.try_get(1).map_err(map)?,
        ))),
        None => Ok(None),
    }
}
