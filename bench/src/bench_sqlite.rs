//! The SQLite section: data set in temp files, the three implementations at
//! both durability levels, growth and sweep, peak RSS per implementation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use persist::{Config, Db, Durability};
use rusqlite::params;

use crate::data::{self, digest, seed_email, seed_username, token, Scale, PASS_HASH, T0};
use crate::harness::{measure, run_cell, Ctx, Entry, Subject};
use crate::ops::Op;
use crate::raw_sqlite::{self, RawSqlite, Sync};
use crate::report::{BatchStats, Record, Results, SweepStats};
use crate::{
    cold, mixed, rss, sqlx_impl, sweep, Opts, Part, RAW_FAIR, RAW_ONE, SQLX_DEFAULT,
    SQLX_TUNED_SQLITE,
};

pub const PERSIST_VARIANT: &str = "1 writer + readers";

pub fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

pub async fn open_persist(path: &Path, sync: Sync) -> Result<Db> {
    let cfg = Config::from_url(&url(path))?.with_durability(match sync {
        Sync::Full => Durability::Full,
        Sync::Normal => Durability::Normal,
    });
    Ok(persist::open(&cfg).await?)
}

/// Reader connections persist opened at 16 tasks (counted in the main
/// section; the fair raw baseline opens as many).
static READERS: AtomicUsize = AtomicUsize::new(0);

