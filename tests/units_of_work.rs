mod common;

// Units of work fail the same way on both backends: a failed database call
// aborts the unit (later calls and commit return Error::Aborted, nothing is
// committed); NotFound and InvalidInput do not; a call cancelled mid-way
// aborts it. Also: cancelling `begin()` or `migrate()` never leaks a
// connection in a transaction or a held migration lock into the pool.

use std::time::Duration;

use persist::{Config, Db, Entity, Error, Migration, Migrations, NewAccount, UniqueKey, UserId};

const T0: i64 = 1_700_000_000;

fn acct<'a>(email: &'a str, username: &'a str) -> NewAccount<'a> {
    NewAccount {
        email,
        username,
        pass_hash: b"hash",
        created_at: T0,
    }
}

async fn failed_call_aborts_the_unit(db: &Db) {
    db.accounts()
        .create(&acct("taken@x.com", "taken"))
        .await
        .unwrap();
    let tx = db.begin().await.unwrap();
    let a = tx.accounts().create(&acct("a@x.com", "a")).await.unwrap();
    assert!(matches!(
        tx.accounts().create(&acct("TAKEN@x.com", "b")).await,
        Err(Error::Conflict(UniqueKey::Email))
    ));
    // Later calls refuse, and commit reports the abort instead of success.
    assert!(matches!(
        tx.accounts().get(a.user_id).await,
        Err(Error::Aborted)
    ));
    assert!(matches!(tx.commit().await, Err(Error::Aborted)));
    assert!(matches!(
        db.accounts().get(a.user_id).await,
        Err(Error::NotFound(Entity::Account))
    ));
    assert!(matches!(
        db.accounts().find_by_email("a@x.com").await,
        Err(Error::NotFound(Entity::Account))
    ));
}

async fn not_found_and_invalid_input_do_not_abort(db: &Db) {
    let tx = db.begin().await.unwrap();
    let a = tx.accounts().create(&acct("a@x.com", "a")).await.unwrap();
    assert!(matches!(
        tx.accounts().get(UserId(a.user_id.0 + 1000)).await,
        Err(Error::NotFound(Entity::Account))
    ));
    assert!(matches!(
        tx.accounts().create(&acct("", "b")).await,
        Err(Error::InvalidInput { field: "email", .. })
    ));
    assert!(matches!(
        tx.unlocks().revoke(a.user_id, 3).await,
        Err(Error::NotFound(Entity::Unlock))
    ));
    tx.commit().await.unwrap();
    assert_eq!(db.accounts().get(a.user_id).await.unwrap().username, "a");
}

async fn explicit_rollback_after_failure_is_clean(db: &Db) {
    let tx = db.begin().await.unwrap();
    tx.accounts().create(&acct("a@x.com", "a")).await.unwrap();
    assert!(matches!(
        tx.sessions()
            .create("bearer-token-of-nobody-000", UserId(999_999), T0, T0 + 1)
            .await,
        Err(Error::UnknownUser)
    ));
    tx.rollback().await.unwrap();
    // The handle is healthy afterwards: a new unit of work commits.
    let tx = db.begin().await.unwrap();
    let b = tx.accounts().create(&acct("a@x.com", "a")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        db.accounts().find_by_username("A").await.unwrap().user_id,
        b.user_id
    );
}

async fn cancelled_call_aborts_the_unit(db: &Db) {
    let tx = db.begin().await.unwrap();
    let a = tx.accounts().create(&acct("a@x.com", "a")).await.unwrap();
    // A zero timeout polls the call once: SQLite completes it in that poll
    // (its statements run on the calling task), PostgreSQL has to wait for
    // the server and is cancelled mid-way.
    let call = tokio::time::timeout(
        Duration::ZERO,
        tx.progression().set(&persist::Progression {
            user_id: a.user_id,
            level: 1,
            xp: 5,
        }),
    )
    .await;
    match call {
        Ok(done) => {
            done.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(db.progression().get(a.user_id).await.unwrap().xp, 5);
        }
        Err(_elapsed) => {
            assert!(matches!(tx.commit().await, Err(Error::Aborted)));
            assert!(matches!(
                db.accounts().get(a.user_id).await,
                Err(Error::NotFound(Entity::Account))
            ));
        }
    }
}

