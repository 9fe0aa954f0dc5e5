//! Shared set-ups: the game server's register flow.

use persist::{Account, Db, Loadout, NewAccount, Progression, Tx};

/// The register flow inside the unit of work `tx`: the account, its
/// progression (level 1, 0 XP) and its default (empty) loadout stamped at
/// `new.created_at`. The caller adds what else it needs (a session, a
/// deliberate failure) and commits or rolls back.
pub async fn register_in(tx: &Tx, new: &NewAccount<'_>) -> persist::Result<Account> {
    let account = tx.accounts().create(new).await?;
    tx.progression()
        .set(&Progression {
            user_id: account.user_id,
            level: 1,
            xp: 0,
        })
        .await?;
    tx.loadouts()
        .save(&Loadout::empty(account.user_id, new.created_at))
        .await?;
    Ok(account)
}

/// [`register_in`] in a unit of work of its own, committed.
pub async fn register(db: &Db, new: &NewAccount<'_>) -> persist::Result<Account> {
    let tx = db.begin().await?;
    let account = register_in(&tx, new).await?;
    tx.commit().await?;
    Ok(account)
}
