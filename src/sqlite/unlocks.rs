//! `user_unlocks` on SQLite.

use rusqlite::{params, Connection};

use super::error::map;
use crate::error::{Entity, Error, Result};
use crate::models::{Unlock, UserId};

pub(crate) fn grant(c: &Connection, user: UserId, flag: i32, at: i64) -> Result<bool> {
    let n = c
        .prepare_cached(
            "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (user_id, flag_id) DO NOTHING",
        )
        .and_then(|mut st| st.execute(params![user.0, flag, at]))
        .map_err(map)?;
    Ok(n == 1)
}

/// One statement: the flags travel as a JSON array (bound, never spliced into
/// the SQL); returns the flags that were new.
pub(crate) fn grant_many(c: &Connection, user: UserId, flags: &[i32], at: i64) -> Result<Vec<i32>> {
    let json = format!(
        "[{}]",
        flags
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut st = c
        .prepare_cached(
            "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) \
             SELECT ?1, value, ?3 FROM json_each(?2) WHERE true \
             ON CONFLICT (user_id, flag_id) DO NOTHING RETURNING flag_id",
        )
        .map_err(map)?;
    let rows = st
        .query_map(params![user.0, json, at], |r| r.get::<_, i32>(0))
        .map_err(map)?;
    let mut new = rows.collect::<rusqlite::Result<Vec<i32>>>().map_err(map)?;
    new.sort_unstable();
    Ok(new)
}

pub(crate) fn has(c: &Connection, user: UserId, flag: i32) -> Result<bool> {
    c.prepare_cached("SELECT 1 FROM user_unlocks WHERE user_id = ?1 AND flag_id = ?2")
        .and_then(|mut st| st.exists(params![user.0, flag]))
        .map_err(map)
}

pub(crate) fn list(c: &Connection, user: UserId) -> Result<Vec<Unlock>> {
    list_page(c, user, -1, i64::MAX)
}

/// At most `limit` flags above `after`, in flag order: a range of the
/// primary key.
pub(crate) fn list_page(
    c: &Connection,
    user: UserId,
    after: i64,
    limit: i64,
) -> Result<Vec<Unlock>> {
    let mut st = c
        .prepare_cached(
            "SELECT flag_id, unlocked_at FROM user_unlocks WHERE user_id = ?1 AND flag_id > ?2 \
             ORDER BY flag_id LIMIT ?3",
        )
        .map_err(map)?;
    let rows = st
        .query_map(params![user.0, after, limit], |r| {
            Ok(Unlock {
                flag_id: r.get(0)?,
                unlocked_at: r.get(1)?,
            })
        })
        .map_err(map)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)
}

pub(crate) fn revoke(c: &Connection, user: UserId, flag: i32) -> Result<()> {
    let n = c
        .prepare_cached("DELETE FROM user_unlocks WHERE user_id = ?1 AND flag_id = ?2")
        .and_then(|mut st| st.execute(params![user.0, flag]))
        .map_err(map)?;
    if n == 0 {
        return Err(Error::NotFound(Entity::Unlock));
    }
    Ok(())
}
