//! PostgreSQL behind PgBouncer (Debian's, default settings, no
//! `ignore_startup_parameters`) in both pool modes, beside a direct
//! connection: the server-side statement timeout is applied where the
//! pooler keeps it, and no session setting leaks to the pooler's other
//! clients.

mod common;

use std::time::Duration;

use common::topology::PoolMode;
use common::{admin_client, PgDatabase};
use persist::{Config, Db, Error, NewAccount, UserId};

const HASH: &[u8] = b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
const TIMEOUT: Duration = Duration::from_millis(300);

/// Where the handle connects.
#[derive(Debug, Clone, Copy)]
enum Route {
    Direct,
    Bouncer(PoolMode),
}

/// A fresh migrated database, a handle with a 300 ms statement timeout on
/// `route`, and one player with progression.
async fn setup(route: Route) -> (PgDatabase, Db, UserId) {
    let pg = match route {
        Route::Direct => PgDatabase::create().await,
        Route::Bouncer(mode) => PgDatabase::behind(mode).await,
    };
    open_with_player(pg).await
}

async fn open_with_player(pg: PgDatabase) -> (PgDatabase, Db, UserId) {
    common::open_migrated(&pg.direct_url()).await.close().await;
    let config = Config::from_url(&pg.url)
        .unwrap()
        .with_statement_timeout(Some(TIMEOUT));
    let db = persist::open(&config).await.expect("open");
    let user = common::register(
        &db,
        &NewAccount {
            email: "t@poolers.invalid",
            username: "timeout",
            pass_hash: HASH,
            created_at: 1_700_000_000,
        },
    )
    .await
    .unwrap()
    .user_id;
    (pg, db, user)
}

/// A direct connection holding an exclusive lock on `progression` until it
/// is dropped (its transaction never commits).
async fn lock_progression(pg: &PgDatabase) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&pg.direct_url(), tokio_postgres::NoTls)
        .await
        .expect("direct connection");
    tokio::spawn(conn);
    c.batch_execute("BEGIN; LOCK TABLE progression IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    c
}

/// The server's own cancel (57014), not the client deadline (timeout + 2 s).
fn assert_server_timeout(r: persist::Result<persist::Progression>, what: &str) {
    match r {
        Err(Error::Timeout { what: w }) => {
            assert!(w.contains("statement timeout"), "{what}: {w}");
            assert!(!w.contains("client deadline"), "{what}: {w}");
        }
        other => panic!("{what}: expected the server's statement timeout, got {other:?}"),
    }
}

/// A unit of work waiting on a lock is cancelled by the server at the
/// statement timeout, on every route (`SET` after connecting; `SET LOCAL`
/// in the unit of work behind a transaction pooler).
async fn unit_of_work_gets_the_server_timeout(route: Route) {
    let (pg, db, user) = setup(route).await;
    let lock = lock_progression(&pg).await;
    let tx = db.begin().await.unwrap();
    assert_server_timeout(tx.progression().get(user).await, "in a unit of work");
    drop(tx);
    drop(lock);
    assert_eq!(db.progression().get(user).await.unwrap().level, 1);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_of_work_gets_the_server_timeout_direct() {
    unit_of_work_gets_the_server_timeout(Route::Direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_of_work_gets_the_server_timeout_through_pgbouncer_transaction_mode() {
    unit_of_work_gets_the_server_timeout(Route::Bouncer(PoolMode::Transaction)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_of_work_gets_the_server_timeout_through_pgbouncer_session_mode() {
    unit_of_work_gets_the_server_timeout(Route::Bouncer(PoolMode::Session)).await;
}

/// A single call outside a unit of work: the session's `SET` on a direct
/// or session-pooled connection.
async fn single_call_gets_the_server_timeout(route: Route) {
    let (pg, db, user) = setup(route).await;
    let lock = lock_progression(&pg).await;
    assert_server_timeout(db.progression().get(user).await, "single call");
    drop(lock);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_call_gets_the_server_timeout_direct() {
    single_call_gets_the_server_timeout(Route::Direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_call_gets_the_server_timeout_through_pgbouncer_session_mode() {
    single_call_gets_the_server_timeout(Route::Bouncer(PoolMode::Session)).await;
}

/// Behind a transaction pooler a single call runs with the database's (or
/// role's) own `statement_timeout`, the documented setting
/// (README "Production topologies").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_call_behind_a_transaction_pooler_gets_the_database_setting() {
    let pg = PgDatabase::behind(PoolMode::Transaction).await;
    // Before the bouncer opens any server connection: they take it then.
    admin_client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET statement_timeout = '300ms'",
            pg.name
        ))
        .await
        .unwrap();
    let (pg, db, user) = open_with_player(pg).await;
    let lock = lock_progression(&pg).await;
    assert_server_timeout(db.progression().get(user).await, "single call");
    drop(lock);
    db.close().await;
}

/// Through a transaction pooler nothing persist sets or prepares outlives
/// its transaction: a plain client of the same bouncer afterwards sees the
/// server's default timeout and no prepared statement on the server
/// connections persist used (the pooler hands out the most recently used
/// one first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_setting_leaks_to_other_clients_of_a_transaction_pooler() {
    let (pg, db, user) = setup(Route::Bouncer(PoolMode::Transaction)).await;
    for _ in 0..5 {
        let tx = db.begin().await.unwrap();
        assert_eq!(tx.progression().get(user).await.unwrap().level, 1);
        tx.commit().await.unwrap();
        assert_eq!(db.progression().get(user).await.unwrap().level, 1);
    }
    let url = pg.bouncer.as_ref().unwrap().url_for(&pg.name);
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("plain client through the bouncer");
    tokio::spawn(conn);
    let one = |sql: &'static str| {
        let c = &c;
        async move {
            let rows = c.simple_query(sql).await.unwrap();
            rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
        }
    };
    for _ in 0..5 {
        assert_eq!(one("SHOW statement_timeout").await.as_deref(), Some("0"));
        assert_eq!(
            one("SELECT count(*) FROM pg_prepared_statements")
                .await
                .as_deref(),
            Some("0")
        );
    }
    db.close().await;
}
