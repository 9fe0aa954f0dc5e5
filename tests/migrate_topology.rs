//! Issue 13, migration side: `persist migrate` behind PgBouncer in
//! transaction mode and on a hot standby, run as a user would (the real
//! binary) against private clusters.
//!
//! - Eight concurrent `persist migrate` per round, each round on a fresh
//!   database, through PgBouncer in transaction mode (default settings;
//!   with and without `pooler=transaction` in the URL) and directly: all exit 0, each
//!   migration reported applied by exactly one process and recorded once,
//!   and no server connection of the pool keeps a setting a migrator made;
//!   a no-transaction migration behind `pooler=transaction` applies, and
//!   leaves no setting behind either.
//! - On a standby: pending migrations are refused with exit 8 and one line;
//!   once the primary is migrated, `migrate` exits 0 writing nothing,
//!   `status` and `verify` work; `verify` also works for a role without the
//!   CREATE privilege.

mod common;

use common::persist_cli as persist;

use std::collections::BTreeMap;
use std::process::Output;

use common::cluster::Cluster;
use common::topology::{Bouncer, PoolMode};
use common::{assert_exit, stderr, stdout};
use persist::{BackendKind, Migrations};

const PROCESSES: usize = 8;
const ROUNDS: usize = 4;

/// The URL parameter that tells the crate it sits behind a transaction pooler.
const POOLER: &str = "&pooler=transaction";

/// `persist migrate` `PROCESSES` times at once; each one's output.
fn migrators(url: &str) -> Vec<Output> {
    common::concurrent_migrators(url, PROCESSES)
}

