//! `persist demo --metrics PATH`: the file is the Prometheus text exposition
//! (parsed by the reference parser, Python's `prometheus_client`, which
//! `scripts/test` installs), and its histograms count exactly what the demo
//! says it did, on both backends.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{assert_exit, stdout, Backend};

/// Parses an exposition with `prometheus_client.parser` and prints, one per
/// line, `name<TAB>labels as k=v,k=v<TAB>value` for every sample.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{family.type}\t{s.name}\t{labels}\t{s.value}")
"#;

/// (type, sample name, labels) -> value.
type Samples = BTreeMap<(String, String, String), f64>;

fn parse(path: &std::path::Path) -> Samples {
    let out = Command::new("python3")
        .args(["-c", PARSE])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("python3 is required for this test ({e}); run scripts/test"));
    assert!(
        out.status.success(),
        "the Prometheus parser refused the file (is prometheus_client installed? \
         scripts/test installs it: pip install prometheus_client): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "{l}");
            let value: f64 = f[3].parse().unwrap_or_else(|_| panic!("{l}"));
            ((f[0].into(), f[1].into(), f[2].into()), value)
        })
        .collect()
}

/// The number after `label` on the demo's summary line starting with it.
fn summary_number(out: &str, label: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number on {line:?}"))
}

fn sum(samples: &Samples, kind: &str, name: &str, with: &str) -> f64 {
    samples
        .iter()
        .filter(|((t, n, l), _)| t == kind && n == name && l.contains(with))
        .map(|(_, v)| v)
        .sum()
}

fn demo_writes_a_parsable_exposition(backend: Backend) {
    let (url, _place) = backend.empty_blocking();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.prom");
    let o = Command::new(env!("CARGO_BIN_EXE_persist"))
        .args([
            "--database-url",
            &url,
            "demo",
            "--players",
            "30",
            "--tasks",
            "4",
        ])
        .arg("--metrics")
        .arg(&path)
        .output()
        .expect("run persist");
    assert_exit(&o, 0, "demo --metrics");
    let out = stdout(&o);
    let samples = parse(&path);
    let sys = match backend {
        Backend::Sqlite => "db_system=sqlite",
        Backend::Postgres => "db_system=postgresql",
    };
    let hist = "db_client_operation_duration_seconds";
    // Every repository call the demo counted is in the histogram, and the
    // counter by outcome agrees with it.
    let calls = summary_number(&out, "repository calls:");
    assert!(calls > 0);
    let counted = sum(&samples, "histogram", &format!("{hist}_count"), sys);
    assert_eq!(counted, calls as f64, "histogram count vs the demo's calls");
    let by_outcome = sum(&samples, "counter", "db_client_operations_total", sys);
    assert_eq!(by_outcome, calls as f64);
    // One account created per registered player.
    let registered = summary_number(&out, "register");
    assert_eq!(registered, 30);
    let creates = sum(
        &samples,
        "histogram",
        &format!("{hist}_count"),
        "db_operation=accounts.create,",
    );
    assert_eq!(creates, registered as f64);
    // The +Inf bucket holds every observation.
    let inf = sum(&samples, "histogram", &format!("{hist}_bucket"), "le=+Inf");
    assert_eq!(inf, counted);
    // Units of work: one per register, battle and password change.
    let units: u64 = ["register", "battle", "password_change"]
        .iter()
        .map(|op| summary_number(&out, op))
        .sum();
    let committed = sum(
        &samples,
        "counter",
        "db_client_units_of_work_total",
        "outcome=committed",
    );
    // The demo re-sends a share of battle ends outside a unit of work: on
    // PostgreSQL such a call runs in a unit of work of its own, on SQLite in
    // one transaction on the writer that is not a unit of work.
    let applies = sum(
        &samples,
        "histogram",
        &format!("{hist}_count"),
        "db_operation=battles.apply,",
    );
    let resent = applies - summary_number(&out, "battle") as f64;
    assert!(resent > 0.0, "the demo re-sends some battle ends");
    let own_units = match backend {
        Backend::Sqlite => 0.0,
        Backend::Postgres => resent,
    };
    assert_eq!(committed, units as f64 + own_units);
    // The schema gauges.
    let latest = persist::Migrations::embedded(backend.dialect())
        .unwrap()
        .latest_version();
    assert_eq!(
        sum(&samples, "gauge", "db_schema_version", sys),
        latest as f64
    );
    assert_eq!(
        sum(&samples, "gauge", "db_schema_migrations_pending", sys),
        0.0
    );
}

#[test]
fn demo_writes_a_parsable_exposition_on_sqlite() {
    demo_writes_a_parsable_exposition(Backend::Sqlite);
}

#[test]
fn demo_writes_a_parsable_exposition_on_postgres() {
    demo_writes_a_parsable_exposition(Backend::Postgres);
}

#[test]
fn an_unwritable_metrics_path_fails_before_the_run() {
    let (url, _place) = Backend::Sqlite.empty_blocking();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("demo.prom");
    let o = Command::new(env!("CARGO_BIN_EXE_persist"))
        .args(["--database-url", &url, "demo", "--players", "3"])
        .arg("--metrics")
        .arg(&path)
        .output()
        .expect("run persist");
    assert_exit(&o, 1, "demo --metrics into a missing directory");
    assert!(stdout(&o).is_empty(), "nothing played: {}", stdout(&o));
    let err = common::stderr(&o);
    assert!(err.starts_with("error: cannot write the metrics"), "{err}");
    assert!(!path.exists());
}
