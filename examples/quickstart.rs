//! The README's quick start: register, log in, look the session up, end a
//! battle, log out. Safe to run again: the second run finds the account.
//!
//! `cargo run --example quickstart` (SQLite file `persist.db` in the current
//! folder, or `DATABASE_URL`).

use persist::{Config, Error, Loadout, NewAccount, Progression};

#[tokio::main]
async fn main() -> persist::Result<()> {
    // DATABASE_URL, else sqlite://persist.db in the current folder.
    let db = persist::open(&Config::from_env()?).await?;
    db.migrate().await?; // applies what is pending; nothing the second time

    let now = 1_700_000_000;
    // Register once: account, progression and loadout, all or nothing.
    let account = match db.accounts().find_by_email("ada@example.com").await {
        Ok(a) => a,
        Err(Error::NotFound(_)) => {
            let tx = db.begin().await?;
            let a = tx
                .accounts()
                .create(&NewAccount {
                    email: "ada@example.com",
                    username: "Ada",
                    pass_hash: b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
                    created_at: now,
                })
                .await?;
            tx.progression()
                .set(&Progression {
                    user_id: a.user_id,
                    level: 1,
                    xp: 0,
                })
                .await?;
            tx.loadouts().save(&Loadout::empty(a.user_id, now)).await?;
            tx.commit().await?;
            a
        }
        Err(e) => return Err(e),
    };

    // Login: the auth layer issues the token (32 random bytes, base64url:
    // 43 characters; fewer than 22 are refused). Only its digest is stored.
    let token = "q3Jx8vQ2mB7nLr0tY5wZc1dF4gH6jK9sA2eU7iO0pXw";
    db.accounts()
        .update_last_login(account.user_id, now)
        .await?;
    db.sessions()
        .create(token, account.user_id, now, now + 86_400)
        .await?;

    // Every request: one indexed point read.
    let session = db.sessions().find_by_token(token).await?;
    assert_eq!(session.user_id, account.user_id);

    // End of a battle: XP and unlock flags (granting a held flag is no error).
    db.progression().add_xp(account.user_id, 120).await?;
    db.unlocks()
        .grant_many(account.user_id, &[3, 7], now)
        .await?;

    db.sessions().delete(token).await?; // logout
    let p = db.progression().get(account.user_id).await?;
    println!(
        "{} (user {}) has {} xp",
        account.username, account.user_id.0, p.xp
    );
    db.close().await;
    Ok(())
}