/// Open file descriptors of this process on `path` (SQLite opens one per
/// connection).
fn fds_on(path: &Path) -> Result<usize> {
    let want = std::fs::canonicalize(path)?;
    let mut n = 0;
    for e in std::fs::read_dir("/proc/self/fd")? {
        if let Ok(target) = std::fs::read_link(e?.path()) {
            if target == want {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// persist, warmed at 16 tasks so it has opened the readers it uses; the
/// reader count is measured from its file descriptors.
async fn persist_entry(path: &Path, sync: Sync, ctx: &Arc<Ctx>) -> Result<(Entry, usize)> {
    let before = fds_on(path)?;
    let e = Entry::new(
        "persist",
        PERSIST_VARIANT,
        Subject::Persist(open_persist(path, sync).await?),
    );
    for op in [Op::SessionLookup, Op::UnlockList] {
        measure(
            &e.subject,
            op,
            16,
            Duration::from_millis(50),
            ctx,
            ctx.scale.sessions,
        )
        .await?;
    }
    let conns = fds_on(path)?.saturating_sub(before);
    Ok((e, conns.saturating_sub(1).max(1)))
}

async fn entries(path: &Path, sync: Sync, ctx: &Arc<Ctx>, res: &mut Results) -> Result<Vec<Entry>> {
    let (persist, readers) = persist_entry(path, sync, ctx).await?;
    READERS.store(readers, Ordering::Relaxed);
    let fair = RawSqlite::with_readers(path, sync, readers)?;
    let one = RawSqlite::open(path, sync)?;
    let sqlx_default = sqlx_impl::open_sqlite(path, sync).await?;
    let (sqlx_w, sqlx_r) = sqlx_impl::open_sqlite_tuned(path, sync).await?;
    // Every implementation must run at the durability level it is filed
    // under: queried on its connections.
    let want = match sync {
        Sync::Full => "2",
        Sync::Normal => "1",
    };
    let mut lines = vec![format!(
        "sqlite/{} persist ({PERSIST_VARIANT}): 1 writer + {readers} reader connection(s) \
         opened at 16 tasks (counted from this process's file descriptors); persist::open \
         queries PRAGMA synchronous and journal_mode on every connection it opens and refuses \
         a mismatch (Durability::{})",
        sync.name(),
        if sync == Sync::Full { "Full" } else { "Normal" }
    )];
    for (label, r) in [(RAW_FAIR, &fair), (RAW_ONE, &one)] {
        let s = r.pragma_all("synchronous")?;
        let j = r.pragma_all("journal_mode")?;
        ensure!(
            s.iter().all(|x| x == want) && j.iter().all(|x| x.eq_ignore_ascii_case("wal")),
            "raw ({label}) runs with synchronous={s:?} journal_mode={j:?}, expected {want}/wal"
        );
        lines.push(format!(
            "sqlite/{} raw ({label}): {} connection(s): synchronous={} journal_mode={}",
            sync.name(),
            s.len(),
            s.join(","),
            j.join(",")
        ));
    }
    for (label, pool) in [
        (SQLX_DEFAULT, &sqlx_default),
        ("tuned, writer", &sqlx_w),
        ("tuned, readers", &sqlx_r),
    ] {
        // Every connection the pool may open: hold them all at once, so the
        // pool opens each, and query each.
        let mut held = Vec::new();
        for _ in 0..pool.options().get_max_connections() {
            held.push(pool.acquire().await?);
        }
        let (mut ss, mut js) = (Vec::new(), Vec::new());
        for c in &mut held {
            let s: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **c)
                .await?;
            let j: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut **c)
                .await?;
            ss.push(s.to_string());
            js.push(j);
        }
        drop(held);
        ensure!(
            ss.iter().all(|s| s == want) && js.iter().all(|j| j.eq_ignore_ascii_case("wal")),
            "sqlx ({label}) runs with synchronous={ss:?} journal_mode={js:?}, expected {want}/wal"
        );
        lines.push(format!(
            "sqlite/{} sqlx ({label}): {} connection(s): synchronous={} journal_mode={}",
            sync.name(),
            ss.len(),
            ss.join(","),
            js.join(",")
        ));
    }
    for l in &lines {
        eprintln!("{l}");
    }
    res.setup.extend(lines);
    Ok(vec![
        persist,
        Entry::new("raw", RAW_FAIR, Subject::RawSqlite(fair)),
        Entry::new("raw", RAW_ONE, Subject::RawSqlite(one)),
        Entry::new("sqlx", SQLX_DEFAULT, Subject::SqlxSqlite(sqlx_default)),
        Entry::new(
            "sqlx",
            SQLX_TUNED_SQLITE,
            Subject::SqlxSqliteSplit(sqlx_w, sqlx_r),
        ),
    ])
}

/// `PRAGMA wal_checkpoint(TRUNCATE)` on its own connection; fails when a
/// reader kept it from completing.
fn checkpoint(path: &Path) -> Result<()> {
    let c = raw_sqlite::connect(path, Sync::Full)?;
    let (busy, log, done): (i64, i64, i64) =
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    ensure!(
        busy == 0 && log == done,
        "checkpoint incomplete: busy={busy}, {done} of {log} frames"
    );
    Ok(())
}

/// A bulk-loading connection: no fsync while loading (setup only).
fn loader(path: &Path) -> Result<rusqlite::Connection> {
    let c = raw_sqlite::connect(path, Sync::Normal)?;
    c.pragma_update(None, "synchronous", 0)?;
    Ok(c)
}

async fn create_schema(path: &Path) -> Result<()> {
    let db = open_persist(path, Sync::Full).await?;
    db.migrate().await?;
    db.close().await;
    Ok(())
}

fn load_accounts(c: &rusqlite::Connection, n: u64) -> Result<()> {
    let mut st = c.prepare(
        "INSERT INTO accounts (email, email_key, username, username_key, pass_hash, created_at) \
         VALUES (?1, ?1, ?2, ?2, ?3, ?4)",
    )?;
    for i in 1..=n {
        st.execute(params![seed_email(i), seed_username(i), PASS_HASH, T0])?;
    }
    ensure!(
        c.last_insert_rowid() == n as i64,
        "accounts did not get ids 1..={n}"
    );
    Ok(())
}

/// Sessions `from..to`; session `i` belongs to account `1 + i % accounts`.
fn load_sessions(
    c: &rusqlite::Connection,
    from: u64,
    to: u64,
    accounts: u64,
    expires: impl Fn(u64) -> i64,
) -> Result<()> {
    load_sessions_into(c, "sessions", from, to, accounts, expires)
}

fn load_sessions_into(
    c: &rusqlite::Connection,
    table: &str,
    from: u64,
    to: u64,
    accounts: u64,
    expires: impl Fn(u64) -> i64,
) -> Result<()> {
    let mut st = c.prepare(&format!(
        "INSERT INTO {table} (token, user_id, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)"
    ))?;
    for i in from..to {
        let d = digest(&token(i));
        st.execute(params![&d[..], (1 + i % accounts) as i64, expires(i), T0])?;
    }
    Ok(())
}

fn load_main(path: &Path, s: &Scale) -> Result<()> {
    let c = loader(path)?;
    c.execute_batch("BEGIN")?;
    load_accounts(&c, s.accounts)?;
    load_sessions(&c, 0, s.sessions, s.accounts, |_| T0 + data::SESSION_TTL)?;
    c.execute_batch(
        "INSERT INTO progression (user_id, level, xp) SELECT user_id, 1, 0 FROM accounts;
         INSERT INTO army_loadouts (user_id, element_id, army_ability_1, army_ability_2,
           army_ability_3, army_ability_4, ability_pawn, ability_knight, ability_bishop,
           ability_rook, ability_queen, ability_king, item_1, item_2, item_3, item_4, updated_at)
         SELECT user_id, user_id % 5, 1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 1700000000
         FROM accounts;",
    )?;
    {
        let mut st = c.prepare(
            "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) VALUES (?1, ?2, ?3)",
        )?;
        for u in 1..=s.unlock_users {
            for f in 0..data::HELD_FLAGS {
                st.execute(params![u as i64, 2 * f, T0])?;
            }
        }
    }
    c.execute_batch("COMMIT; ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// The data set is what persist expects: tokens hash to stored digests.
async fn sanity(path: &Path) -> Result<()> {
    let db = open_persist(path, Sync::Full).await?;
    let s = db.sessions().find_by_token(&token(0)).await?;
    ensure!(s.user_id.0 == 1, "session 0 belongs to user {}", s.user_id);
    let a = db.accounts().find_by_email("USER1@bench.example").await?;
    ensure!(a.user_id.0 == 1, "account key lookup");
    db.close().await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record(
    res: &mut Results,
    sync: Sync,
    data_set: &'static str,
    sessions: u64,
    op: Op,
    c: usize,
    e: &Entry,
    samples: Vec<f64>,
) {
    res.push(Record::cell(
        "sqlite",
        Some(sync.name()),
        data_set,
        sessions,
        op,
        c,
        e,
        samples,
    ));
}

pub async fn run(opts: &Opts, ctx: &Arc<Ctx>, res: &mut Results) -> Result<()> {
    let scale = ctx.scale;
    let dir = tempfile::Builder::new()
        .prefix("persist-bench-")
        .tempdir_in(&opts.sqlite_dir)
        .with_context(|| format!("temp dir in {}", opts.sqlite_dir.display()))?;
    let main = dir.path().join("main.db");
    let t = Instant::now();
    create_schema(&main).await?;
    load_main(&main, &scale)?;
    sanity(&main).await?;
    eprintln!(
        "sqlite: data set loaded in {:.1}s ({})",
        t.elapsed().as_secs_f64(),
        main.display()
    );

    if opts.runs(Part::Main) {
        for sync in [Sync::Full, Sync::Normal] {
            let es = entries(&main, sync, ctx, res).await?;
            for op in Op::ALL.into_iter().filter(|o| opts.wants(*o)) {
                // synchronous only changes commits; reads are measured once.
                if sync == Sync::Normal && op.is_read() {
                    continue;
                }
                for c in [1, 16] {
                    let samples = run_cell(&es, op, c, opts.timing, ctx, scale.sessions).await?;
                    for (e, s) in es.iter().zip(samples) {
                        record(res, sync, "main", scale.sessions, op, c, e, s);
                    }
                    eprintln!("sqlite/{} {} x{c} done", sync.name(), op.name());
                }
            }
            for e in &es {
                e.subject.close().await;
            }
        }
    }
    if opts.runs(Part::Variants) {
        read_variants(opts, ctx, res, &main).await?;
    }
    if opts.runs(Part::Mixed) || opts.runs(Part::Cold) {
        latency(opts, ctx, res, &main).await?;
    }
    if opts.runs(Part::Rss) {
        rss::measure_backend(res, "sqlite", &main.display().to_string(), ctx, opts).await?;
    }
    Ok(())
}

/// The growth part (lookups at two table sizes, then the sweep), run after
/// every backend's other parts (D-136): the sweep installs the bench's
/// batch-timing subscriber, which no earlier persist cell should pay for.
pub async fn run_growth(opts: &Opts, ctx: &Arc<Ctx>, res: &mut Results) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("persist-bench-growth-")
        .tempdir_in(&opts.sqlite_dir)
        .with_context(|| format!("temp dir in {}", opts.sqlite_dir.display()))?;
    growth(opts, ctx, res, dir.path()).await
}

/// The mixed open-loop workload, the cold start and the calls on a user with
/// many sessions (persist and raw rusqlite in persist's shape, durability
/// full).
async fn latency(opts: &Opts, ctx: &Arc<Ctx>, res: &mut Results, path: &Path) -> Result<()> {
    let full = Some("full");
    let (persist, readers) = persist_entry(path, Sync::Full, ctx).await?;
    let raw = Entry::new(
        "raw",
        RAW_FAIR,
        Subject::RawSqlite(RawSqlite::with_readers(path, Sync::Full, readers)?),
    );
    let Subject::Persist(db) = persist.subject.as_ref() else {
        anyhow::bail!("persist entry without a handle");
    };
    let db = db.clone();
    if opts.runs(Part::Mixed) {
        mixed::run("sqlite", full, &persist, &raw, &db, opts.quick, ctx, res).await?;
    }
    if opts.runs(Part::Cold) {
        let n = if opts.quick { 200 } else { 2000 };
        cold::many_sessions(
            "sqlite",
            full,
            &[persist.clone(), raw.clone()],
            &db,
            n,
            opts.timing,
            ctx,
            res,
        )
        .await?;
        let reps = if opts.quick { 3 } else { 15 };
        cold::cold_start(
            "sqlite",
            full,
            "persist",
            PERSIST_VARIANT,
            reps,
            ctx,
            res,
            || async { Ok(Subject::Persist(open_persist(path, Sync::Full).await?)) },
        )
        .await?;
        cold::cold_start("sqlite", full, "raw", RAW_ONE, reps, ctx, res, || async {
            Ok(Subject::RawSqlite(RawSqlite::open(path, Sync::Full)?))
        })
        .await?;
    }
    persist.subject.close().await;
    eprintln!("sqlite: latency sections done");
    Ok(())
}

/// Design variants for reads: how much two identical raw connections in
/// one process differ (the spread that read ratios carry), and persist with
/// a one-reader pool.
async fn read_variants(opts: &Opts, ctx: &Arc<Ctx>, res: &mut Results, path: &Path) -> Result<()> {
    let cfg = Config::from_url(&url(path))?.with_pool_size(1);
    let es = vec![
        Entry::new(
            "persist",
            PERSIST_VARIANT,
            Subject::Persist(open_persist(path, Sync::Full).await?),
        ),
        Entry::new(
            "persist",
            "writer + at most 1 reader",
            Subject::Persist(persist::open(&cfg).await?),
        ),
        Entry::new(
            "raw",
            "1 connection (a)",
            Subject::RawSqlite(RawSqlite::open(path, Sync::Full)?),
        ),
        Entry::new(
            "raw",
            "1 connection (b), same settings",
            Subject::RawSqlite(RawSqlite::open(path, Sync::Full)?),
        ),
    ];
    for op in [Op::SessionLookup, Op::UnlockList] {
        for c in [1, 16] {
            let samples = run_cell(&es, op, c, opts.timing, ctx, ctx.scale.sessions).await?;
            for (e, s) in es.iter().zip(samples) {
                record(
                    res,
                    Sync::Full,
                    "experiment",
                    ctx.scale.sessions,
                    op,
                    c,
                    e,
                    s,
                );
            }
        }
    }
    for e in &es {
        e.subject.close().await;
    }
    eprintln!("sqlite: read variants done");
    Ok(())
}

/// Sessions of the growth set expire in creation order within the hour
/// after T0 (as real sessions do: created_at + TTL); the sweep runs at
/// T0 + 2h, so all of them are expired.
fn growth_expiry(large: u64) -> impl Fn(u64) -> i64 {
    move |i| T0 + (i * 3600 / large) as i64
}

fn load_growth_sessions(
    path: &Path,
    tables: &[&str],
    (from, to): (u64, u64),
    accounts: u64,
    large: u64,
) -> Result<()> {
    let c = loader(path)?;
    let mut lo = from;
    while lo < to {
        let hi = (lo + 250_000).min(to);
        c.execute_batch("BEGIN")?;
        for t in tables {
            load_sessions_into(&c, t, lo, hi, accounts, growth_expiry(large))?;
        }
        c.execute_batch("COMMIT")?;
        lo = hi;
    }
    c.execute_batch("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// A design variant of `sessions`: its layout before migration 0002, a rowid
/// table with the token in a separate unique index, so a lookup is two B-tree
/// descents (the token index, then the table) instead of one.
const SESSIONS_ROWID: &str = "CREATE TABLE sessions_rowid (
    token      BLOB    NOT NULL PRIMARY KEY CHECK (length(token) = 32),
    user_id    INTEGER NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL CHECK (created_at >= 0),
    CHECK (expires_at >= created_at)
) STRICT;
CREATE INDEX sessions_rowid_user_id_idx ON sessions_rowid (user_id);
CREATE INDEX sessions_rowid_expires_at_idx ON sessions_rowid (expires_at);";
const LOOKUP_ROWID: &str =
    "SELECT user_id, created_at, expires_at FROM sessions_rowid WHERE token = ?1";

/// Raw variants for the growth lookups: the same connection with the file
/// memory-mapped, or reading the rowid layout of `sessions`.
const MMAP_VARIANT: &str = "1 connection, mmap_size=256MiB";
const ROWID_VARIANT: &str = "1 connection, rowid table (schema 0001)";

async fn growth(opts: &Opts, ctx: &Arc<Ctx>, res: &mut Results, dir: &Path) -> Result<()> {
    let scale = ctx.scale;
    let (small, large) = (scale.growth_small, scale.growth_large);
    let path: PathBuf = dir.join("growth.db");
    create_schema(&path).await?;
    {
        let c = loader(&path)?;
        c.execute_batch("BEGIN")?;
        load_accounts(&c, scale.growth_accounts)?;
        c.execute_batch("COMMIT")?;
    }
    let variants = opts.runs(Part::Variants);
    let tables: &[&str] = if variants {
        loader(&path)?.execute_batch(SESSIONS_ROWID)?;
        &["sessions", "sessions_rowid"]
    } else {
        &["sessions"]
    };
    load_growth_sessions(&path, tables, (0, small), scale.growth_accounts, large)?;
    let db = open_persist(&path, Sync::Full).await?;
    let readers = READERS.load(Ordering::Relaxed).max(1);
    let mut es = vec![
        Entry::new("persist", PERSIST_VARIANT, Subject::Persist(db.clone())),
        Entry::new(
            "raw",
            RAW_FAIR,
            Subject::RawSqlite(RawSqlite::with_readers(&path, Sync::Full, readers)?),
        ),
        Entry::new(
            "raw",
            RAW_ONE,
            Subject::RawSqlite(RawSqlite::open(&path, Sync::Full)?),
        ),
    ];
    if variants {
        es.push(Entry::new(
            "raw",
            MMAP_VARIANT,
            Subject::RawSqlite(RawSqlite::open_with(
                &path,
                Sync::Full,
                &[("mmap_size", 256 << 20)],
            )?),
        ));
        es.push(Entry::new(
            "raw",
            ROWID_VARIANT,
            Subject::RawSqlite(RawSqlite::open(&path, Sync::Full)?.with_lookup_sql(LOOKUP_ROWID)),
        ));
    }
    let lookups = |n: u64, res: &mut Results, samples: Vec<Vec<f64>>, c: usize| {
        for (e, s) in es.iter().zip(samples) {
            let set = if e.variant == MMAP_VARIANT || e.variant == ROWID_VARIANT {
                "experiment"
            } else {
                "growth"
            };
            record(res, Sync::Full, set, n, Op::SessionLookup, c, e, s);
        }
    };
    // Measured from a checkpointed database (an empty WAL), at each size.
    checkpoint(&path)?;
    for c in [1, 16] {
        let s = run_cell(&es, Op::SessionLookup, c, opts.timing, ctx, small).await?;
        lookups(small, res, s, c);
    }
    let t = Instant::now();
    load_growth_sessions(&path, tables, (small, large), scale.growth_accounts, large)?;
    eprintln!(
        "sqlite: growth set at {large} sessions in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    checkpoint(&path)?;
    for c in [1, 16] {
        let s = run_cell(&es, Op::SessionLookup, c, opts.timing, ctx, large).await?;
        lookups(large, res, s, c);
    }
    for e in &es[1..] {
        e.subject.close().await;
    }
    let baseline = Duration::from_millis(opts.sweep_baseline_ms);
    checkpoint(&path)?;
    let (stats, rate) = sweep::run(
        &db,
        T0 + 7200,
        opts.sweep_batch,
        scale.growth_accounts,
        large,
        baseline,
    )
    .await?;
    ensure!(
        stats.rows_deleted == large,
        "sweep deleted {} of {large}",
        stats.rows_deleted
    );
    eprintln!("sqlite: sweep done in {:.0} ms", stats.total_ms);
    push_sweep(res, "growth", stats, rate);
    if variants {
        // The same sweep over a tenth of the rows at other batch sizes: how
        // long a writer waits grows with the batch.
        let n = large / 10;
        for batch in [100, 10_000] {
            load_growth_sessions(&path, &["sessions"], (0, n), scale.growth_accounts, n)?;
            let (stats, rate) =
                sweep::run(&db, T0 + 7200, batch, scale.growth_accounts, n, baseline).await?;
            ensure!(
                stats.rows_deleted == n,
                "sweep deleted {} of {n}",
                stats.rows_deleted
            );
            push_sweep(res, "experiment", stats, rate);
        }
        // What one batch of the sweep's statement costs with raw rusqlite,
        // with SQLite's automatic WAL checkpoint (run inside the committing
        // write) and without it.
        for autocheckpoint in [true, false] {
            load_growth_sessions(&path, &["sessions"], (0, n), scale.growth_accounts, n)?;
            let b = raw_sweep(&path, opts.sweep_batch, autocheckpoint)?;
            ensure!(b.rows == n, "raw sweep deleted {} of {n}", b.rows);
            let mut r = Record::blank(
                "sqlite",
                Some("full"),
                "experiment",
                "sweep_batches",
                "raw",
                if autocheckpoint {
                    "wal_autocheckpoint=1000 (default)"
                } else {
                    "wal_autocheckpoint=0"
                },
            );
            r.sessions_in_table = n;
            r.ops_per_sec = b.rows as f64 / (b.total_ms / 1000.0);
            r.batches = Some(b);
            res.push(r);
        }
        sweep_checkpoint_variants(opts, res, scale.growth_accounts, large, &path).await?;
        eprintln!("sqlite: sweep variants done");
    }
    db.close().await;
    Ok(())
}

/// The sweep's two ways with the write-ahead log, side by side on the same
/// rows: "before", SQLite's automatic checkpoint inside the batches' commits
/// (holding the writer gate), and "after", batches without it and a passive
/// checkpoint between them outside the gate. Two rounds, alternating who
/// goes first; each sweep starts from a checkpointed, empty log.
const SWEEP_CKPT_BEFORE: &str = "automatic checkpoint inside batches (before)";
const SWEEP_CKPT_AFTER: &str = "passive checkpoint between batches, off the gate";

async fn sweep_checkpoint_variants(
    opts: &Opts,
    res: &mut Results,
    accounts: u64,
    large: u64,
    path: &Path,
) -> Result<()> {
    let n = (large / 5).max(100_000);
    let baseline = Duration::from_millis(opts.sweep_baseline_ms);
    let open = |inside: bool| {
        let cfg = Config::from_url(&url(path)).map(|c| {
            c.with_durability(Durability::Full)
                .with_sqlite_sweep_autocheckpoint(inside)
        });
        async move { anyhow::Ok(persist::open(&cfg?).await?) }
    };
    let before = open(true).await?;
    let after = open(false).await?;
    for round in 0..2 {
        let mut order = [(SWEEP_CKPT_BEFORE, &before), (SWEEP_CKPT_AFTER, &after)];
        if round % 2 == 1 {
            order.reverse();
        }
        for (label, db) in order {
            load_growth_sessions(path, &["sessions"], (0, n), accounts, n)?;
            checkpoint(path)?;
            let (stats, rate) =
                sweep::run(db, T0 + 7200, opts.sweep_batch, accounts, n, baseline).await?;
            ensure!(
                stats.rows_deleted == n,
                "sweep deleted {} of {n}",
                stats.rows_deleted
            );
            push_sweep_as(res, "experiment", label, stats, rate);
        }
    }
    before.close().await;
    after.close().await;
    Ok(())
}

fn push_sweep(res: &mut Results, data_set: &'static str, stats: SweepStats, rate: f64) {
    push_sweep_as(res, data_set, PERSIST_VARIANT, stats, rate);
}

fn push_sweep_as(
    res: &mut Results,
    data_set: &'static str,
    variant: &'static str,
    stats: SweepStats,
    rate: f64,
) {
    let mut r = Record::blank(
        "sqlite",
        Some("full"),
        data_set,
        "sweep_expired",
        "persist",
        variant,
    );
    r.sessions_in_table = stats.rows_deleted;
    r.ops_per_sec = rate;
    r.sweep = Some(stats);
    res.push(r);
}

/// The sweep's batch statement in a loop on one raw connection, timing each
/// batch (BEGIN IMMEDIATE .. COMMIT, i.e. how long the write lock is held).
fn raw_sweep(path: &Path, batch: i64, autocheckpoint: bool) -> Result<BatchStats> {
    let c = raw_sqlite::connect(path, Sync::Full)?;
    if !autocheckpoint {
        c.pragma_update(None, "wal_autocheckpoint", 0)?;
    }
    let mut st = c.prepare(
        "DELETE FROM sessions WHERE token IN \
         (SELECT token FROM sessions WHERE expires_at <= ?1 LIMIT ?2)",
    )?;
    let mut times = Vec::new();
    let mut rows = 0u64;
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let n = st.execute(params![T0 + 7200, batch])? as u64;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        rows += n;
        if n < batch as u64 {
            break;
        }
    }
    let total_ms = start.elapsed().as_secs_f64() * 1000.0;
    drop(st);
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(BatchStats {
        rows,
        batch_size: batch,
        batches: times.len() as u64,
        max_ms: times.last().copied().unwrap_or(f64::NAN),
        p50_ms: times[times.len() / 2],
        total_ms,
    })
}
