mod common;

// SQLite migrations run with foreign keys off (checked before commit), so the
// standard table rebuild does not cascade-delete child rows, and a rebuild
// that breaks references is refused and rolled back.

use persist::{BackendKind, Config, Error, Migration, Migrations, NewAccount};

fn with_extra(sql: &str) -> Migrations {
    let embedded = Migrations::embedded(BackendKind::Sqlite).unwrap();
    let mut list: Vec<Migration> = embedded.iter().cloned().collect();
    list.push(Migration::new(
        embedded.latest_version() + 1,
        "rebuild_accounts",
        sql,
    ));
    Migrations::new(BackendKind::Sqlite, list).unwrap()
}

const REBUILD: &str = "
CREATE TABLE accounts_new (
    user_id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, email_key TEXT NOT NULL UNIQUE,
    username TEXT NOT NULL, username_key TEXT NOT NULL UNIQUE, pass_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL, last_login_at INTEGER) STRICT;
INSERT INTO accounts_new SELECT * FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;
";

async fn seeded() -> (common::TestDb, persist::UserId) {
    let t = common::sqlite().await;
    let a =
        t.db.accounts()
            .create(&NewAccount {
                email: "a@x.com",
                username: "a",
                pass_hash: b"h",
                created_at: 1,
            })
            .await
            .unwrap();
    t.db.sessions()
        .create("bearer-token-of-the-test", a.user_id, 1, 2)
        .await
        .unwrap();
    t.db.unlocks().grant(a.user_id, 4, 1).await.unwrap();
    (t, a.user_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_table_rebuild_keeps_child_rows() {
    let (t, user) = seeded().await;
    let report = t.db.migrate_with(&with_extra(REBUILD)).await.unwrap();
    assert_eq!(report.applied.len(), 1);
    assert_eq!(
        t.db.sessions()
            .find_by_token("bearer-token-of-the-test")
            .await
            .unwrap()
            .user_id,
        user
    );
    assert_eq!(t.db.unlocks().list(user).await.unwrap().len(), 1);
    // Foreign keys are on again afterwards: deleting cascades.
    t.db.accounts().delete(user).await.unwrap();
    assert!(t
        .db
        .sessions()
        .find_by_token("bearer-token-of-the-test")
        .await
        .unwrap_err()
        .is_not_found());
    t.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_migration_that_breaks_references_is_refused() {
    let (t, user) = seeded().await;
    let breaking = format!("{REBUILD}\nDELETE FROM accounts;");
    let set = with_extra(&breaking);
    let extra = set.latest_version();
    match t.db.migrate_with(&set).await {
        Err(Error::MigrationFailed {
            version, message, ..
        }) if version == extra => {
            assert!(message.contains("foreign-key violation"), "{message}");
        }
        other => panic!("expected MigrationFailed for version {extra}, got {other:?}"),
    }
    // Rolled back: the account and its rows are all there, the extra
    // migration is not.
    assert_eq!(t.db.accounts().get(user).await.unwrap().email, "a@x.com");
    assert_eq!(
        t.db.sessions()
            .find_by_token("bearer-token-of-the-test")
            .await
            .unwrap()
            .user_id,
        user
    );
    let status =
        t.db.migration_status_with(&with_extra(&breaking))
            .await
            .unwrap();
    assert_eq!(
        status.last().map(|m| m.state),
        Some(persist::MigrationState::Pending)
    );
    // Reopening (fresh connections) still enforces foreign keys.
    let db = persist::open(&Config::from_url(&t.url).unwrap())
        .await
        .unwrap();
    assert!(matches!(
        db.sessions()
            .create("bearer-token-of-nobody", persist::UserId(user.0 + 50), 1, 2)
            .await,
        Err(Error::UnknownUser)
    ));
    db.close().await;
    t.close().await;
}
