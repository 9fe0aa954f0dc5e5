//! `Error::is_retryable` and `Error::is_outcome_unknown` on a real
//! PostgreSQL server: a deadlock between two units of work is retryable (and
//! the retry succeeds), and a terminated backend is never reported as a
//! failure the caller could not classify.

mod common;

use persist::{NewAccount, UserId};

async fn two_players(db: &persist::Db) -> (UserId, UserId) {
    let mut ids = Vec::new();
    for name in ["left", "right"] {
        let email = format!("{name}@example.com");
        let new = NewAccount {
            email: &email,
            username: name,
            pass_hash: b"h",
            created_at: 1,
        };
        ids.push(common::fixtures::register(db, &new).await.unwrap().user_id);
    }
    (ids[0], ids[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_is_retryable_and_the_retry_succeeds() {
    let t = common::postgres().await;
    let db = &t.db;
    let (a, b) = two_players(db).await;
    let tx1 = db.begin().await.unwrap();
    let tx2 = db.begin().await.unwrap();
    tx1.progression().add_xp(a, 1).await.unwrap();
    tx2.progression().add_xp(b, 1).await.unwrap();
    // Each now waits for the row the other holds: the server aborts one.
    let (p1, p2) = (tx1.progression(), tx2.progression());
    let (r1, r2) = tokio::join!(p1.add_xp(b, 1), p2.add_xp(a, 1));
    let (failed, winner, loser) = match (r1, r2) {
        (Err(e), Ok(_)) => (e, tx2, tx1),
        (Ok(_), Err(e)) => (e, tx1, tx2),
        other => panic!("expected exactly one deadlock victim: {other:?}"),
    };
    match &failed {
        persist::Error::Database(d) => assert_eq!(d.sqlstate(), Some("40P01"), "{failed}"),
        other => panic!("expected a deadlock, got {other:?}"),
    }
    assert!(failed.is_retryable(), "{failed}");
    assert!(!failed.is_outcome_unknown(), "{failed}");
    winner.commit().await.unwrap();
    drop(loser);
    // The retry of the whole unit of work succeeds.
    let retry = db.begin().await.unwrap();
    retry.progression().add_xp(b, 1).await.unwrap();
    retry.progression().add_xp(a, 1).await.unwrap();
    retry.commit().await.unwrap();
    let total =
        db.progression().get(a).await.unwrap().xp + db.progression().get(b).await.unwrap().xp;
    assert_eq!(
        total, 4,
        "the winner's 2 and the retry's 2; the victim's are rolled back"
    );
    t.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_is_classified() {
    let t = common::postgres().await;
    let db = &t.db;
    let (a, _) = two_players(db).await;
    let name = db.config().postgres_database().unwrap().to_string();
    let admin = common::admin_client().await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1, "no backend to terminate");
    // Calls after the kill either succeed (the pool replaced the dead
    // connection) or fail with an error the caller can act on.
    let mut classified = 0;
    for _ in 0..4 {
        match db.progression().add_xp(a, 1).await {
            Ok(_) => {}
            Err(e) => {
                assert!(
                    e.is_retryable() || e.is_outcome_unknown(),
                    "unclassified failure after a terminated backend: {e:?}"
                );
                classified += 1;
            }
        }
    }
    assert!(classified < 4, "the pool never recovered");
    t.close().await;
}
