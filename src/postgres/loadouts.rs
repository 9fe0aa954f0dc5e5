//! `army_loadouts` on PostgreSQL.

use super::error::map;
use super::{Client, Param};
use crate::error::{Entity, Error, Result};
use crate::models::{Loadout, PieceAbilities, UserId};

/// The loadout and its version.
pub(crate) async fn get(c: &Client<'_>, user: UserId) -> Result<(Loadout, i64)> {
    let st = "SELECT element_id, army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
             ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, ability_king, \
             item_1, item_2, item_3, item_4, updated_at, version FROM army_loadouts WHERE user_id = $1";
    let Some(r) = c.query_opt(st, &[&user.0]).await.map_err(map)? else {
        return Err(Error::NotFound(Entity::Loadout));
    };
    let g = |i: usize| -> Result<i32> { r.try_get(i).map_err(map) };
    let loadout = Loadout {
        user_id: user,
        element_id: g(0)?,
        army_abilities: [g(1)?, g(2)?, g(3)?, g(4)?],
        piece_abilities: PieceAbilities::from_array([g(5)?, g(6)?, g(7)?, g(8)?, g(9)?, g(10)?]),
        items: [g(11)?, g(12)?, g(13)?, g(14)?],
        updated_at: r.try_get(15).map_err(map)?,
    };
    Ok((loadout, r.try_get(16).map_err(map)?))
}

pub(crate) async fn save(c: &Client<'_>, l: &Loadout) -> Result<()> {
    let st = "INSERT INTO army_loadouts (user_id, element_id, \
             army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
             ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, ability_king, \
             item_1, item_2, item_3, item_4, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (user_id) DO UPDATE SET element_id = excluded.element_id, \
             army_ability_1 = excluded.army_ability_1, army_ability_2 = excluded.army_ability_2, \
             army_ability_3 = excluded.army_ability_3, army_ability_4 = excluded.army_ability_4, \
             ability_pawn = excluded.ability_pawn, ability_knight = excluded.ability_knight, \
             ability_bishop = excluded.ability_bishop, ability_rook = excluded.ability_rook, \
             ability_queen = excluded.ability_queen, ability_king = excluded.ability_king, \
             item_1 = excluded.item_1, item_2 = excluded.item_2, item_3 = excluded.item_3, \
             item_4 = excluded.item_4, updated_at = excluded.updated_at, \
             version = army_loadouts.version + 1";
    let [a1, a2, a3, a4] = l.army_abilities;
    let [pawn, knight, bishop, rook, queen, king] = l.piece_abilities.to_array();
    let [i1, i2, i3, i4] = l.items;
    c.execute(
        st,
        &[
            &l.user_id.0,
            &l.element_id,
            &a1,
            &a2,
            &a3,
            &a4,
            &pawn,
            &knight,
            &bishop,
            &rook,
            &queen,
            &king,
            &i1,
            &i2,
            &i3,
            &i4,
            &l.updated_at,
        ],
    )
    .await
    .map_err(map)?;
    Ok(())
}

/// Saves only when the stored version is `expected` (0: only when there is
/// no loadout yet); returns the new version, or `None` when the check failed.
/// A concurrent save of the same row waits for this one and then finds the
/// version changed.
pub(crate) async fn save_if_version(
    c: &Client<'_>,
    l: &Loadout,
    expected: i64,
) -> Result<Option<i64>> {
    let sql = if expected == 0 {
        "INSERT INTO army_loadouts (user_id, element_id, \
         army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
         ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, ability_king, \
         item_1, item_2, item_3, item_4, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, 1) \
         ON CONFLICT (user_id) DO NOTHING RETURNING version"
    } else {
        "UPDATE army_loadouts SET element_id = $2, \
         army_ability_1 = $3, army_ability_2 = $4, army_ability_3 = $5, army_ability_4 = $6, \
         ability_pawn = $7, ability_knight = $8, ability_bishop = $9, ability_rook = $10, \
         ability_queen = $11, ability_king = $12, \
         item_1 = $13, item_2 = $14, item_3 = $15, item_4 = $16, updated_at = $17, \
         version = version + 1 \
         WHERE user_id = $1 AND version = $18::int8 RETURNING version"
    };
    let st = sql;
    let [a1, a2, a3, a4] = l.army_abilities;
    let [pawn, knight, bishop, rook, queen, king] = l.piece_abilities.to_array();
    let [i1, i2, i3, i4] = l.items;
    let values: [&dyn Param; 18] = [
        &l.user_id.0,
        &l.element_id,
        &a1,
        &a2,
        &a3,
        &a4,
        &pawn,
        &knight,
        &bishop,
        &rook,
        &queen,
        &king,
        &i1,
        &i2,
        &i3,
        &i4,
        &l.updated_at,
        &expected,
    ];
    // The insert (expected 0) has no version parameter.
    let n = if expected == 0 { 17 } else { 18 };
    let row = c.query_opt(st, &values[..n]).await.map_err(map)?;
    row.map(|r| r.try_get(0).map_err(map)).transpose()
}

pub(crate) async fn delete(c: &Client<'_>, user: UserId) -> Result<()> {
    let st = "DELETE FROM army_loadouts WHERE user_id = $1";
    if c.execute(st, &[&user.0]).await.map_err(map)? == 0 {
        return Err(Error::NotFound(Entity::Loadout));
    }
    Ok(())
}
