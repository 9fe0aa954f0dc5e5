//! Metrics: the table in docs/OBSERVABILITY.md is the code's list, every
//! listed metric is emitted, and each moves when it should, on both
//! backends alike, seen through `metrics-util`'s debugging recorder.
//!
//! Each test installs its recorder for its own thread only
//! (`metrics::with_local_recorder`) and runs on a current-thread runtime,
//! so every task it spawns records there and tests never share a recorder.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Backend, PgDatabase};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use persist::observe::{MetricKind, METRICS};
use persist::{Config, Db, Error, NewAccount};

const T0: i64 = 1_700_000_000;

/// Label pairs of a series.
type Labels = Vec<(String, String)>;
/// One recorded series: name, labels, value.
type Series = (String, Labels, DebugValue);

fn snapshot(s: &Snapshotter) -> Vec<Series> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, _, _, v)| {
            let key = ck.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            (key.name().to_string(), labels, v)
        })
        .collect()
}

/// Counter totals over several snapshots (each snapshot of the debugging
/// recorder returns what moved since the last one and resets it: counters
/// and gauges read as changes since the last snapshot).
#[derive(Default)]
struct Totals(Vec<(String, Labels, u64)>);

impl Totals {
    /// Takes a snapshot, adds its counters to the totals, returns it.
    fn take(&mut self, s: &Snapshotter) -> Vec<Series> {
        let series = snapshot(s);
        for (name, labels, v) in &series {
            if let DebugValue::Counter(c) = v {
                self.0.push((name.clone(), labels.clone(), *c));
            }
        }
        series
    }

    fn counter(&self, name: &str, want: &[(&str, &str)]) -> u64 {
        self.0
            .iter()
            .filter(|(n, l, _)| n == name && has(l, want))
            .map(|(_, _, c)| c)
            .sum()
    }
}

