//! The operations and their implementation through the persist public API.

use std::hint::black_box;

use anyhow::{ensure, Result};
use persist::{Db, NewAccount, Progression, UserId};

use crate::data::{login_token, seed_email, Inputs, BULK_ROWS, PASS_HASH, SESSION_TTL};

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
    /// Loadout screen: read the whole loadout.
    LoadoutGet,
    /// Profile: read level and xp.
    ProgressionGet,
    /// Login by email: read the account, stamp `last_login_at`, issue a
    /// session (three calls).
    Login,
    /// Logout: delete the session a login issued.
    Logout,
    /// Registration: account + progression + loadout in one transaction,
    /// then a session.
    Register,
    /// `sessions.list_for_user` on a user with many sessions.
    ListSessions,
    /// `sessions.delete_all_for_user` on a user with many sessions.
    DeleteUserSessions,
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
            Op::LoadoutGet => "loadout_get",
            Op::ProgressionGet => "progression_get",
            Op::Login => "login",
            Op::Logout => "logout",
            Op::Register => "register",
            Op::ListSessions => "list_sessions",
            Op::DeleteUserSessions => "delete_user_sessions",
        }
    }

    pub fn is_read(self) -> bool {
        matches!(
            self,
            Op::SessionLookup
                | Op::UnlockList
                | Op::LoadoutGet
                | Op::ProgressionGet
                | Op::ListSessions
        )
    }

    pub fn is_tx(self) -> bool {
        matches!(
            self,
            Op::RegisterTx | Op::BattleEndTx | Op::Insert1000Tx | Op::Register
        )
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
        Op::LoadoutGet => {
            black_box(db.loadouts().get(UserId(x.user())).await?);
        }
        Op::ProgressionGet => {
            black_box(db.progression().get(UserId(x.user())).await?);
        }
        Op::Login => {
            let a = db
                .accounts()
                .find_by_email(&seed_email(x.user() as u64))
                .await?;
            db.accounts().update_last_login(a.user_id, x.at()).await?;
            black_box(
                db.sessions()
                    .create(&login_token(x.seq), a.user_id, x.at(), x.at() + SESSION_TTL)
                    .await?,
            );
        }
        Op::Logout => db.sessions().delete(&login_token(x.logout)).await?,
        Op::Register => {
            let (email, username) = x.new_account("g");
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
            black_box(
                db.sessions()
                    .create(&login_token(x.seq), a.user_id, x.at(), x.at() + SESSION_TTL)
                    .await?,
            );
        }
        Op::ListSessions => {
            let v = db.sessions().list_for_user(UserId(x.many_user)).await?;
            ensure!(!v.is_empty(), "no sessions listed");
            black_box(v);
        }
        Op::DeleteUserSessions => {
            black_box(
                db.sessions()
                    .delete_all_for_user(UserId(x.many_user))
                    .await?,
            );
        }
    }
    Ok(())
}
