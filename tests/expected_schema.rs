//! The expected-schema description embedded at build time
//! (`migrations/postgres/expected_schema.json`, which `verify` compares a
//! PostgreSQL database with by default) equals what the shipped migrations
//! build on a real server. After changing a migration, regenerate it with
//! `PERSIST_BLESS=1 cargo nextest run --test expected_schema` and review the
//! diff.

mod common;

use persist::{embedded_schema, read_schema};

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/migrations/postgres/expected_schema.json"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_expected_schema_equals_what_the_migrations_build() {
    let t = common::postgres().await;
    let built = read_schema(&t.db).await.unwrap();
    t.close().await;
    assert!(built.tables.contains_key("sessions"), "{built:?}");
    if std::env::var("PERSIST_BLESS").is_ok_and(|v| v == "1") {
        let mut text = serde_json::to_string_pretty(&built).unwrap();
        text.push('\n');
        std::fs::write(FILE, text).unwrap();
        panic!("wrote {FILE}: review the diff, then run again without PERSIST_BLESS");
    }
    let embedded = embedded_schema().unwrap();
    assert_eq!(
        embedded, built,
        "{FILE} differs from what the migrations build: regenerate it with \
         PERSIST_BLESS=1 cargo nextest run --test expected_schema"
    );
}