fn has(labels: &[(String, String)], want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

/// The value of the counter `name` with (at least) these labels, 0 if absent.
fn counter(series: &[Series], name: &str, want: &[(&str, &str)]) -> u64 {
    series
        .iter()
        .filter(|(n, l, _)| n == name && has(l, want))
        .map(|(_, _, v)| match v {
            DebugValue::Counter(c) => *c,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn gauge(series: &[Series], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    series
        .iter()
        .find(|(n, l, _)| n == name && has(l, want))
        .map(|(_, _, v)| match v {
            DebugValue::Gauge(g) => g.into_inner(),
            other => panic!("{name} is not a gauge: {other:?}"),
        })
}

fn samples(series: &[Series], name: &str, want: &[(&str, &str)]) -> usize {
    series
        .iter()
        .filter(|(n, l, _)| n == name && has(l, want))
        .map(|(_, _, v)| match v {
            DebugValue::Histogram(h) => h.len(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

/// Runs `f` with a debugging recorder installed for this thread, on a
/// current-thread runtime.
fn recorded<F: std::future::Future>(f: impl FnOnce(Snapshotter) -> F) -> F::Output {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || common::block_on(f(snapshotter)))
}

fn system(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgresql",
    }
}

fn account(n: u32) -> (String, String) {
    (format!("p{n}@example.com"), format!("player{n}"))
}

async fn create(db: &Db, n: u32) -> persist::Result<persist::Account> {
    let (email, username) = account(n);
    db.accounts()
        .create(&NewAccount {
            email: &email,
            username: &username,
            pass_hash: b"hash",
            created_at: T0,
        })
        .await
}

// ---------------------------------------------------------------------------
// The table in docs/OBSERVABILITY.md

fn doc_rows() -> Vec<Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OBSERVABILITY.md");
    let text = std::fs::read_to_string(path).expect("docs/OBSERVABILITY.md");
    text.lines()
        .filter(|l| l.starts_with("| `db_"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn code_rows() -> Vec<Vec<String>> {
    METRICS
        .iter()
        .map(|m| {
            vec![
                format!("`{}`", m.name),
                m.kind.name().to_string(),
                m.unit.to_string(),
                m.labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                m.help.to_string(),
            ]
        })
        .collect()
}

#[test]
fn the_documented_table_is_the_code_list() {
    let doc = doc_rows();
    let code = code_rows();
    let expected: String = code
        .iter()
        .map(|r| format!("| {} |\n", r.join(" | ")))
        .collect();
    assert_eq!(
        doc, code,
        "docs/OBSERVABILITY.md's table differs from persist::observe::METRICS; \
         its rows should be:\n{expected}"
    );
    let names: BTreeSet<&str> = METRICS.iter().map(|m| m.name).collect();
    assert_eq!(names.len(), METRICS.len(), "a name is listed twice");
    for m in METRICS {
        let unit_suffix = m.name.ends_with("_seconds") == (m.unit == "seconds");
        assert!(unit_suffix, "{}: seconds in the name iff the unit", m.name);
        assert_eq!(
            m.name.ends_with("_total"),
            m.kind == MetricKind::Counter,
            "{}: counters and only counters end in _total",
            m.name
        );
    }
}

// ---------------------------------------------------------------------------
// Every listed metric is emitted

/// Plays every kind of call a metric watches, and returns what was recorded.
async fn exercise(backend: Backend, s: &Snapshotter) -> Vec<Series> {
    let (url, _place) = backend.empty().await;
    let config = Config::from_url(&url).unwrap();
    let db = persist::open(&config).await.unwrap();
    persist::observe::describe_metrics();
    db.migrate().await.unwrap();
    let a = create(&db, 1).await.unwrap();
    assert!(matches!(create(&db, 1).await, Err(Error::Conflict(_))));
    let token = "t".repeat(43);
    db.sessions()
        .create(&token, a.user_id, T0, T0 + 10)
        .await
        .unwrap();
    db.sessions().find_by_token(&token).await.unwrap();
    assert_eq!(db.sessions().delete_expired(T0 + 20, 100).await.unwrap(), 1);
    // A unit of work committed, one rolled back, one aborted.
    let tx = db.begin().await.unwrap();
    tx.accounts().get(a.user_id).await.unwrap();
    tx.commit().await.unwrap();
    db.begin().await.unwrap().rollback().await.unwrap();
    let tx = db.begin().await.unwrap();
    let (email, username) = account(1);
    let dup = tx
        .accounts()
        .create(&NewAccount {
            email: &email,
            username: &username,
            pass_hash: b"h",
            created_at: T0,
        })
        .await;
    assert!(matches!(dup, Err(Error::Conflict(_))));
    assert!(matches!(tx.commit().await, Err(Error::Aborted)));
    // A wait for a connection: the writer (SQLite) or the pool's only one.
    {
        let tx = db.begin().await.unwrap();
        let db2 = db.clone();
        let waiter = tokio::spawn(async move { create(&db2, 2).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.rollback().await.unwrap();
        waiter.await.unwrap().unwrap();
    }
    let health = db.health().await;
    assert!(health.live && health.ready, "{health:?}");
    db.close().await;
    snapshot(s)
}

#[test]
fn every_listed_metric_is_emitted_on_one_backend_or_the_other() {
    let mut seen = BTreeSet::new();
    for backend in Backend::ALL {
        let series = recorded(|s| async move { exercise(backend, &s).await });
        for (name, labels, _) in &series {
            let sys = labels.iter().find(|(k, _)| k == "db_system");
            assert_eq!(
                sys.map(|(_, v)| v.as_str()),
                Some(system(backend)),
                "{name}"
            );
            seen.insert(name.clone());
        }
        // The calls of the run, seen by the per-call metrics.
        let sys = [("db_system", system(backend))];
        let create_ok = [
            sys[0],
            ("db_operation", "accounts.create"),
            ("outcome", "ok"),
        ];
        assert_eq!(
            counter(&series, "db_client_operations_total", &create_ok),
            2
        );
        let aborted = [sys[0], ("outcome", "aborted")];
        assert_eq!(
            counter(&series, "db_client_units_of_work_total", &aborted),
            1
        );
        let committed = [sys[0], ("outcome", "committed")];
        assert_eq!(
            counter(&series, "db_client_units_of_work_total", &committed),
            1
        );
        let rolled_back = [sys[0], ("outcome", "rolled_back")];
        assert_eq!(
            counter(&series, "db_client_units_of_work_total", &rolled_back),
            2
        );
        assert_eq!(counter(&series, "db_sessions_swept_total", &sys), 1);
        assert_eq!(
            gauge(&series, "db_schema_migrations_pending", &sys),
            Some(0.0)
        );
        let latest = persist::Migrations::embedded(backend.dialect())
            .unwrap()
            .latest_version();
        assert_eq!(
            gauge(&series, "db_schema_version", &sys),
            Some(latest as f64)
        );
    }
    let listed: BTreeSet<String> = METRICS.iter().map(|m| m.name.to_string()).collect();
    let missing: Vec<_> = listed.difference(&seen).collect();
    let unlisted: Vec<_> = seen.difference(&listed).collect();
    assert!(missing.is_empty(), "listed, never emitted: {missing:?}");
    assert!(unlisted.is_empty(), "emitted, not listed: {unlisted:?}");
}

// ---------------------------------------------------------------------------
// Each metric moves when it should

fn a_conflict_counts_for_accounts_create(backend: Backend) {
    recorded(|s| async move {
        let t = backend.fresh().await;
        let before = snapshot(&s);
        let labels = |outcome| {
            [
                ("db_system", system(backend)),
                ("db_operation", "accounts.create"),
                ("outcome", outcome),
            ]
        };
        let name = "db_client_operations_total";
        assert_eq!(counter(&before, name, &labels("conflict")), 0);
        create(&t.db, 1).await.unwrap();
        let err = create(&t.db, 1).await.unwrap_err();
        assert_eq!(err.kind(), "conflict");
        let after = snapshot(&s);
        assert_eq!(counter(&after, name, &labels("conflict")), 1);
        assert_eq!(counter(&after, name, &labels("ok")), 1);
        t.close().await;
    });
}

#[test]
fn a_conflict_counts_for_accounts_create_on_sqlite() {
    a_conflict_counts_for_accounts_create(Backend::Sqlite);
}

#[test]
fn a_conflict_counts_for_accounts_create_on_postgres() {
    a_conflict_counts_for_accounts_create(Backend::Postgres);
}

/// Holds every connection (SQLite: the writer) in units of work, starts one
/// more write, and watches it wait.
fn an_exhausted_pool_shows_waiters(backend: Backend) {
    recorded(|s| async move {
        let (url, _place) = backend.empty().await;
        let config = Config::from_url(&url)
            .unwrap()
            .with_pool_size(2)
            .with_acquire_timeout(Duration::from_secs(30));
        let db = persist::open(&config).await.unwrap();
        db.migrate().await.unwrap();
        let (pool, held) = match backend {
            Backend::Sqlite => ("writer", 1),
            Backend::Postgres => ("main", 2),
        };
        let mut txs = Vec::new();
        for _ in 0..held {
            txs.push(db.begin().await.unwrap());
        }
        let labels = [("db_system", system(backend)), ("pool", pool)];
        let pending = "db_client_connections_pending_requests";
        assert_eq!(gauge(&snapshot(&s), pending, &labels).unwrap_or(0.0), 0.0);
        let db2 = db.clone();
        let waiter = tokio::spawn(async move { create(&db2, 1).await });
        // The waiter runs on this thread until it blocks on the pool.
        let mut waiting = 0.0;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waiting = gauge(&snapshot(&s), pending, &labels).unwrap_or(0.0);
            if waiting > 0.0 {
                break;
            }
        }
        assert_eq!(waiting, 1.0, "one caller waits for {pool}");
        if backend == Backend::Postgres {
            db.record_pool_metrics();
            let used = [labels[0], labels[1], ("state", "used")];
            let series = snapshot(&s);
            assert_eq!(
                gauge(&series, "db_client_connections_usage", &used),
                Some(2.0)
            );
            assert_eq!(
                gauge(&series, "db_client_connections_max", &labels),
                Some(2.0)
            );
        }
        for tx in txs {
            tx.rollback().await.unwrap();
        }
        waiter.await.unwrap().unwrap();
        let series = snapshot(&s);
        // Snapshots reset gauges too: -1 is the one decrement since the
        // snapshot that saw 1, so the gauge is back to 0.
        assert_eq!(gauge(&series, pending, &labels), Some(-1.0));
        assert!(samples(&series, "db_client_connections_wait_time_seconds", &labels) >= 1);
        db.close().await;
    });
}

#[test]
fn an_exhausted_pool_shows_waiters_on_sqlite() {
    an_exhausted_pool_shows_waiters(Backend::Sqlite);
}

#[test]
fn an_exhausted_pool_shows_waiters_on_postgres() {
    an_exhausted_pool_shows_waiters(Backend::Postgres);
}

#[test]
fn a_killed_backend_shows_a_discarded_connection() {
    recorded(|s| async move {
        let pg = PgDatabase::create().await;
        let config = Config::from_url(&pg.url)
            .unwrap()
            .with_pool_size(1)
            .with_shared_read_connections(0);
        let db = persist::open(&config).await.unwrap();
        db.migrate().await.unwrap();
        create(&db, 1).await.unwrap();
        let mut totals = Totals::default();
        let labels = [("db_system", "postgresql"), ("pool", "main")];
        let discarded = [labels[0], labels[1], ("reason", "closed_by_server")];
        let (name, opened) = (
            "db_client_connections_discarded_total",
            "db_client_connections_opened_total",
        );
        totals.take(&s);
        assert_eq!(totals.counter(name, &discarded), 0);
        let opened_before = totals.counter(opened, &labels);
        assert!(opened_before >= 1);
        // Kill every server backend of this test's own database.
        let admin = common::admin_client().await;
        let killed = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&pg.name],
            )
            .await
            .unwrap();
        assert_eq!(killed.len(), 1, "the pool's one idle connection");
        // The client notices the closed socket; the next checkout discards
        // the connection and opens a new one.
        let mut ok = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if create(&db, 2).await.is_ok() {
                ok = true;
                break;
            }
        }
        assert!(ok, "a call succeeds on a new connection");
        totals.take(&s);
        assert_eq!(
            totals.counter(name, &discarded),
            1,
            "one connection discarded as closed by the server"
        );
        assert_eq!(totals.counter(opened, &labels), opened_before + 1);
        db.close().await;
        totals.take(&s);
        let closed = totals.counter("db_client_connections_closed_total", &labels);
        assert_eq!(closed, 1);
    });
}

// ---------------------------------------------------------------------------
// Health

async fn health_reports_liveness_and_readiness(backend: Backend) {
    let (url, _place) = backend.empty().await;
    let db = persist::open(&Config::from_url(&url).unwrap())
        .await
        .unwrap();
    let latest = persist::Migrations::embedded(backend.dialect())
        .unwrap()
        .latest_version();
    let shipped = persist::Migrations::embedded(backend.dialect())
        .unwrap()
        .iter()
        .count();
    // Reachable, nothing applied: live, not ready.
    let h = db.health().await;
    assert!(h.live && !h.ready, "{h:?}");
    assert_eq!(h.schema_version, Some(0));
    assert_eq!(h.pending_migrations, Some(shipped));
    assert_eq!(h.latest_version, latest);
    assert!(!h.schema_up_to_date && h.error.is_none() && h.incomplete.is_none());
    // Migrated: ready.
    db.migrate().await.unwrap();
    let h = db.health().await;
    assert!(h.live && h.ready && h.schema_up_to_date, "{h:?}");
    assert_eq!(h.schema_version, Some(latest));
    assert_eq!(h.pending_migrations, Some(0));
    // The struct serialises with the documented field names.
    let json = serde_json::to_value(&h).unwrap();
    for field in [
        "live",
        "ready",
        "backend",
        "elapsed_us",
        "schema_version",
        "latest_version",
        "pending_migrations",
        "schema_up_to_date",
        "incomplete",
        "error",
    ] {
        assert!(json.get(field).is_some(), "{field} missing in {json}");
    }
    assert_eq!(json["backend"], backend.name());
    // Closed: neither live nor ready, and the error says why.
    db.close().await;
    let h = db.health().await;
    assert!(!h.live && !h.ready, "{h:?}");
    assert_eq!(h.error.as_ref().map(|e| e.kind), Some("closed"));
}

#[test]
fn health_reports_liveness_and_readiness_on_sqlite() {
    common::block_on(health_reports_liveness_and_readiness(Backend::Sqlite));
}

#[test]
fn health_reports_liveness_and_readiness_on_postgres() {
    common::block_on(health_reports_liveness_and_readiness(Backend::Postgres));
}
