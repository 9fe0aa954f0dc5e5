//! Every caller flow of the game server, through the public API:
//! register, login (by email and by username), validate a session, save a
//! loadout, end a battle, logout, password change, account deletion.
//!
//! ```sh
//! cargo run --example flows                                  # temporary SQLite file
//! cargo run --example flows -- postgres://postgres@127.0.0.1/test
//! ```

use persist::{Config, Error, Loadout, NewAccount, PieceAbilities, Progression, UniqueKey};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("persist-flows-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("flows.db").display()));
    let db = persist::open(&Config::from_url(&url)?).await?;
    db.migrate().await?;
    let now = 1_800_000_000;

    // Register: account + progression + default loadout as one unit of work.
    let tx = db.begin().await?;
    let ada = tx
        .accounts()
        .create(&NewAccount {
            email: "Ada@Example.com",
            username: "Ada",
            pass_hash: b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
            created_at: now,
        })
        .await?;
    tx.progression()
        .set(&Progression {
            user_id: ada.user_id,
            level: 1,
            xp: 0,
        })
        .await?;
    tx.loadouts()
        .save(&Loadout::empty(ada.user_id, now))
        .await?;
    tx.commit().await?;
    println!("registered user {} ({})", ada.user_id, ada.username);

    // A taken email or username fails cleanly, naming the key.
    let dup = db
        .accounts()
        .create(&NewAccount {
            email: "someone@example.com",
            username: "ADA",
            pass_hash: b"x",
            created_at: now,
        })
        .await;
    assert!(matches!(dup, Err(Error::Conflict(UniqueKey::Username))));
    println!("duplicate username refused");

    // Login by email or username, stamp last_login_at, issue a session.
    let by_email = db.accounts().find_by_email("ada@example.com").await?;
    let by_name = db.accounts().find_by_username("ada").await?;
    assert_eq!(by_email.user_id, by_name.user_id);
    db.accounts()
        .update_last_login(ada.user_id, now + 5)
        .await?;
    let token = "q3Jx8vQ2mB7nLr0tY5wZc1dF4gH6jK9sA2eU7iO0pXw";
    db.sessions()
        .create(token, ada.user_id, now + 5, now + 5 + 86_400)
        .await?;
    println!("logged in");

    // Every authenticated request: look the session up, check expiry.
    let session = db.sessions().find_by_token(token).await?;
    assert!(session.expires_at > now + 10 && session.user_id == ada.user_id);
    println!("session {} valid", session.id);

    // Loadout screen: save and read the whole loadout.
    let loadout = Loadout {
        user_id: ada.user_id,
        element_id: 1,
        army_abilities: [1, 4, 0, 0],
        piece_abilities: PieceAbilities {
            pawn: 2,
            knight: 5,
            bishop: 0,
            rook: 3,
            queen: 6,
            king: 1,
        },
        items: [2, 7, 0, 0],
        updated_at: now + 20,
    };
    db.loadouts().save(&loadout).await?;
    assert_eq!(db.loadouts().get(ada.user_id).await?, loadout);

    // End of a battle: XP and unlocks together.
    let tx = db.begin().await?;
    let progression = tx.progression().add_xp(ada.user_id, 150).await?;
    let new_flags = tx
        .unlocks()
        .grant_many(ada.user_id, &[1, 2, 3], now + 60)
        .await?;
    tx.commit().await?;
    assert!(!db.unlocks().grant(ada.user_id, 2, now + 61).await?); // already held: not an error
    println!(
        "battle over: xp {}, new flags {new_flags:?}",
        progression.xp
    );

    // Logout; password change revokes every session.
    db.sessions().delete(token).await?;
    db.sessions()
        .create("second-device-token-0123456789", ada.user_id, now, now + 60)
        .await?;
    db.accounts()
        .update_pass_hash(ada.user_id, b"$argon2id$new")
        .await?;
    let revoked = db.sessions().delete_all_for_user(ada.user_id).await?;
    println!("logged out; password change revoked {revoked} session(s)");

    // Account deletion: nothing of the user remains.
    db.accounts().delete(ada.user_id).await?;
    assert!(db
        .progression()
        .get(ada.user_id)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(db
        .loadouts()
        .get(ada.user_id)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(db.unlocks().list(ada.user_id).await?.is_empty());
    println!("account deleted");

    db.close().await;
    std::fs::remove_dir_all(&dir)?;
    println!("all flows ok on {}", db.backend());
    Ok(())
}
