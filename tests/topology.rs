//! The test topology itself: a private primary, a streaming standby of it,
//! and PgBouncer in both pool modes in front of it. Other tests build on
//! these parts; this file proves they are what they claim to be.

mod common;

use common::cluster::Cluster;
use common::topology::{Bouncer, PoolMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_streams_from_its_primary_and_refuses_writes() {
    let primary = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let standby = {
        let p = &primary;
        std::thread::scope(|s| s.spawn(|| Cluster::standby_of(p)).join().unwrap())
    };
    let writer = primary.connect("postgres").await;
    writer
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (41), (1)")
        .await
        .unwrap();
    standby.wait_caught_up(&primary).await;
    let reader = standby.connect("postgres").await;
    let in_recovery: bool = reader
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "the standby must be in recovery");
    let sum: i64 = reader
        .query_one("SELECT sum(v) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 42);
    let err = reader
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect_err("a standby refuses writes");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );

    // Paused replay freezes what the standby shows.
    standby.pause_replay().await;
    writer
        .batch_execute("INSERT INTO t VALUES (100)")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let frozen: i64 = reader
        .query_one("SELECT sum(v) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(frozen, 42, "replay is paused");
    standby.resume_replay().await;
    standby.wait_caught_up(&primary).await;
    let caught: i64 = reader
        .query_one("SELECT sum(v) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(caught, 142);

    // Promotion makes it a primary of its own.
    let _promoted = tokio::task::spawn_blocking(move || {
        standby.promote();
        standby
    })
    .await
    .unwrap();
    let promoted: bool = reader
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!promoted, "a promoted standby is out of recovery");
}

/// `pg_backend_pid()` of the server connection the client's query lands on
/// (simple protocol: PgBouncer 1.18 has no protocol-level prepared
/// statements).
async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.simple_query("SELECT pg_backend_pid()")
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|s| s.parse().unwrap()),
            _ => None,
        })
        .unwrap()
}

async fn backend_pids_through(bouncer: &Bouncer) -> (i32, i32) {
    let mut cfg: tokio_postgres::Config = bouncer.url_for("postgres").parse().unwrap();
    cfg.connect_timeout(std::time::Duration::from_secs(5));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    // Two transactions from one client connection, while another client
    // holds a transaction open so the pool has two server connections.
    let (other, conn2) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn2);
    other.batch_execute("BEGIN").await.unwrap();
    let first = backend_pid(&client).await;
    let held = backend_pid(&other).await;
    other.batch_execute("COMMIT").await.unwrap();
    (first, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_runs_in_both_pool_modes_in_front_of_a_private_server() {
    let server = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let port = server.port();
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let bouncer = tokio::task::spawn_blocking(move || Bouncer::start(port, mode))
            .await
            .unwrap();
        assert_eq!(bouncer.mode(), mode);
        let (a, b) = backend_pids_through(&bouncer).await;
        assert_ne!(
            a, b,
            "two clients in transactions use two server connections"
        );
        // Session state set outside a transaction: a session pooler keeps
        // it on the client's own server connection.
        let mut cfg: tokio_postgres::Config = bouncer.url_for("postgres").parse().unwrap();
        cfg.connect_timeout(std::time::Duration::from_secs(5));
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let show: Vec<_> = client
            .simple_query("SHOW application_name")
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        assert_eq!(show.len(), 1, "{mode:?}: one row from SHOW");
        // A default PgBouncer refuses the startup parameter `options`.
        let mut with_options = cfg.clone();
        with_options.options("-c statement_timeout=1000");
        let err = with_options
            .connect(tokio_postgres::NoTls)
            .await
            .map(|_| ())
            .expect_err("a default PgBouncer refuses `options`");
        let message = err.as_db_error().map(|e| e.message().to_owned());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("unsupported startup parameter")),
            "{mode:?}: {err:?}"
        );
    }
}
