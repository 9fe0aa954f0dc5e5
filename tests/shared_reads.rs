//! PostgreSQL reads outside a unit of work share a few pooled connections,
//! pipelined (D-041): each read still gets its own answer, reads never use
//! more connections than configured, and an idle handle gives the shared
//! connections back to the pool for units of work and writes.

mod common;

use std::time::{Duration, Instant};

use common::PgDatabase;
use persist::{Config, Db, Entity, Error, NewAccount, UserId};

const ACCOUNTS: usize = 8;
const READS: usize = 64;

fn token(i: usize) -> String {
    format!("shared-read-token-{i:04}")
}

/// Backends connected to `db` right now, as the server sees them.
async fn backends(admin: &tokio_postgres::Client, db: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .expect("count backends")
        .get(0)
}

/// A migrated database with `ACCOUNTS` accounts, one session each (tokens
/// `0..ACCOUNTS`), and no connection left open to it.
async fn seeded(admin: &tokio_postgres::Client) -> PgDatabase {
    let pg = PgDatabase::create().await;
    let db = common::open_migrated(&pg.url).await;
    for i in 0..ACCOUNTS {
        let a = db
            .accounts()
            .create(&NewAccount {
                email: &format!("reader{i}@example.com"),
                username: &format!("reader{i}"),
                pass_hash: b"hash",
                created_at: 1_700_000_000,
            })
            .await
            .expect("create account");
        db.sessions()
            .create(&token(i), a.user_id, 1_700_000_000, 1_700_086_400)
            .await
            .expect("create session");
    }
    db.close().await;
    // Closed connections leave the server asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    while backends(admin, &pg.name).await > 0 {
        assert!(Instant::now() < deadline, "setup connections never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg
}

/// `READS` concurrent token lookups, half of existing sessions, half of
/// unknown tokens; each must get its own answer.
async fn concurrent_lookups(db: &Db) {
    let mut tasks = Vec::new();
    for k in 0..READS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let i = k % (2 * ACCOUNTS);
            (i, db.sessions().find_by_token(&token(i)).await)
        }));
    }
    for t in tasks {
        let (i, out) = t.await.expect("task");
        if i < ACCOUNTS {
            let s = out.unwrap_or_else(|e| panic!("token {i}: {e}"));
            // Accounts were created in order: token i belongs to user i + 1.
            assert_eq!(s.user_id, UserId(i as i64 + 1), "token {i}");
        } else {
            assert!(
                matches!(out, Err(Error::NotFound(Entity::Session))),
                "token {i}: {out:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_share_at_most_the_configured_connections() {
    let admin = common::admin_client().await;
    for shared in [1usize, 2, 0] {
        let pg = seeded(&admin).await;
        let db = persist::open(
            &Config::from_url(&pg.url)
                .unwrap()
                .with_pool_size(8)
                .with_shared_read_connections(shared),
        )
        .await
        .unwrap();
        concurrent_lookups(&db).await;
        let used = backends(&admin, &pg.name).await;
        match shared {
            // Every read pipelined on the one connection `open` made.
            1 => assert_eq!(used, 1, "shared=1"),
            2 => assert!((1..=2).contains(&used), "shared=2: {used} connections"),
            // Without sharing, concurrent reads each take a connection.
            _ => assert!(used > 2, "shared=0: only {used} connections"),
        }
        db.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_connections_go_back_to_the_pool_when_idle() {
    let admin = common::admin_client().await;
    let pg = seeded(&admin).await;
    let db = persist::open(
        &Config::from_url(&pg.url)
            .unwrap()
            .with_pool_size(1)
            .with_shared_read_connections(1)
            .with_acquire_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    concurrent_lookups(&db).await;
    // The pool's only connection is free again: a unit of work gets it.
    let tx = db.begin().await.expect("begin after the reads");
    tx.progression()
        .set(&persist::Progression {
            user_id: UserId(1),
            level: 2,
            xp: 50,
        })
        .await
        .unwrap();
    // While the unit of work holds it, a read waits for the pool like any
    // other call, and gives up at the acquire timeout.
    let waiting = db.sessions().find_by_token(&token(0)).await;
    assert!(
        matches!(waiting, Err(Error::Timeout { .. })),
        "read while the only connection is in a unit of work: {waiting:?}"
    );
    // A read cancelled while it waits must not leave its shared connection
    // half-opened: the reads after the commit would wait for it forever.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        db.sessions().find_by_token(&token(1)),
    )
    .await;
    assert!(cancelled.is_err(), "read completed: {cancelled:?}");
    tx.commit().await.unwrap();
    assert_eq!(db.progression().get(UserId(1)).await.unwrap().xp, 50);
    concurrent_lookups(&db).await;
    assert_eq!(backends(&admin, &pg.name).await, 1);
    db.close().await;
}
