//! Peak RSS per implementation. All implementations share the parent
//! process, so each one runs the same fixed workload in a child process of
//! this binary that opens only that implementation; the child reports its
//! VmHWM (/proc/self/status). A child that opens nothing gives the baseline
//! (the binary, the runtime and the allocator).

use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::harness::{vm_hwm_kib, Ctx, Subject};
use crate::ops::Op;
use crate::raw_pg::RawPg;
use crate::raw_sqlite::{RawSqlite, Sync};
use crate::report::{Record, Results, RssStats};
use crate::{bench_pg, bench_sqlite, sqlx_impl, Opts, Part, RAW_ONE, RAW_POOL};

const TASKS: usize = 16;

fn workload(quick: bool) -> (u64, String) {
    let per_task = if quick { 300 } else { 3000 };
    (
        per_task,
        format!(
            "{TASKS} tasks, each: {per_task} session lookups, {} unlock lists, \
             one 1000-account transaction",
            per_task / 4
        ),
    )
}

fn spawn(args: &[&str]) -> Result<(u64, f64, f64)> {
    let exe = std::env::current_exe().context("own executable")?;
    let out = Command::new(exe)
        .args(args)
        .output()
        .context("run RSS child")?;
    if !out.status.success() {
        bail!(
            "RSS child {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RSS "))
        .with_context(|| format!("RSS child {args:?} printed no result"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    Ok((f[1].parse()?, f[2].parse()?, f[3].parse()?))
}

/// Runs the baseline child and one child per implementation on `target`
/// (SQLite file or PostgreSQL URL) and records their peak RSS.
pub async fn measure_backend(
    res: &mut Results,
    backend: &'static str,
    target: &str,
    ctx: &Arc<Ctx>,
    opts: &Opts,
) -> Result<()> {
    let (baseline, _, _) = tokio::task::block_in_place(|| spawn(&["--rss-child", "none"]))?;
    let (_, desc) = workload(opts.quick);
    // Design variant (SQLite): persist with at most one reader connection,
    // to show what the extra connections' page caches cost.
    let variant_child = (backend == "sqlite" && opts.runs(Part::Variants)).then_some((
        "persist",
        "writer + at most 1 reader",
        "persist-1reader",
    ));
    for (imp, variant, child) in [
        (
            "persist",
            if backend == "sqlite" {
                bench_sqlite::PERSIST_VARIANT
            } else {
                bench_pg::PERSIST_VARIANT
            },
            "persist",
        ),
        (
            "raw",
            if backend == "sqlite" {
                RAW_ONE
            } else {
                RAW_POOL
            },
            "raw",
        ),
        ("sqlx", crate::SQLX_DEFAULT, "sqlx"),
    ]
    .into_iter()
    .chain(variant_child)
    {
        // A block of operation numbers of its own, so its accounts are new.
        let seq = ctx.seq.fetch_add(100_000_000, Ordering::Relaxed);
        let spec = format!("{backend}:{child}");
        let seq_s = seq.to_string();
        let mut args = vec![
            "--rss-child",
            spec.as_str(),
            "--rss-target",
            target,
            "--rss-seq",
            seq_s.as_str(),
        ];
        if opts.quick {
            args.push("--quick");
        }
        let (kib, ops, secs) = tokio::task::block_in_place(|| spawn(&args))?;
        let rate = ops / secs;
        eprintln!(
            "{backend}: peak RSS {imp} ({variant}): {:.1} MiB (baseline {:.1} MiB)",
            kib as f64 / 1024.0,
            baseline as f64 / 1024.0
        );
        let mut r = Record::blank(
            backend,
            (backend == "sqlite").then_some("full"),
            if child == imp { "main" } else { "experiment" },
            "rss_workload",
            imp,
            variant,
        );
        r.sessions_in_table = ctx.scale.sessions;
        r.concurrency = TASKS;
        r.ops_per_sec = rate;
        r.peak_rss_kib = Some(kib);
        r.rss = Some(RssStats {
            peak_rss_kib: kib,
            baseline_rss_kib: baseline,
            workload: desc.clone(),
            seconds: secs,
        });
        res.push(r);
    }
    Ok(())
}

/// The child side: open one implementation, run the workload, print
/// `RSS <vmhwm_kib> <ops> <seconds>`.
pub async fn child(spec: &str, target: &str, seq: u64, ctx: Arc<Ctx>, quick: bool) -> Result<()> {
    if spec == "none" {
        println!("RSS {} 0 1", vm_hwm_kib().unwrap_or(0));
        return Ok(());
    }
    ctx.seq.store(seq, Ordering::Relaxed);
    let path = std::path::Path::new(target);
    let subject = match spec {
        "sqlite:persist" => Subject::Persist(bench_sqlite::open_persist(path, Sync::Full).await?),
        "sqlite:persist-1reader" => {
            let cfg = persist::Config::from_url(&bench_sqlite::url(path))?.with_pool_size(1);
            Subject::Persist(persist::open(&cfg).await?)
        }
        "sqlite:raw" => Subject::RawSqlite(RawSqlite::open(path, Sync::Full)?),
        "sqlite:sqlx" => Subject::SqlxSqlite(sqlx_impl::open_sqlite(path, Sync::Full).await?),
        "postgres:persist" => {
            Subject::Persist(persist::open(&persist::Config::from_url(target)?).await?)
        }
        "postgres:raw" => Subject::RawPg(RawPg::pool(target, 8, false).await?),
        "postgres:sqlx" => Subject::SqlxPg(sqlx_impl::open_postgres(target).await?),
        other => bail!("unknown RSS child {other}"),
    };
    let subject = Arc::new(subject);
    let (per_task, _) = workload(quick);
    let start = Instant::now();
    let mut ops = 0u64;
    for (op, n) in [
        (Op::SessionLookup, per_task),
        (Op::UnlockList, per_task / 4),
        (Op::Insert1000Tx, 1),
    ] {
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let s = Arc::clone(&subject);
            let ctx = Arc::clone(&ctx);
            let sessions = ctx.scale.sessions;
            tasks.push(tokio::spawn(async move {
                for _ in 0..n {
                    s.run(op, &ctx.inputs(sessions)).await?;
                }
                Ok::<(), anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        ops += n * TASKS as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let kib = vm_hwm_kib().context("VmHWM not readable")?;
    subject.close().await;
    println!("RSS {kib} {ops} {secs}");
    Ok(())
}
