//! The operations and their implementation through the persist public API.

use std::hint::black_box;

use anyhow::{ensure, Result};
use persist::{Db, NewAccount, Progression, UserId};

use crate::data::{Inputs, BULK_ROWS, PASS_HASH};

/// One measured operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Session lookup by bearer token (SHA-256 + point read).
    SessionLookup,
    /// A user's unlocks (about 20 rows).
    UnlockList,
    /// One account insert (canonical keys computed).
    AccountCreate,
    /// `UPDATE accounts SET last_login_at`.
    LoginStamp,
    /// Loadout upsert.
    LoadoutSave,
    /// One unlock grant; every other one is already held.
    UnlockGrant,
    /// The guarded `add_xp` update.
    AddXp,
    /// Account + progression + loadout in one transaction.
    RegisterTx,
    /// add_xp + 3 grants in one transaction.
    BattleEndTx,
    /// 1000 account inserts in one transaction.
    Insert1000Tx,
}

impl Op {
    pub const ALL: [Op; 10] = [
        Op::SessionLookup,
        Op::UnlockList,
        Op::AccountCreate,
        Op::LoginStamp,
        Op::LoadoutSave,
        Op::UnlockGrant,
        Op::AddXp,
        Op::RegisterTx,
        Op::BattleEndTx,
        Op::Insert1000Tx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::SessionLookup => "session_lookup",
            Op::UnlockList => "unlock_list",
            Op::AccountCreate => "account_create",
            Op::LoginStamp => "login_stamp",
            Op::LoadoutSave => "loadout_save",
            Op::UnlockGrant => "unlock_grant",
            Op::AddXp => "add_xp",
            Op::RegisterTx => "register_tx",
            Op::BattleEndTx => "battle_end_tx",
            Op::Insert1000Tx => "insert_1000_tx",
        }
    }

    pub fn is_read(self) -> bool {
        matches!(self, Op::SessionLookup | Op::UnlockList)
    }

    pub fn is_tx(self) -> bool {
        matches!(self, Op::RegisterTx | Op::BattleEndTx | Op::Insert1000Tx)
    }
}

/// Runs one operation through the persist public API (either backend).
pub async fn persist_run(db: &Db, op: Op, x: &Inputs) -> Result<()> {
    match op {
        Op::SessionLookup => {
            let t = x.lookup_token();
            black_box(db.sessions().find_by_token(&t).await?);
        }
        Op::UnlockList => {
            let v = db.unlocks().list(UserId(x.list_user())).await?;
            ensure!(!v.is_empty(), "unlock list came back empty");
            black_box(v);
        }
        Op::AccountCreate => {
            let (email, username) = x.new_account("c");
            black_box(
                db.accounts()
                    .create(&NewAccount {
                        email: &email,
                        username: &username,
                        pass_hash: PASS_HASH,
                        created_at: x.at(),
                    })
                    .await?,
            );
        }
        Op::LoginStamp => {
            db.accounts()
                .update_last_login(UserId(x.user()), x.at())
                .await?
        }
        Op::LoadoutSave => db.loadouts().save(&x.loadout(x.user())).await?,
        Op::UnlockGrant => {
            black_box(
                db.unlocks()
                    .grant(UserId(x.grant_user()), x.grant_flag(), x.at())
                    .await?,
            );
        }
        Op::AddXp => {
            black_box(db.progression().add_xp(UserId(x.user()), 10).await?);
        }
        Op::RegisterTx => {
            let (email, username) = x.new_account("r");
            let tx = db.begin().await?;
            let a = tx
                .accounts()
                .create(&NewAccount {
                    email: &email,
                    username: &username,
                    pass_hash: PASS_HASH,
                    created_at: x.at(),
                })
                .await?;
            tx.progression()
                .set(&Progression {
                    user_id: a.user_id,
                    level: 0,
                    xp: 0,
                })
                .await?;
            tx.loadouts().save(&x.loadout(a.user_id.0)).await?;
            tx.commit().await?;
        }
        Op::BattleEndTx => {
            let user = UserId(x.grant_user());
            let tx = db.begin().await?;
            black_box(tx.progression().add_xp(user, 25).await?);
            for f in x.battle_flags() {
                black_box(tx.unlocks().grant(user, f, x.at()).await?);
            }
            tx.commit().await?;
        }
        Op::Insert1000Tx => {
            let tx = db.begin().await?;
            for j in 0..BULK_ROWS {
                let (email, username) = x.bulk_account(j);
                black_box(
                    tx.accounts()
                        .create(&NewAccount {
                            email: &email,
                            username: &username,
                            pass_hash: PASS_HASH,
                            created_at: x.at(),
                        })
                        .await?,
                );
            }
            tx.commit().await?;
        }
    }
    Ok(())
}
