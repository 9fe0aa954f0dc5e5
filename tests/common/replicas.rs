//! A private primary with streaming standbys, a migrated database on it,
//! and handles that read from the standbys (the read-replica tests).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use persist::{Config, Db, NewAccount, ReplicaState};

use super::cluster::Cluster;

/// The database every replica test uses on its private primary.
pub const DB: &str = "game";

/// A primary and its standbys, with [`DB`] migrated on the primary before
/// the standbys were cloned from it.
pub struct Topology {
    pub primary: Arc<Cluster>,
    pub standbys: Vec<Arc<Cluster>>,
}

impl Topology {
    /// Starts a primary, creates and migrates [`DB`], then clones `n`
    /// streaming standbys of it (each with its own replication slot).
    pub async fn start(n: usize) -> Topology {
        let primary = Arc::new(tokio::task::spawn_blocking(Cluster::start).await.unwrap());
        let url = primary.create_database(DB).await;
        let db = persist::open(&Config::from_url(&url).unwrap())
            .await
            .unwrap();
        db.migrate().await.unwrap();
        db.close().await;
        let mut standbys = Vec::new();
        for _ in 0..n {
            let p = Arc::clone(&primary);
            let s = tokio::task::spawn_blocking(move || Cluster::standby_of(&p))
                .await
                .unwrap();
            standbys.push(Arc::new(s));
        }
        Topology { primary, standbys }
    }

    /// The primary's URL of [`DB`].
    pub fn primary_url(&self) -> String {
        self.primary.url_for(DB)
    }

    /// A configuration of the primary with every standby as a replica
    /// (checked every 50 ms).
    pub fn config(&self) -> Config {
        self.config_with(&self.standbys.iter().collect::<Vec<_>>())
    }

    /// A configuration of the primary with `replicas` as its replicas.
    pub fn config_with(&self, replicas: &[&Arc<Cluster>]) -> Config {
        let mut c = Config::from_url(&self.primary_url())
            .unwrap()
            .with_replica_check_interval(Duration::from_millis(50));
        for r in replicas {
            c = c.with_replica_url(&r.url_for(DB)).unwrap();
        }
        c
    }

    /// Waits until every standby has replayed all the primary wrote.
    pub async fn caught_up(&self) {
        for s in &self.standbys {
            s.wait_caught_up(&self.primary).await;
        }
    }
}

/// Waits (up to 30 s, else panics with the replicas' status) until replica
/// `index` of `db` is in `state`.
pub async fn wait_state(db: &Db, index: usize, state: ReplicaState) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if db.replicas()[index].state == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica {index} never became {state:?}: {:#?}",
            db.replicas()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every replica of `db` is healthy.
pub async fn wait_all_healthy(db: &Db) {
    for i in 0..db.replicas().len() {
        wait_state(db, i, ReplicaState::Healthy).await;
    }
}

/// Transactions committed in [`DB`] on `cluster` so far, as its statistics
/// show them once every backend has flushed its counters
/// (`pg_stat_database.xact_commit`).
pub async fn xact_commits(cluster: &Cluster) -> i64 {
    let c = cluster.connect("postgres").await;
    c.batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    c.query_one(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
        &[&DB],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits (up to 30 s) until `cluster`'s commit count for [`DB`] is at
/// least `at_least` (backends flush their statistics about once a second
/// when idle), and returns it.
pub async fn commits_reaching(cluster: &Cluster, at_least: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = xact_commits(cluster).await;
        if n >= at_least || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Registers player `i` (account and a session `token_of(i)`) on `db`.
pub async fn register_player(db: &Db, i: usize) -> persist::Account {
    let email = format!("p{i}@example.com");
    let name = format!("player{i}");
    let account = super::register(
        db,
        &NewAccount {
            email: &email,
            username: &name,
            pass_hash: b"hash",
            created_at: 1_700_000_000,
        },
    )
    .await
    .unwrap();
    db.sessions()
        .create(&token_of(i), account.user_id, 1_700_000_000, 1_900_000_000)
        .await
        .unwrap();
    account
}

/// The session token of player `i` (43 characters).
pub fn token_of(i: usize) -> String {
    format!("{i:0>43}")
}

/// A small deterministic generator (xorshift64*), seeded per test.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
