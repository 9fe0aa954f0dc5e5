//! PostgreSQL reads outside a unit of work share a few pooled connections,
//! pipelined (D-041): each read still gets its own answer, reads never use
//! more connections than configured, and an idle shared connection goes back
//! to the pool as soon as a unit of work or a write needs it (D-129).

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
async fn idle_shared_connections_go_back_to_the_pool_when_a_checkout_needs_them() {
    let pg = seeded(&common::admin_client().await).await;
    let db = persist::open(
        &Config::from_url(&pg.url)
            .unwrap()
            .with_pool_size(2)
            .with_shared_read_connections(1)
            .with_acquire_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    concurrent_lookups(&db).await;
    // The idle lane keeps its connection for the next read; the second unit
    // of work finds no connection free and takes it back from the lane at
    // once (the acquire timeout is 300 ms).
    let tx1 = db
        .begin()
        .await
        .expect("first unit of work after the reads");
    let tx2 = db
        .begin()
        .await
        .expect("second unit of work after the reads");
    tx1.progression()
        .set(&persist::Progression {
            user_id: UserId(1),
            level: 2,
            xp: 50,
        })
        .await
        .unwrap();
    // While they hold every connection, a read waits for the pool like any
    // other call, and gives up at the acquire timeout.
    let waiting = db.sessions().find_by_token(&token(0)).await;
    assert!(
        matches!(waiting, Err(Error::Timeout { .. })),
        "read while every connection is in a unit of work: {waiting:?}"
    );
    // A read cancelled while it waits must not leave its shared connection
    // half-opened: the reads after the commit would wait for it forever.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        db.sessions().find_by_token(&token(1)),
    )
    .await;
    assert!(cancelled.is_err(), "read completed: {cancelled:?}");
    tx1.commit().await.unwrap();
    tx2.rollback().await.unwrap();
    assert_eq!(db.progression().get(UserId(1)).await.unwrap().xp, 50);
    concurrent_lookups(&db).await;
    db.close().await;
}

/// Runs `readers` tasks looking sessions up in a loop until `stop`; returns
/// how many lookups failed, with the first error.
fn spawn_readers(
    db: &Db,
    readers: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, u64, Option<String>)>> {
    (0..readers)
        .map(|r| {
            let db = db.clone();
            let stop = std::sync::Arc::clone(stop);
            tokio::spawn(async move {
                let (mut ok, mut failed, mut first) = (0u64, 0u64, None);
                let mut k = r;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    k += 1;
                    match db.sessions().find_by_token(&token(k % ACCOUNTS)).await {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            failed += 1;
                            first.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (ok, failed, first)
            })
        })
        .collect()
}

async fn stop_readers(
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, u64, Option<String>)>>,
) -> (u64, u64, Option<String>) {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = (0, 0, None);
    for t in tasks {
        let (ok, failed, first) = t.await.expect("reader task");
        total.0 += ok;
        total.1 += failed;
        if total.2.is_none() {
            total.2 = first;
        }
    }
    total
}

/// Reads that never stop must not hold every pooled connection: with a pool
/// of two and sharing asked for two, writes still get a connection (reads
/// share at most pool size - 1 connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_reads_never_starve_writes() {
    let pg = seeded(&common::admin_client().await).await;
    let db = persist::open(
        &Config::from_url(&pg.url)
            .unwrap()
            .with_pool_size(2)
            .with_shared_read_connections(2)
            .with_acquire_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers = spawn_readers(&db, 16, &stop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut writes = Vec::new();
    for xp in 1..=5 {
        writes.push(
            db.progression()
                .set(&persist::Progression {
                    user_id: UserId(1),
                    level: 1,
                    xp,
                })
                .await,
        );
    }
    let (ok, failed, first) = stop_readers(&stop, readers).await;
    for (i, w) in writes.iter().enumerate() {
        assert!(w.is_ok(), "write {i} under sustained reads: {w:?}");
    }
    assert_eq!(db.progression().get(UserId(1)).await.unwrap().xp, 5);
    assert_eq!(failed, 0, "reads failed: {first:?}");
    assert!(ok > 0);
    db.close().await;
}

/// When no pooled connection is free, a read shares a live connection
/// instead of waiting for the pool: two units of work hold two of three
/// connections, and reads keep succeeding on the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_share_a_live_connection_rather_than_wait_for_the_pool() {
    let pg = seeded(&common::admin_client().await).await;
    let db = persist::open(
        &Config::from_url(&pg.url)
            .unwrap()
            .with_pool_size(3)
            .with_shared_read_connections(2)
            // Long enough that a loaded machine's scheduling delays while the
            // one lane opens are not taken for waiting on the pool.
            .with_acquire_timeout(Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    // Open all three connections first, so the test measures waiting for the
    // pool, not connecting (slow on a loaded machine).
    let warm = [
        db.begin().await.unwrap(),
        db.begin().await.unwrap(),
        db.begin().await.unwrap(),
    ];
    for tx in warm {
        tx.rollback().await.unwrap();
    }
    let tx1 = db.begin().await.unwrap();
    let tx2 = db.begin().await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers = spawn_readers(&db, 16, &stop);
    // Three acquire timeouts long: a read that waited for the pool would
    // have failed by now.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (ok, failed, first) = stop_readers(&stop, readers).await;
    assert_eq!(
        failed, 0,
        "reads failed while a live connection could serve them: {first:?}"
    );
    assert!(ok > 0);
    tx1.rollback().await.unwrap();
    tx2.rollback().await.unwrap();
    db.close().await;
}
