//! Several process runs judged together: `--runs N` runs this program N
//! times, each in its own process writing its records as JSON, then reads
//! them back and reports on all of them (`--combine` does the second half
//! on JSON files of earlier runs).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::report::{Record, Results};

/// Keeps a string for the rest of the process (records name their backend,
/// implementation and variant with `&'static str`; a few dozen distinct
/// strings are read per run).
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn text(v: &Value, k: &str) -> Result<&'static str> {
    v.get(k)
        .and_then(Value::as_str)
        .map(leak)
        .with_context(|| format!("record without {k}"))
}

fn sub<T: serde::de::DeserializeOwned>(v: &Value, k: &str) -> Result<Option<T>> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => Ok(Some(
            serde_json::from_value(x.clone()).with_context(|| format!("field {k}"))?,
        )),
    }
}

fn record(v: &Value, run: u32) -> Result<Record> {
    let mut r = Record::blank(
        text(v, "backend")?,
        v.get("durability").and_then(Value::as_str).map(leak),
        text(v, "data_set")?,
        text(v, "operation")?,
        text(v, "implementation")?,
        text(v, "variant")?,
    );
    r.run = run;
    r.sessions_in_table = v
        .get("sessions_in_table")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    r.concurrency = v.get("concurrency").and_then(Value::as_u64).unwrap_or(1) as usize;
    r.ops_per_sec = num(v, "ops_per_sec");
    r.ci_lo = num(v, "ci_lo");
    r.ci_hi = num(v, "ci_hi");
    r.samples = v
        .get("samples")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    r.peak_rss_kib = v.get("peak_rss_kib").and_then(Value::as_u64);
    r.sweep = sub(v, "sweep")?;
    r.rss = sub(v, "rss")?;
    r.batches = sub(v, "batches")?;
    r.mixed = sub(v, "mixed")?;
    r.cold = sub(v, "cold")?;
    Ok(r)
}

/// Reads the records of one run's JSON file.
pub fn load(path: &Path, run: u32, res: &mut Results) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let v: Vec<Value> =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    for x in &v {
        res.push(record(x, run)?);
    }
    Ok(())
}

/// The arguments of this process without `--runs`, `--combine` and `--json`
/// (each with its value).
fn child_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--runs" || a == "--json" {
            it.next();
        } else if a.starts_with("--runs=") || a.starts_with("--json=") {
        } else {
            out.push(a);
        }
    }
    out
}

/// The setup and durability lines of a run's printed report.
fn setup_lines(report: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(report).unwrap_or_default();
    text.lines()
        .skip_while(|l| !l.starts_with("Setup and durability"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| format!("{} (run 1)", l.trim_start()))
        .collect()
}

pub fn parent(
    runs: usize,
    combine: &[PathBuf],
    json: Option<&Path>,
    quick: bool,
) -> Result<ExitCode> {
    let started = Instant::now();
    let mut res = Results::default();
    if !combine.is_empty() {
        for (i, p) in combine.iter().enumerate() {
            load(p, i as u32, &mut res)?;
        }
    } else {
        let dir = tempfile::Builder::new()
            .prefix("persist-bench-runs-")
            .tempdir()
            .context("temp dir for the runs' records")?;
        let exe = std::env::current_exe().context("own executable")?;
        for i in 0..runs {
            let path = dir.path().join(format!("run-{}.json", i + 1));
            let out = dir.path().join(format!("run-{}.txt", i + 1));
            eprintln!("persist-bench: run {} of {runs}", i + 1);
            let status = Command::new(&exe)
                .args(child_args())
                .arg("--json")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).context("run output file")?)
                .status()
                .context("start a run")?;
            // A quick run that found a gross regression exits 1 after writing
            // its records; judge all runs together all the same.
            if !path.exists() {
                bail!(
                    "run {} failed ({status}); its output: {}",
                    i + 1,
                    out.display()
                );
            }
            load(&path, i as u32, &mut res)?;
            if i == 0 {
                res.setup = setup_lines(&out);
            }
        }
        // Kept for reading: each run's own report.
        let kept = dir.keep();
        eprintln!(
            "persist-bench: each run's own report and records are in {}",
            kept.display()
        );
    }
    res.attach_rss();
    Ok(crate::finish(&res, quick, json, started))
}
