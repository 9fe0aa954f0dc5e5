//! `army_loadouts` on PostgreSQL.

use super::error::map;
use super::Client;
use crate::error::{Entity, Error, Result};
use crate::models::{Loadout, PieceAbilities, UserId};

pub(crate) async fn get(c: &Client, user: UserId) -> Result<Loadout> {
    let st = c
        .prepare_cached(
            "SELECT element_id, army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
             ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, ability_king, \
             item_1, item_2, item_3, item_4, updated_at FROM army_loadouts WHERE user_id = $1",
        )
        .await
        .map_err(map)?;
    let Some(r) = c.query_opt(&st, &[&user.0]).await.map_err(map)? else {
        return Err(Error::NotFound(Entity::Loadout));
    };
    let g = |i: usize| -> Result<i32> { r.try_get(i).map_err(map) };
    Ok(Loadout {
        user_id: user,
        element_id: g(0)?,
        army_abilities: [g(1)?, g(2)?, g(3)?, g(4)?],
        piece_abilities: PieceAbilities::from_array([g(5)?, g(6)?, g(7)?, g(8)?, g(9)?, g(10)?]),
        items: [g(11)?, g(12)?, g(13)?, g(14)?],
        updated_at: r.try_get(15).map_err(map)?,
    })
}

pub(crate) async fn save(c: &Client, l: &Loadout) -> Result<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO army_loadouts (user_id, element_id, \
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
             item_4 = excluded.item_4, updated_at = excluded.updated_at",
        )
        .await
        .map_err(map)?;
    let [a1, a2, a3, a4] = l.army_abilities;
    let [pawn, knight, bishop, rook, queen, king] = l.piece_abilities.to_array();
    let [i1, i2, i3, i4] = l.items;
    c.execute(
        &st,
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

pub(crate) async fn delete(c: &Client, user: UserId) -> Result<()> {
    let st = c
        .prepare_cached("DELETE FROM army_loadouts WHERE user_id = $1")
        .await
        .map_err(map)?;
    if c.execute(&st, &[&user.0]).await.map_err(map)? == 0 {
        return Err(Error::NotFound(Entity::Loadout));
    }
    Ok(())
}
