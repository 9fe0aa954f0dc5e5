//! `army_loadouts` on SQLite.

use rusqlite::{params, Connection, OptionalExtension};

use super::error::map;
use crate::error::{Entity, Error, Result};
use crate::models::{Loadout, PieceAbilities, UserId};

/// The loadout and its version.
pub(crate) fn get(c: &Connection, user: UserId) -> Result<(Loadout, i64)> {
    c.prepare_cached(
        "SELECT element_id, army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
         ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, ability_king, \
         item_1, item_2, item_3, item_4, updated_at, version FROM army_loadouts WHERE user_id = ?1",
    )
    .and_then(|mut st| {
        st.query_row([user.0], |r| {
            let loadout = Loadout {
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
            };
            Ok((loadout, r.get(16)?))
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
         item_4 = excluded.item_4, updated_at = excluded.updated_at, \
         version = army_loadouts.version + 1",
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

/// Saves only when the stored version is `expected` (0: only when there is
/// no loadout yet); returns the new version, or `None` when the check failed.
pub(crate) fn save_if_version(c: &Connection, l: &Loadout, expected: i64) -> Result<Option<i64>> {
    let sql = if expected == 0 {
        "INSERT INTO army_loadouts (user_id, element_id, \
         army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
         ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, ability_king, \
         item_1, item_2, item_3, item_4, updated_at, version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, 1) \
         ON CONFLICT (user_id) DO NOTHING RETURNING version"
    } else {
        "UPDATE army_loadouts SET element_id = ?2, \
         army_ability_1 = ?3, army_ability_2 = ?4, army_ability_3 = ?5, army_ability_4 = ?6, \
         ability_pawn = ?7, ability_knight = ?8, ability_bishop = ?9, ability_rook = ?10, \
         ability_queen = ?11, ability_king = ?12, \
         item_1 = ?13, item_2 = ?14, item_3 = ?15, item_4 = ?16, updated_at = ?17, \
         version = version + 1 \
         WHERE user_id = ?1 AND version = ?18 RETURNING version"
    };
    let [a1, a2, a3, a4] = l.army_abilities;
    let [pawn, knight, bishop, rook, queen, king] = l.piece_abilities.to_array();
    let [i1, i2, i3, i4] = l.items;
    let values = params![
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
        l.updated_at,
        expected
    ];
    // The insert (expected 0) has no version parameter.
    let n = if expected == 0 { 17 } else { 18 };
    c.prepare_cached(sql)
        .and_then(|mut st| st.query_row(&values[..n], |r| r.get(0)).optional())
        .map_err(map)
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
