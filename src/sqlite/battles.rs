//! `battle_results` on SQLite: exactly-once battle ends.

use rusqlite::{params, Connection, OptionalExtension};

use super::error::map;
use super::tx::in_immediate_transaction;
use super::unlocks;
use crate::error::{Entity, Error, Result};
use crate::models::{flag_list, BattleEnd, BattleOutcome, StoredBattle};

/// Applies `end` unless its battle id is already stored for the player; all
/// or nothing. On the pool (autocommit) it runs in its own `BEGIN IMMEDIATE`
/// transaction; inside a unit of work it joins it (a failure aborts the
/// unit of work). `flags` are ascending and distinct.
pub(crate) fn apply(c: &Connection, end: &BattleEnd<'_>, flags: &[i32]) -> Result<BattleOutcome> {
    if c.is_autocommit() {
        in_immediate_transaction(c, |c| apply_in(c, end, flags))
    } else {
        apply_in(c, end, flags)
    }
}

fn apply_in(c: &Connection, end: &BattleEnd<'_>, flags: &[i32]) -> Result<BattleOutcome> {
    let flag_text = flag_list(flags);
    let claimed = c
        .prepare_cached(
            "INSERT INTO battle_results \
             (user_id, battle_id, xp_delta, flags, ended_at, level, xp, granted) \
             VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, '') \
             ON CONFLICT (user_id, battle_id) DO NOTHING",
        )
        .and_then(|mut st| {
            st.execute(params![
                end.user_id.0,
                end.battle_id,
                end.xp,
                flag_text,
                end.at
            ])
        })
        .map_err(map)?;
    if claimed == 0 {
        return stored(c, end).map(BattleOutcome::Stored);
    }
    let Some((level, xp)) = super::progression::add_xp(c, end.user_id, end.xp)? else {
        // Nothing applied: take the claim back, then say why.
        release_claim(c, end)?;
        return match super::progression::get(c, end.user_id) {
            Ok(_) => Ok(BattleOutcome::OutOfRange),
            Err(e) if e.is_not_found() => Ok(BattleOutcome::NoProgression),
            Err(e) => Err(e),
        };
    };
    let granted = if flags.is_empty() {
        Vec::new()
    } else {
        unlocks::grant_many(c, end.user_id, flags, end.at)?
    };
    c.prepare_cached(
        "UPDATE battle_results SET level = ?3, xp = ?4, granted = ?5 \
         WHERE user_id = ?1 AND battle_id = ?2",
    )
    .and_then(|mut st| {
        st.execute(params![
            end.user_id.0,
            end.battle_id,
            level,
            xp,
            flag_list(&granted)
        ])
    })
    .map_err(map)?;
    Ok(BattleOutcome::Applied(level, xp, granted))
}

fn release_claim(c: &Connection, end: &BattleEnd<'_>) -> Result<()> {
    c.prepare_cached("DELETE FROM battle_results WHERE user_id = ?1 AND battle_id = ?2")
        .and_then(|mut st| st.execute(params![end.user_id.0, end.battle_id]))
        .map_err(map)?;
    Ok(())
}

fn stored(c: &Connection, end: &BattleEnd<'_>) -> Result<StoredBattle> {
    c.prepare_cached(
        "SELECT xp_delta, flags, ended_at, level, xp, granted FROM battle_results \
         WHERE user_id = ?1 AND battle_id = ?2",
    )
    .and_then(|mut st| {
        st.query_row(params![end.user_id.0, end.battle_id], |r| {
            Ok(StoredBattle {
                xp_delta: r.get(0)?,
                flags: r.get(1)?,
                ended_at: r.get(2)?,
                level: r.get(3)?,
                xp: r.get(4)?,
                granted: r.get(5)?,
            })
        })
        .optional()
    })
    .map_err(map)?
    .ok_or(Error::NotFound(Entity::Battle))
}

/// Deletes at most `limit` battle records with `ended_at < cutoff`; one
/// short write.
pub(crate) fn delete_ended_batch(c: &Connection, cutoff: i64, limit: i64) -> Result<u64> {
    let n = c
        .prepare_cached(
            "DELETE FROM battle_results WHERE (user_id, battle_id) IN \
             (SELECT user_id, battle_id FROM battle_results WHERE ended_at < ?1 LIMIT ?2)",
        )
        .and_then(|mut st| st.execute(params![cutoff, limit]))
        .map_err(map)?;
    Ok(n as u64)
}