/// The recorded (version, checksum) rows.
async fn recorded(cluster: &Cluster, db: &str) -> Vec<(i64, String)> {
    cluster
        .connect(db)
        .await
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Runs the rounds against `url_of(db)`; returns the violations.
async fn rounds(cluster: &Cluster, label: &str, url_of: impl Fn(&str) -> String) -> Vec<String> {
    let shipped = Migrations::embedded(BackendKind::Postgres).unwrap();
    let want: Vec<(i64, String)> = shipped
        .iter()
        .map(|m| (m.version(), m.checksum().to_string()))
        .collect();
    let mut violations = Vec::new();
    for round in 0..ROUNDS {
        let db = format!("{label}_{round}");
        cluster.create_database(&db).await;
        let url = url_of(&db);
        let outs = tokio::task::spawn_blocking(move || migrators(&url))
            .await
            .unwrap();
        let mut applied_by: BTreeMap<String, usize> = BTreeMap::new();
        for (i, o) in outs.iter().enumerate() {
            if o.status.code() != Some(0) {
                violations.push(format!(
                    "{label} round {round}: migrator {i} exit {:?}: {} {}",
                    o.status.code(),
                    stdout(o),
                    stderr(o)
                ));
            }
            for line in stdout(o).lines().filter(|l| l.starts_with("applied ")) {
                let file = line.split(' ').nth(1).unwrap_or_default().to_string();
                *applied_by.entry(file).or_default() += 1;
            }
        }
        for m in shipped.iter() {
            let stem = format!("{:04}_{}", m.version(), m.name());
            let n = applied_by.get(&stem).copied().unwrap_or(0);
            if n != 1 {
                violations.push(format!(
                    "{label} round {round}: {} reported applied by {n} processes",
                    m.file_name()
                ));
            }
        }
        let rows = recorded(cluster, &db).await;
        if rows != want {
            violations.push(format!("{label} round {round}: recorded {rows:?}"));
        }
    }
    violations
}

/// Every server connection of the pool, each seen inside its own open
/// transaction (so each client holds a different one): the settings a
/// migrator could have left behind are at their defaults.
async fn settings_of_every_server_connection(bouncer: &Bouncer, db: &str) -> Vec<String> {
    let mut clients = Vec::new();
    let mut seen = Vec::new();
    // More clients than the migrators' server connections: every one of
    // those is handed to some client.
    for _ in 0..(PROCESSES + 4) {
        let (c, conn) = tokio_postgres::connect(&bouncer.url_for(db), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute("BEGIN").await.unwrap();
        let mut row = Vec::new();
        for name in ["client_connection_check_interval", "lock_timeout"] {
            let v = c.simple_query(&format!("SHOW {name}")).await.unwrap();
            for m in &v {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    row.push(format!("{name}={}", r.get(0).unwrap_or_default()));
                }
            }
        }
        seen.push(row.join(" "));
        clients.push(c);
    }
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_migrators_through_a_transaction_pooler_apply_each_migration_once() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let port = cluster.port();
    let bouncer = tokio::task::spawn_blocking(move || Bouncer::start(port, PoolMode::Transaction))
        .await
        .unwrap();
    let mut violations = rounds(&cluster, "pooled", |db| bouncer.url_for(db)).await;
    violations.extend(
        rounds(&cluster, "pooled_flagged", |db| {
            format!("{}{POOLER}", bouncer.url_for(db))
        })
        .await,
    );
    violations.extend(rounds(&cluster, "direct", |db| cluster.url_for(db)).await);
    assert!(
        violations.is_empty(),
        "{}\npgbouncer log:\n{}",
        violations.join("\n"),
        bouncer.log_tail()
    );
    let settings = settings_of_every_server_connection(&bouncer, "pooled_0").await;
    assert_eq!(
        settings,
        vec!["client_connection_check_interval=0 lock_timeout=0"; PROCESSES + 4],
        "no migrator setting outlives its transaction"
    );

    // A no-transaction migration behind `pooler=transaction`: its lock
    // holds in an open transaction, its statements run outside one, and
    // none of its settings outlives it.
    let url = format!("{}{POOLER}", bouncer.url_for("pooled_0"));
    let db = persist::open(&persist::Config::from_url(&url).unwrap())
        .await
        .unwrap();
    let mut list: Vec<persist::Migration> = Migrations::embedded(BackendKind::Postgres)
        .unwrap()
        .iter()
        .cloned()
        .collect();
    let v = list.len() as i64 + 1;
    list.push(persist::Migration::new(
        v,
        "online",
        "-- persist:no-transaction\n\
         CREATE INDEX CONCURRENTLY IF NOT EXISTS sessions_online ON sessions (created_at);\n\
         DROP INDEX CONCURRENTLY IF EXISTS sessions_online_old;",
    ));
    let set = Migrations::new(BackendKind::Postgres, list).unwrap();
    let report = db.migrate_with(&set).await.unwrap();
    assert_eq!(
        report.applied.iter().map(|a| a.version).collect::<Vec<_>>(),
        [v]
    );
    db.close().await;
    let rows = recorded(&cluster, "pooled_0").await;
    assert_eq!(
        rows.iter().map(|(version, _)| *version).collect::<Vec<_>>(),
        (1..=v).collect::<Vec<_>>()
    );
    let valid: Vec<bool> = cluster
        .connect("pooled_0")
        .await
        .query(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = 'sessions_online'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(valid, [true]);
    let settings = settings_of_every_server_connection(&bouncer, "pooled_0").await;
    assert_eq!(
        settings,
        vec!["client_connection_check_interval=0 lock_timeout=0"; PROCESSES + 4],
        "no setting of the no-transaction run outlives it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_status_and_verify_on_a_hot_standby() {
    let primary = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let standby = {
        let p = &primary;
        std::thread::scope(|s| s.spawn(|| Cluster::standby_of(p)).join().unwrap())
    };
    let primary_url = primary.create_database("game").await;
    standby.wait_caught_up(&primary).await;
    let standby_url = standby.url_for("game");
    let shipped = Migrations::embedded(BackendKind::Postgres).unwrap();
    let latest = shipped.latest_version();
    let all: Vec<String> = shipped
        .iter()
        .map(|m| format!("{:04}", m.version()))
        .collect();

    // Everything pending on the standby: refused with one line, exit 8.
    let o = persist(&standby_url, &["migrate"]);
    assert_exit(&o, 8, "migrate on a standby with pending migrations");
    assert_eq!(
        stderr(&o),
        format!(
            "error: the server is a read-only standby and migration(s) {} are pending: \
             run migrate against the primary\n",
            all.join(", ")
        )
    );
    assert_eq!(stdout(&o), "");
    assert_exit(
        &persist(&standby_url, &["status"]),
        3,
        "status on a standby, pending",
    );

    // The primary migrated: the standby follows; migrate there writes nothing.
    assert_exit(
        &persist(&primary_url, &["migrate"]),
        0,
        "migrate on the primary",
    );
    standby.wait_caught_up(&primary).await;
    let o = persist(&standby_url, &["migrate"]);
    assert_exit(&o, 0, "migrate on an up-to-date standby");
    assert_eq!(
        stdout(&o),
        format!("schema at version {latest} (0 applied now)\n")
    );
    let o = persist(&standby_url, &["status"]);
    assert_exit(&o, 0, "status on an up-to-date standby");
    let o = persist(&standby_url, &["verify"]);
    assert_exit(&o, 0, "verify on a standby (embedded expected schema)");
    assert!(
        stdout(&o).starts_with("ok: the schema of "),
        "{}",
        stdout(&o)
    );
    // The scratch mode needs a writable server: the read-only error (exit
    // 8, one line naming the standby), not a mismatch.
    let o = persist(&standby_url, &["verify", "--scratch"]);
    assert_exit(&o, 8, "verify --scratch on a standby");
    assert!(stderr(&o).contains("hot standby"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));

    // A role without the CREATE privilege verifies on the primary too.
    primary
        .connect("game")
        .await
        .batch_execute(
            "CREATE ROLE reader LOGIN; \
             REVOKE CREATE ON DATABASE game FROM PUBLIC; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
             GRANT SELECT ON schema_migrations TO reader",
        )
        .await
        .unwrap();
    let reader_url = primary_url.replacen("postgres://postgres@", "postgres://reader@", 1);
    let o = persist(&reader_url, &["verify"]);
    assert_exit(&o, 0, "verify without the CREATE privilege");
    let o = persist(&reader_url, &["verify", "--scratch"]);
    assert_exit(&o, 1, "verify --scratch without the CREATE privilege");
    assert!(stderr(&o).contains("42501"), "{}", stderr(&o));
}
