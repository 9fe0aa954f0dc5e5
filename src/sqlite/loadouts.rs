//! `army_loadouts` on SQLite.

use rusqlite::{params, Connection, OptionalExtension};

use super::error::map;
use crate::error::{Entity, Error, Result};
use crate::models::{Loadout, PieceAbilities, UserId};

pub(crate) fn get(c: &Connection, user: UserId) -> Result<Loadout> {
    c.prepare_cached(
        "SELECT element_id, army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
         ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, ability_king, \
         item_1, item_2, item_3, item_4, updated_at FROM army_loadouts WHERE user_id = ?1",
    )
    .and_then(|mut st| {
        st.query_row([user.0], |r| {
            Ok(Loadout {
                user_id: user,
                element_id: r.get(0)?,
                army_abilities: [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?],
                piece_abilities: PieceAbilities::from_array([
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ]),
                items: [r.get(11)?, r.get(12)?, r.get(13)?, r.get(14)?],
                updated_at: r.get(15)?,
            })
        })
        .optional()
    })
    .map_err(map)?
    .ok_or(Error::NotFound(Entity::Loadout))
}

pub(crate) fn save(c: &Connection, l: &Loadout) -> Result<()> {
    let [a1, a2, a3, a4] = l.army_abilities;
    let [pawn, knight, bishop, rook, queen, king] = l.piece_abilities.to_array();
    let [i1, i2, i3, i4] = l.items;
    c.prepare_cached(
        "INSERT INTO army_loadouts (user_id, element_id, \
         army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
         ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, ability_king, \
         item_1, item_2, item_3, item_4, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
         ON CONFLICT (user_id) DO UPDATE SET element_id = excluded.element_id, \
         army_ability_1 = excluded.army_ability_1, army_ability_2 = excluded.army_ability_2, \
         army_ability_3 = excluded.army_ability_3, army_ability_4 = excluded.army_ability_4, \
         ability_pawn = excluded.ability_pawn, ability_knight = excluded.ability_knight, \
         ability_bishop = excluded.ability_bishop, ability_rook = excluded.ability_rook, \
         ability_queen = excluded.ability_queen, ability_king = excluded.ability_king, \
         item_1 = excluded.item_1, item_2 = excluded.item_2, item_3 = excluded.item_3, \
         item_4 = excluded.item_4, updated_at = excluded.updated_at",
    )
    .and_then(|mut st| {
        st.execute(params![
            l.user_id.0,
            l.element_id,
            a1,
            a2,
            a3,
            a4,
            pawn,
            knight,
            bishop,
            rook,
            queen,
            king,
            i1,
            i2,
            i3,
            i4,
            l.updated_at
        ])
    })
    .map_err(map)?;
    Ok(())
}

pub(crate) fn delete(c: &Connection, user: UserId) -> Result<()> {
    let n = c
        .prepare_cached("DELETE FROM army_loadouts WHERE user_id = ?1")
        .and_then(|mut st| st.execute([user.0]))
        .map_err(map)?;
    if n == 0 {
        return Err(Error::NotFound(Entity::Loadout));
    }
    Ok(())
}
