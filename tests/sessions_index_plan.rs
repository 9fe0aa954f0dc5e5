//! Issue 15's "online migration" target: `sessions.list_for_user` (a
//! user's sessions, oldest first) and its keyset pages
//! (`list_for_user_page`) are served on PostgreSQL by the index on
//! `(user_id, created_at, token)` that migration 0005 builds concurrently.
//! On a database holding 1M sessions of 10k users, facts read from the
//! planner's `EXPLAIN (FORMAT JSON)` of the repository's own queries:
//!
//! - a keyset page: an ordered scan of that index, no Sort node, no
//!   sequential scan (server defaults);
//! - the whole list: reads that index, no sequential scan (server
//!   defaults); with `random_page_cost = 1.1` (the SSD setting) an ordered
//!   scan of it and no Sort node. At the default `random_page_cost = 4`
//!   the planner prices the user's 100 scattered heap pages a little lower
//!   through a bitmap scan and then sorts the 100 rows (measured: cost
//!   381.9 against 406.1 for the ordered index scan); the plan is printed.
//!
//! The calls return the user's sessions in order.

mod common;

use common::bulk::{load_sessions, plan_json, plan_nodes};
use persist::{SessionCursor, UserId};

/// The queries of `sessions.list_for_user` and `list_for_user_page`
/// (src/postgres/sessions.rs; the test checks the source still holds them
/// word for word).
const LIST_FOR_USER: &str = "SELECT token, created_at, expires_at FROM sessions WHERE user_id = $1 \\\n             ORDER BY created_at, token";
const LIST_PAGE: &str = "SELECT token, created_at, expires_at FROM sessions WHERE user_id = $1 \\\n             AND (created_at, token) > ($2, $3) ORDER BY created_at, token LIMIT $4";
const INDEX: &str = "sessions_user_created_token_idx";

/// The facts of a plan the test asserts on: the index scanned by each
/// (bitmap) index scan node, and the node types.
fn facts(plan: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let nodes = plan_nodes(plan);
    let indexes = nodes
        .iter()
        .filter_map(|n| n["Index Name"].as_str().map(str::to_string))
        .collect();
    let types = nodes
        .iter()
        .map(|n| n["Node Type"].as_str().unwrap_or_default().to_string())
        .collect();
    (indexes, types)
}

#[track_caller]
fn assert_reads_the_index(plan: &serde_json::Value) {
    let (indexes, types) = facts(plan);
    assert_eq!(indexes, [INDEX], "{plan:#}");
    assert!(!types.iter().any(|t| t == "Seq Scan"), "{plan:#}");
}

#[track_caller]
fn assert_served_by_the_index(plan: &serde_json::Value) {
    let (indexes, types) = facts(plan);
    assert_eq!(indexes, [INDEX], "{plan:#}");
    assert!(
        types.iter().any(|t| t == "Index Scan"),
        "an ordered index scan: {plan:#}"
    );
    assert!(!types.iter().any(|t| t == "Sort"), "no sort: {plan:#}");
    assert!(!types.iter().any(|t| t == "Seq Scan"), "{plan:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_for_user_and_its_pages_read_the_index_in_order_on_1m_sessions() {
    let source = include_str!("../src/postgres/sessions.rs");
    for q in [LIST_FOR_USER, LIST_PAGE] {
        assert!(source.contains(q), "the repository's query changed: {q}");
    }
    let unwrap = |q: &str| q.replace("\\\n             ", "");

    let t = common::postgres().await;
    let (c, conn) = tokio_postgres::connect(&t.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let user = load_sessions(&c, 10_000, 1_000_000).await + 4242;

    let whole = plan_json(&c, &unwrap(LIST_FOR_USER), &[&user]).await;
    assert_reads_the_index(&whole);
    eprintln!(
        "sessions-index-plan list_for_user (server defaults): nodes {:?}",
        facts(&whole).1
    );
    c.batch_execute("SET random_page_cost = 1.1").await.unwrap();
    let whole_ssd = plan_json(&c, &unwrap(LIST_FOR_USER), &[&user]).await;
    assert_served_by_the_index(&whole_ssd);
    c.batch_execute("RESET random_page_cost").await.unwrap();
    let sessions = t.db.sessions().list_for_user(UserId(user)).await.unwrap();
    assert_eq!(sessions.len(), 100);
    assert!(sessions
        .windows(2)
        .all(|w| w[0].created_at <= w[1].created_at));

    // A keyset page in the middle of the user's sessions: the cursor of the
    // 40th, as the repository passes it (id padded with 0xFF).
    let cursor = SessionCursor::after(&sessions[39]);
    let mut key = vec![0xFFu8; 32];
    key[..16].copy_from_slice(cursor.id.as_bytes());
    let page_plan = plan_json(
        &c,
        &unwrap(LIST_PAGE),
        &[&user, &cursor.created_at, &key, &21i64],
    )
    .await;
    assert_served_by_the_index(&page_plan);
    eprintln!(
        "sessions-index-plan list_for_user_page (server defaults): nodes {:?}",
        facts(&page_plan).1
    );
    let page =
        t.db.sessions()
            .list_for_user_page(UserId(user), Some(cursor), 20)
            .await
            .unwrap();
    assert_eq!(page.items, sessions[40..60]);
    t.close().await;
}
