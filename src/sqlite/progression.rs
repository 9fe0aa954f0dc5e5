//! `progression` on SQLite.

use rusqlite::{params, Connection, OptionalExtension};

use super::error::map;
use crate::error::{Entity, Error, Result};
use crate::models::{Progression, UserId};

pub(crate) fn get(c: &Connection, user: UserId) -> Result<Progression> {
    get_versioned(c, user).map(|(p, _)| p)
}

/// The progression and its version.
pub(crate) fn get_versioned(c: &Connection, user: UserId) -> Result<(Progression, i64)> {
    c.prepare_cached("SELECT level, xp, version FROM progression WHERE user_id = ?1")
        .and_then(|mut st| {
            st.query_row([user.0], |r| {
                let p = Progression {
                    user_id: user,
                    level: r.get(0)?,
                    xp: r.get(1)?,
                };
                Ok((p, r.get(2)?))
            })
            .optional()
        })
        .map_err(map)?
        .ok_or(Error::NotFound(Entity::Progression))
}

pub(crate) fn set(c: &Connection, p: &Progression) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO progression (user_id, level, xp) VALUES (?1, ?2, ?3) \
         ON CONFLICT (user_id) DO UPDATE SET level = excluded.level, xp = excluded.xp, \
         version = progression.version + 1",
    )
    .and_then(|mut st| st.execute(params![p.user_id.0, p.level, p.xp]))
    .map_err(map)?;
    Ok(())
}

/// Sets only when the stored version is `expected` (0: only when there is no
/// row yet); returns the new version, or `None` when the check failed.
pub(crate) fn set_if_version(
    c: &Connection,
    p: &Progression,
    expected: i64,
) -> Result<Option<i64>> {
    let sql = if expected == 0 {
        "INSERT INTO progression (user_id, level, xp, version) VALUES (?1, ?2, ?3, 1) \
         ON CONFLICT (user_id) DO NOTHING RETURNING version"
    } else {
        "UPDATE progression SET level = ?2, xp = ?3, version = version + 1 \
         WHERE user_id = ?1 AND version = ?4 RETURNING version"
    };
    let values = params![p.user_id.0, p.level, p.xp, expected];
    // The insert (expected 0) has no version parameter.
    let n = if expected == 0 { 3 } else { 4 };
    c.prepare_cached(sql)
        .and_then(|mut st| st.query_row(&values[..n], |r| r.get(0)).optional())
        .map_err(map)
}

/// One guarded statement: the row changes only when the result stays within
/// `0..=i64::MAX`. `None` means no row changed (missing row or out of range).
pub(crate) fn add_xp(c: &Connection, user: UserId, delta: i64) -> Result<Option<(i32, i64)>> {
    c.prepare_cached(
        "UPDATE progression SET xp = xp + ?2, version = version + 1 WHERE user_id = ?1 AND \
         CASE WHEN ?2 >= 0 THEN xp <= 9223372036854775807 - ?2 ELSE xp + ?2 >= 0 END \
         RETURNING level, xp",
    )
    .and_then(|mut st| {
        st.query_row(params![user.0, delta], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    })
    .map_err(map)
}