async fn dropped_unit_leaves_a_usable_pool(db: &Db) {
    for i in 0..3 {
        let tx = db.begin().await.unwrap();
        tx.accounts()
            .create(&acct(&format!("d{i}@x.com"), &format!("d{i}")))
            .await
            .unwrap();
        drop(tx);
    }
    let a = db
        .accounts()
        .create(&acct("kept@x.com", "kept"))
        .await
        .unwrap();
    assert_eq!(
        db.accounts().get(a.user_id).await.unwrap().email,
        "kept@x.com"
    );
    assert!(matches!(
        db.accounts().find_by_username("d0").await,
        Err(Error::NotFound(Entity::Account))
    ));
}

conformance!(
    failed_call_aborts_the_unit,
    not_found_and_invalid_input_do_not_abort,
    explicit_rollback_after_failure_is_clean,
    cancelled_call_aborts_the_unit,
    dropped_unit_leaves_a_usable_pool,
);

/// Counts rows of `accounts` through a separate, fresh handle (another
/// connection), so uncommitted work on the tested handle is invisible.
async fn committed_accounts(url: &str) -> usize {
    let other = persist::open(&Config::from_url(url).unwrap())
        .await
        .unwrap();
    let mut n = 0;
    for id in 1..=20 {
        if other.accounts().get(UserId(id)).await.is_ok() {
            n += 1;
        }
    }
    other.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancelled_begin_does_not_leak_a_transaction() {
    let pg = common::PgDatabase::create().await;
    let db = persist::open(&Config::from_url(&pg.url).unwrap().with_pool_size(1))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    for _ in 0..5 {
        // Cancelled after the checkout, while BEGIN is in flight.
        let r = tokio::time::timeout(Duration::ZERO, db.begin()).await;
        assert!(r.is_err(), "begin completed in one poll on PostgreSQL");
    }
    // With one pooled connection, this write runs on the connection the
    // cancelled begin() used: it must really commit.
    let a = db.accounts().create(&acct("a@x.com", "a")).await.unwrap();
    assert_eq!(a.user_id, UserId(1));
    assert_eq!(committed_accounts(&pg.url).await, 1);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancelled_migrate_does_not_leak_the_lock() {
    let pg = common::PgDatabase::create().await;
    let config = Config::from_url(&pg.url)
        .unwrap()
        .with_pool_size(1)
        .with_migration_lock_timeout(Duration::from_secs(5));
    let db = persist::open(&config).await.unwrap();
    for _ in 0..5 {
        let r = tokio::time::timeout(Duration::from_micros(1), db.migrate()).await;
        assert!(r.is_err(), "migrate completed within 1 µs");
    }
    // Another handle (another process, in effect) gets the lock and migrates.
    let other = persist::open(&config).await.unwrap();
    let report = other.migrate().await.unwrap();
    assert_eq!(
        report.version,
        Migrations::embedded(persist::BackendKind::Postgres)
            .unwrap()
            .latest_version()
    );
    // And so does the first handle, whose pool connection must be clean.
    assert!(db.migrate().await.unwrap().applied.is_empty());
    db.accounts().create(&acct("a@x.com", "a")).await.unwrap();
    other.close().await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migration_session_settings_do_not_reach_the_pool() {
    let pg = common::PgDatabase::create().await;
    let db = persist::open(&Config::from_url(&pg.url).unwrap().with_pool_size(1))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let embedded = Migrations::embedded(persist::BackendKind::Postgres).unwrap();
    let mut list: Vec<Migration> = embedded.iter().cloned().collect();
    list.push(Migration::new(
        embedded.latest_version() + 1,
        "session_setting",
        "SET default_transaction_read_only = on; CREATE TABLE extra (a INT);",
    ));
    let set = Migrations::new(persist::BackendKind::Postgres, list).unwrap();
    assert_eq!(db.migrate_with(&set).await.unwrap().applied.len(), 1);
    // The application's next write must not run read-only.
    let a = db.accounts().create(&acct("a@x.com", "a")).await.unwrap();
    assert_eq!(db.accounts().get(a.user_id).await.unwrap().username, "a");
    db.close().await;
}
