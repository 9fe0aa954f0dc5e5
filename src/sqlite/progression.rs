//! `progression` on SQLite.

use rusqlite::{params, Connection, OptionalExtension};

use super::error::map;
use crate::error::{Entity, Error, Result};
use crate::models::{Progression, UserId};

pub(crate) fn get(c: &Connection, user: UserId) -> Result<Progression> {
    c.prepare_cached("SELECT level, xp FROM progression WHERE user_id = ?1")
        .and_then(|mut st| {
            st.query_row([user.0], |r| {
                Ok(Progression {
                    user_id: user,
                    level: r.get(0)?,
                    xp: r.get(1)?,
                })
            })
            .optional()
        })
        .map_err(map)?
        .ok_or(Error::NotFound(Entity::Progression))
}

pub(crate) fn set(c: &Connection, p: &Progression) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO progression (user_id, level, xp) VALUES (?1, ?2, ?3) \
         ON CONFLICT (user_id) DO UPDATE SET level = excluded.level, xp = excluded.xp",
    )
    .and_then(|mut st| st.execute(params![p.user_id.0, p.level, p.xp]))
    .map_err(map)?;
    Ok(())
}

/// One guarded statement: the row changes only when the result stays within
/// `0..=i64::MAX`. `None` means no row changed (missing row or out of range).
pub(crate) fn add_xp(c: &Connection, user: UserId, delta: i64) -> Result<Option<(i32, i64)>> {
    c.prepare_cached(
        "UPDATE progression SET xp = xp + ?2 WHERE user_id = ?1 AND \
         CASE WHEN ?2 >= 0 THEN xp <= 9223372036854775807 - ?2 ELSE xp + ?2 >= 0 END \
         RETURNING level, xp",
    )
    .and_then(|mut st| {
        st.query_row(params![user.0, delta], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    })
    .map_err(map)
}
