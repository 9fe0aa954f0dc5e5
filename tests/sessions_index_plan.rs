//! Issue 15's "online migration" target: `sessions.list_for_user` (a
//! user's sessions, oldest first) is served on PostgreSQL by the index on
//! `(user_id, created_at)` that migration 0004 built (see docs/pending,
//! "Migration 0005"). On a database holding 1M sessions of 10k users, the
//! planner's plan for the repository's own query uses that index, and the
//! call returns the user's sessions in order. (Measured here: a bitmap
//! index scan of it, then a sort of the user's ~100 rows by
//! `(created_at, token)`.)

mod common;

use persist::UserId;

/// The query of `sessions.list_for_user` (src/postgres/sessions.rs; the
/// test checks the source still holds it word for word).
const LIST_FOR_USER: &str = "SELECT token, created_at, expires_at FROM sessions WHERE user_id = $1 \\\n             ORDER BY created_at, token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_for_user_uses_the_user_created_index_on_1m_sessions() {
    let source = include_str!("../src/postgres/sessions.rs");
    assert!(
        source.contains(LIST_FOR_USER),
        "the repository's query changed"
    );
    let query = LIST_FOR_USER.replace("\\\n             ", "");

    let t = common::postgres().await;
    let (c, conn) = tokio_postgres::connect(&t.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(
        "INSERT INTO accounts (email, email_key, username, username_key, pass_hash, created_at)
           SELECT 'u' || i || '@example.com', 'u' || i || '@example.com', 'u' || i, 'u' || i,
                  '\\x01'::bytea, 0
           FROM generate_series(1, 10000) AS i;
         INSERT INTO sessions (token, user_id, created_at, expires_at)
           SELECT sha256(int8send(i)), (SELECT min(user_id) FROM accounts) + i % 10000,
                  2000000 - i, 2000000 - i + 86400
           FROM generate_series(1, 1000000) AS i;
         ANALYZE accounts; ANALYZE sessions;",
    )
    .await
    .unwrap();
    let first: i64 = c
        .query_one("SELECT min(user_id) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    let user = first + 4242;
    let text: String = c
        .query(&format!("EXPLAIN {query}"), &[&user])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    // An index scan or a bitmap index scan of it, then a small sort by
    // (created_at, token): the index orders by created_at only.
    assert!(
        text.contains("Index Scan using sessions_user_created_idx on sessions")
            || text.contains("Bitmap Index Scan on sessions_user_created_idx"),
        "{text}"
    );
    assert!(!text.contains("Seq Scan"), "{text}");

    let sessions = t.db.sessions().list_for_user(UserId(user)).await.unwrap();
    assert_eq!(sessions.len(), 100);
    assert!(sessions
        .windows(2)
        .all(|w| w[0].created_at <= w[1].created_at));
    t.close().await;
}
