//! `battle_results` on PostgreSQL: exactly-once battle ends.

use super::error::map;
use super::{progression, unlocks, Client};
use crate::error::{Entity, Error, Result};
use crate::models::{flag_list, BattleEnd, BattleOutcome, StoredBattle};

/// Applies `end` unless its battle id is already stored for the player. Runs
/// inside a transaction (the repository opens one on the pool). The claim
/// comes first: a concurrent repeat waits on its key until this transaction
/// ends, then finds the stored answer. `flags` are ascending and distinct.
pub(crate) async fn apply(
    c: &Client<'_>,
    end: &BattleEnd<'_>,
    flags: &[i32],
) -> Result<BattleOutcome> {
    let flag_text = flag_list(flags);
    let claim = "INSERT INTO battle_results \
             (user_id, battle_id, xp_delta, flags, ended_at, level, xp, granted) \
             VALUES ($1, $2, $3, $4, $5, 0, 0, '') \
             ON CONFLICT (user_id, battle_id) DO NOTHING";
    let claimed = c
        .execute(
            claim,
            &[&end.user_id.0, &end.battle_id, &end.xp, &flag_text, &end.at],
        )
        .await
        .map_err(map)?;
    if claimed == 0 {
        return stored(c, end).await.map(BattleOutcome::Stored);
    }
    let Some((level, xp)) = progression::add_xp(c, end.user_id, end.xp).await? else {
        // Nothing applied: take the claim back, then say why.
        release_claim(c, end).await?;
        return match progression::get(c, end.user_id).await {
            Ok(_) => Ok(BattleOutcome::OutOfRange),
            Err(e) if e.is_not_found() => Ok(BattleOutcome::NoProgression),
            Err(e) => Err(e),
        };
    };
    let granted = if flags.is_empty() {
        Vec::new()
    } else {
        unlocks::grant_many(c, end.user_id, flags, end.at).await?
    };
    let answer = "UPDATE battle_results SET level = $3, xp = $4, granted = $5 \
             WHERE user_id = $1 AND battle_id = $2";
    c.execute(
        answer,
        &[
            &end.user_id.0,
            &end.battle_id,
            &level,
            &xp,
            &flag_list(&granted),
        ],
    )
    .await
    .map_err(map)?;
    Ok(BattleOutcome::Applied(level, xp, granted))
}

async fn release_claim(c: &Client<'_>, end: &BattleEnd<'_>) -> Result<()> {
    let st = "DELETE FROM battle_results WHERE user_id = $1 AND battle_id = $2";
    c.execute(st, &[&end.user_id.0, &end.battle_id])
        .await
        .map_err(map)?;
    Ok(())
}

async fn stored(c: &Client<'_>, end: &BattleEnd<'_>) -> Result<StoredBattle> {
    let st = "SELECT xp_delta, flags, ended_at, level, xp, granted FROM battle_results \
             WHERE user_id = $1 AND battle_id = $2";
    let Some(r) = c
        .query_opt(st, &[&end.user_id.0, &end.battle_id])
        .await
        .map_err(map)?
    else {
        return Err(Error::NotFound(Entity::Battle));
    };
    Ok(StoredBattle {
        xp_delta: r.try_get(0).map_err(map)?,
        flags: r.try_get(1).map_err(map)?,
        ended_at: r.try_get(2).map_err(map)?,
        level: r.try_get(3).map_err(map)?,
        xp: r.try_get(4).map_err(map)?,
        granted: r.try_get(5).map_err(map)?,
    })
}

/// Deletes at most `limit` battle records with `ended_at < cutoff`; rows
/// locked by others are skipped.
pub(crate) async fn delete_ended_batch(c: &Client<'_>, cutoff: i64, limit: i64) -> Result<u64> {
    let st = "DELETE FROM battle_results WHERE (user_id, battle_id) IN \
             (SELECT user_id, battle_id FROM battle_results WHERE ended_at < $1 \
              LIMIT $2 FOR UPDATE SKIP LOCKED)";
    c.execute(st, &[&cutoff, &limit]).await.map_err(map)
}
