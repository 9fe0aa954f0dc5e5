//! The PostgreSQL section: scratch databases created and dropped by the
//! benchmark, the implementations sequentially and at 16 tasks, growth and
//! sweep, peak RSS per implementation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use persist::{Config, Db};
use tokio_postgres::Client;

use crate::data::{token, Scale, PASS_HASH, SESSION_TTL, T0};
use crate::harness::{run_cell, Ctx, Entry, Subject};
use crate::ops::Op;
use crate::raw_pg::{connect_client, RawPg};
use crate::report::{Record, Results};
use crate::{
    cold, mixed, rss, sqlx_impl, sweep, Opts, Part, RAW_LANES, RAW_ONE, RAW_PG_SPLIT, RAW_POOL,
    SQLX_DEFAULT, SQLX_TUNED_PG,
};

pub const PERSIST_VARIANT: &str = "pool(8), reads share 2";

/// `url` with its database replaced by `db`. The benchmark compares the
/// drivers on plaintext connections (the raw and sqlx builds here have no
/// TLS), so `sslmode=disable` is added when the URL names none.
pub fn with_dbname(url: &str, db: &str) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .context("PostgreSQL URL must look like postgres://user@host:port/db")?;
    ensure!(
        scheme == "postgres" || scheme == "postgresql",
        "not a PostgreSQL URL: scheme {scheme}"
    );
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(a, _)| a);
    let mut params: Vec<&str> = query
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("dbname="))
                .collect()
        })
        .unwrap_or_default();
    match params.iter().find(|p| p.starts_with("sslmode=")) {
        Some(&"sslmode=disable") => {}
        Some(other) => bail!(
            "the benchmark compares drivers on plaintext connections; use sslmode=disable \
             (or no sslmode) instead of {other}"
        ),
        None => params.push("sslmode=disable"),
    }
    Ok(format!("{scheme}://{authority}/{db}?{}", params.join("&")))
}

async fn open_persist(url: &str) -> Result<Db> {
    Ok(persist::open(&Config::from_url(url)?).await?)
}

/// A scratch database of one cell on the server of a `--postgres-url`:
/// dropped first if a crashed run left it, created empty, reached in
/// plaintext through [`Scratch::url`] ([`with_dbname`]), removed with
/// [`Scratch::remove`] or [`Scratch::remove_or_warn`].
pub struct Scratch {
    admin: Client,
    name: String,
    /// The scratch database's URL.
    pub url: String,
}

impl Scratch {
    /// Creates the scratch database `name`.
    pub async fn create(postgres_url: &str, name: &str) -> Result<Scratch> {
        let admin = connect_client(&with_dbname(postgres_url, admin_db(postgres_url))?)
            .await
            .context("PostgreSQL (is it running? try scripts/with-postgres)")?;
        // Two calls: a multi-statement batch would run as one transaction
        // block, where DROP/CREATE DATABASE are refused.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        Ok(Scratch {
            url: with_dbname(postgres_url, name)?,
            name: name.to_string(),
            admin,
        })
    }

    /// Drops the scratch database.
    pub async fn remove(self) -> Result<()> {
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await?;
        Ok(())
    }

    /// Drops the scratch database; a failure is printed, not returned (the
    /// cell's own result is the one to report).
    pub async fn remove_or_warn(self) {
        let name = self.name.clone();
        if let Err(e) = self.remove().await {
            eprintln!("persist-bench: could not drop scratch database {name}: {e}");
        }
    }
}

pub async fn run(opts: &Opts, ctx: &Arc<Ctx>, res: &mut Results) -> Result<()> {
    let pid = std::process::id();
    let main_db = Scratch::create(&opts.postgres_url, &format!("persist_bench_{pid}")).await?;
    let out = inner(opts, ctx, res, &main_db.url).await;
    main_db.remove_or_warn().await;
    out
}

/// The growth part (lookups at two table sizes, then the sweep), run after
/// every backend's other parts (D-136; see `bench_sqlite::run_growth`).
pub async fn run_growth(opts: &Opts, ctx: &Arc<Ctx>, res: &mut Results) -> Result<()> {
    let pid = std::process::id();
    let growth_db =
        Scratch::create(&opts.postgres_url, &format!("persist_bench_{pid}_growth")).await?;
    let out = growth(opts, ctx, res, &growth_db.url).await;
    growth_db.remove_or_warn().await;
    out
}

/// The database named in the URL (where CREATE DATABASE is sent from).
fn admin_db(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split_once('?').map_or(rest, |(a, _)| a);
    match rest.split_once('/') {
        Some((_, db)) if !db.is_empty() => db,
        _ => "postgres",
    }
}

async fn load_accounts(c: &Client, n: u64) -> Result<()> {
    c.execute(
        "INSERT INTO accounts (email, email_key, username, username_key, pass_hash, created_at) \
         SELECT 'user' || i || '@bench.example', 'user' || i || '@bench.example', \
                'user' || i, 'user' || i, $2::bytea, $3::int8 \
         FROM generate_series(1, $1::int8) AS i ORDER BY i",
        &[&(n as i64), &PASS_HASH, &T0],
    )
    .await?;
    let r = c
        .query_one("SELECT min(user_id), max(user_id) FROM accounts", &[])
        .await?;
    ensure!(
        r.get::<_, i64>(0) == 1 && r.get::<_, i64>(1) == n as i64,
        "accounts did not get ids 1..={n}"
    );
    Ok(())
}

/// Sessions `from..to` (token digests computed by the server: the same
/// strings as `data::token`).
async fn load_sessions(c: &Client, from: u64, to: u64, accounts: u64, expires: &str) -> Result<()> {
    let mut lo = from;
    while lo < to {
        let hi = (lo + 250_000).min(to);
        c.execute(
            &format!(
                "INSERT INTO sessions (token, user_id, expires_at, created_at) \
                 SELECT sha256(convert_to('bench-token-' || lpad(i::text, 31, '0'), 'UTF8')), \
                        1 + i % $3::int8, {expires}, $4::int8 \
                 FROM generate_series($1::int8, $2::int8 - 1) AS i"
            ),
            &[&(lo as i64), &(hi as i64), &(accounts as i64), &T0],
        )
        .await?;
        lo = hi;
    }
    Ok(())
}

async fn load_main(url: &str, s: &Scale) -> Result<()> {
    let c = connect_client(url).await?;
    c.batch_execute("BEGIN").await?;
    load_accounts(&c, s.accounts).await?;
    load_sessions(
        &c,
        0,
        s.sessions,
        s.accounts,
        &format!("{}::int8", T0 + SESSION_TTL),
    )
    .await?;
    c.batch_execute(
        "INSERT INTO progression (user_id, level, xp) SELECT user_id, 1, 0 FROM accounts;
         INSERT INTO army_loadouts (user_id, element_id, army_ability_1, army_ability_2,
           army_ability_3, army_ability_4, ability_pawn, ability_knight, ability_bishop,
           ability_rook, ability_queen, ability_king, item_1, item_2, item_3, item_4, updated_at)
         SELECT user_id, (user_id % 5)::int4, 1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 1700000000
         FROM accounts;",
    )
    .await?;
    c.execute(
        "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) \
         SELECT u, 2 * f, $2::int8 FROM generate_series(1, $1::int8) AS u, \
         generate_series(0, 19) AS f",
        &[&(s.unlock_users as i64), &T0],
    )
    .await?;
    c.batch_execute("COMMIT").await?;
    c.batch_execute("VACUUM ANALYZE").await?;
    Ok(())
}

async fn sanity(db: &Db) -> Result<()> {
    let s = db.sessions().find_by_token(&token(0)).await?;
    ensure!(s.user_id.0 == 1, "session 0 belongs to user {}", s.user_id);
    let a = db.accounts().find_by_email("USER1@bench.example").await?;
    ensure!(a.user_id.0 == 1, "account key lookup");
    Ok(())
}

fn record(
    res: &mut Results,
    data_set: &'static str,
    sessions: u64,
    op: Op,
    c: usize,
    e: &Entry,
    samples: Vec<f64>,
) {
    res.push(Record::cell(
        "postgres", None, data_set, sessions, op, c, e, samples,
    ));
}

async fn inner(opts: &Opts, ctx: &Arc<Ctx>, res: &mut Results, main_url: &str) -> Result<()> {
    let scale = ctx.scale;
    let t = Instant::now();
    let db = open_persist(main_url).await?;
    db.migrate().await?;
    load_main(main_url, &scale).await?;
    sanity(&db).await?;
    eprintln!(
        "postgres: data set loaded in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let persist = Entry::new("persist", PERSIST_VARIANT, Subject::Persist(db.clone()));
    let raw_one = Entry::new(
        "raw",
        RAW_ONE,
        Subject::RawPg(RawPg::shared(main_url).await?),
    );
    let raw_pool = Entry::new(
        "raw",
        RAW_POOL,
        Subject::RawPg(RawPg::pool(main_url, 8, false).await?),
    );
    let raw_lanes = Entry::new(
        "raw",
        RAW_LANES,
        Subject::RawPg(RawPg::lanes(main_url, 2).await?),
    );
    let sqlx = Entry::new(
        "sqlx",
        SQLX_DEFAULT,
        Subject::SqlxPg(sqlx_impl::open_postgres(main_url).await?),
    );
    let sqlx_tuned = Entry::new(
        "sqlx",
        SQLX_TUNED_PG,
        Subject::SqlxPg(sqlx_impl::open_postgres_tuned(main_url).await?),
    );
    durability(
        res,
        main_url,
        &[&raw_one, &raw_pool, &raw_lanes, &sqlx, &sqlx_tuned],
    )
    .await?;
    let ops = Op::ALL
        .into_iter()
        .filter(|o| opts.wants(*o) && opts.runs(Part::Main));
    for op in ops {
        for c in [1, 16] {
            // One at a time, the limit is one connection; at 16 tasks, the
            // best of 8 exclusive connections, one pipelined connection and
            // (reads) persist's shape, 2 shared pipelined connections.
            // A transaction needs a connection of its own, so tasks cannot
            // pipeline transactions on one shared connection: at 16 tasks the
            // raw limit for *_tx is the 8-connection pool alone.
            let mut es = vec![persist.clone()];
            if c == 1 {
                es.push(raw_one.clone());
            } else if op.is_tx() {
                es.push(raw_pool.clone());
            } else {
                es.extend([raw_one.clone(), raw_pool.clone()]);
                if op.is_read() {
                    es.push(raw_lanes.clone());
                }
            }
            es.extend([sqlx.clone(), sqlx_tuned.clone()]);
            let samples = run_cell(&es, op, c, opts.timing, ctx, scale.sessions).await?;
            for (e, s) in es.iter().zip(samples) {
                record(res, "main", scale.sessions, op, c, e, s);
            }
            eprintln!("postgres {} x{c} done", op.name());
        }
    }
    if opts.runs(Part::Variants) {
        experiments(opts, ctx, res, main_url, &persist, &raw_one, &raw_pool).await?;
    }
    if opts.runs(Part::Mixed) || opts.runs(Part::Cold) {
        latency(opts, ctx, res, main_url, &persist, &db).await?;
    }
    for e in [
        &persist,
        &raw_one,
        &raw_pool,
        &raw_lanes,
        &sqlx,
        &sqlx_tuned,
    ] {
        e.subject.close().await;
    }
    drop((persist, raw_one, raw_pool, raw_lanes, sqlx, sqlx_tuned));

    if opts.runs(Part::Rss) {
        rss::measure_backend(res, "postgres", main_url, ctx, opts).await?;
    }
    Ok(())
}

/// `SHOW synchronous_commit` and `SHOW fsync` on every connection of each
/// implementation; all must be on.
async fn durability(res: &mut Results, url: &str, entries: &[&Entry]) -> Result<()> {
    let mut lines = Vec::new();
    for e in entries {
        let mut got = Vec::new();
        for (setting, sql) in [
            ("synchronous_commit", "SHOW synchronous_commit"),
            ("fsync", "SHOW fsync"),
        ] {
            let v: Vec<String> = match e.subject.as_ref() {
                Subject::RawPg(r) => r.pool_settings(sql).await?,
                Subject::SqlxPg(p) => {
                    // Every connection the pool may open, held at once.
                    let mut held = Vec::new();
                    for _ in 0..p.options().get_max_connections() {
                        held.push(p.acquire().await?);
                    }
                    let mut v = Vec::new();
                    for c in &mut held {
                        v.push(sqlx::query_scalar(sql).fetch_one(&mut **c).await?);
                    }
                    v
                }
                _ => Vec::new(),
            };
            ensure!(
                !v.is_empty() && v.iter().all(|x| x == "on"),
                "{} ({}) runs with {setting}={v:?}, expected on",
                e.implementation,
                e.variant
            );
            got.push(format!("{setting}={}", v.join(",")));
        }
        lines.push(format!(
            "postgres {} ({}): {}",
            e.implementation,
            e.variant,
            got.join(" ")
        ));
    }
    // persist's pooled connections are not reachable from outside; it sets
    // neither setting, so they run with the server's value for this role and
    // database, read here on a fresh connection as the same user.
    let c = connect_client(url).await?;
    let mut got = Vec::new();
    for setting in ["synchronous_commit", "fsync"] {
        let v: String = c
            .query_one(&format!("SHOW {setting}"), &[])
            .await?
            .try_get(0)?;
        ensure!(v == "on", "the server runs with {setting}={v}, expected on");
        got.push(format!("{setting}={v}"));
    }
    lines.push(format!(
        "postgres persist ({PERSIST_VARIANT}): {} (server value for this role and database on \
         a fresh connection; persist sets neither)",
        got.join(" ")
    ));
    for l in &lines {
        eprintln!("{l}");
    }
    res.setup.extend(lines);
    Ok(())
}

/// The mixed open-loop workload, the cold start and the calls on a user with
/// many sessions, persist against raw tokio-postgres in persist's shape.
async fn latency(
    opts: &Opts,
    ctx: &Arc<Ctx>,
    res: &mut Results,
    url: &str,
    persist: &Entry,
    db: &Db,
) -> Result<()> {
    let raw = Entry::new(
        "raw",
        RAW_PG_SPLIT,
        Subject::RawPgSplit(Box::new((
            RawPg::lanes(url, 2).await?,
            RawPg::pool(url, 8, false).await?,
        ))),
    );
    if opts.runs(Part::Mixed) {
        mixed::run("postgres", None, persist, &raw, db, opts.quick, ctx, res).await?;
    }
    if opts.runs(Part::Cold) {
        let n = if opts.quick { 200 } else { 2000 };
        let raw_one = Entry::new("raw", RAW_ONE, Subject::RawPg(RawPg::shared(url).await?));
        cold::many_sessions(
            "postgres",
            None,
            &[persist.clone(), raw_one],
            db,
            n,
            opts.timing,
            ctx,
            res,
        )
        .await?;
        let reps = if opts.quick { 3 } else { 15 };
        cold::cold_start(
            "postgres",
            None,
            "persist",
            PERSIST_VARIANT,
            reps,
            ctx,
            res,
            || async { Ok(Subject::Persist(open_persist(url).await?)) },
        )
        .await?;
        cold::cold_start("postgres", None, "raw", RAW_ONE, reps, ctx, res, || async {
            Ok(Subject::RawPg(RawPg::shared(url).await?))
        })
        .await?;
    }
    eprintln!("postgres: latency sections done");
    Ok(())
}

/// Design variants, as evidence for what limits persist on reads: persist
/// with reads sharing 0, 1 or 4 connections (the default shares 2); raw tokio-postgres on one connection checked
/// out exclusively (no pipelining); raw on 8 connections handed out
/// first-in-first-out (deadpool's default queue mode) instead of LIFO.
async fn experiments(
    opts: &Opts,
    ctx: &Arc<Ctx>,
    res: &mut Results,
    url: &str,
    persist: &Entry,
    raw_one: &Entry,
    raw_pool: &Entry,
) -> Result<()> {
    let es = vec![
        persist.clone(),
        shared_variant(url, 0, "pool(8), reads not shared").await?,
        shared_variant(url, 1, "pool(8), reads share 1").await?,
        shared_variant(url, 4, "pool(8), reads share 4").await?,
        raw_one.clone(),
        Entry::new(
            "raw",
            "1 connection, exclusive",
            Subject::RawPg(RawPg::pool(url, 1, false).await?),
        ),
        raw_pool.clone(),
        Entry::new(
            "raw",
            "8 connections, FIFO",
            Subject::RawPg(RawPg::pool(url, 8, true).await?),
        ),
    ];
    for op in [Op::SessionLookup, Op::UnlockList] {
        for c in [1, 16] {
            let samples = run_cell(&es, op, c, opts.timing, ctx, ctx.scale.sessions).await?;
            for (e, s) in es.iter().zip(samples) {
                record(res, "experiment", ctx.scale.sessions, op, c, e, s);
            }
        }
    }
    eprintln!("postgres design variants done");
    for e in &es[1..4] {
        e.subject.close().await;
    }
    Ok(())
}

/// persist with the default pool and `shared` connections for reads.
async fn shared_variant(url: &str, shared: usize, label: &'static str) -> Result<Entry> {
    let config = Config::from_url(url)?.with_shared_read_connections(shared);
    Ok(Entry::new(
        "persist",
        label,
        Subject::Persist(persist::open(&config).await?),
    ))
}

/// Session lookups, sequential and by 16 tasks, with `sessions` rows in the
/// growth table.
async fn growth_lookups(
    es: &[Entry],
    sessions: u64,
    opts: &Opts,
    ctx: &Arc<Ctx>,
    res: &mut Results,
) -> Result<()> {
    for c in [1, 16] {
        // Sequentially, the raw limit is one connection (the other shapes
        // add nothing but rows to read).
        let es: Vec<Entry> = es
            .iter()
            .filter(|e| c == 16 || e.implementation == "persist" || e.variant == RAW_ONE)
            .cloned()
            .collect();
        let es = &es[..];
        let s = run_cell(es, Op::SessionLookup, c, opts.timing, ctx, sessions).await?;
        for (e, s) in es.iter().zip(s) {
            record(res, "growth", sessions, Op::SessionLookup, c, e, s);
        }
    }
    Ok(())
}

async fn growth(opts: &Opts, ctx: &Arc<Ctx>, res: &mut Results, url: &str) -> Result<()> {
    let scale = ctx.scale;
    let db = open_persist(url).await?;
    db.migrate().await?;
    // Growth sessions expire in creation order within the hour after T0 (as
    // real sessions do: created_at + TTL); the sweep runs at T0 + 2h.
    let expires = format!("1700000000::int8 + (i * 3600 / {})", scale.growth_large);
    let expires = expires.as_str();
    let loader = connect_client(url).await?;
    load_accounts(&loader, scale.growth_accounts).await?;
    load_sessions(
        &loader,
        0,
        scale.growth_small,
        scale.growth_accounts,
        expires,
    )
    .await?;
    loader.batch_execute("VACUUM ANALYZE").await?;
    loader.batch_execute("CHECKPOINT").await?;
    let es = vec![
        Entry::new("persist", PERSIST_VARIANT, Subject::Persist(db.clone())),
        Entry::new("raw", RAW_ONE, Subject::RawPg(RawPg::shared(url).await?)),
        Entry::new(
            "raw",
            RAW_LANES,
            Subject::RawPg(RawPg::lanes(url, 2).await?),
        ),
        Entry::new(
            "raw",
            RAW_POOL,
            Subject::RawPg(RawPg::pool(url, 8, false).await?),
        ),
    ];
    growth_lookups(&es, scale.growth_small, opts, ctx, res).await?;
    let t = Instant::now();
    load_sessions(
        &loader,
        scale.growth_small,
        scale.growth_large,
        scale.growth_accounts,
        expires,
    )
    .await?;
    loader.batch_execute("VACUUM ANALYZE").await?;
    loader.batch_execute("CHECKPOINT").await?;
    eprintln!(
        "postgres: growth set at {} sessions in {:.1}s",
        scale.growth_large,
        t.elapsed().as_secs_f64()
    );
    growth_lookups(&es, scale.growth_large, opts, ctx, res).await?;
    loader.batch_execute("CHECKPOINT").await?;
    let (stats, rate) = sweep::run(
        &db,
        T0 + 7200,
        opts.sweep_batch,
        scale.growth_accounts,
        scale.growth_large,
        Duration::from_millis(opts.sweep_baseline_ms),
    )
    .await?;
    ensure!(
        stats.rows_deleted == scale.growth_large,
        "sweep deleted {} of {}",
        stats.rows_deleted,
        scale.growth_large
    );
    eprintln!("postgres: sweep done in {:.0} ms", stats.total_ms);
    let mut r = Record::blank(
        "postgres",
        None,
        "growth",
        "sweep_expired",
        "persist",
        PERSIST_VARIANT,
    );
    r.sessions_in_table = scale.growth_large;
    r.ops_per_sec = rate;
    r.sweep = Some(stats);
    res.push(r);
    for e in &es {
        e.subject.close().await;
    }
    db.close().await;
    Ok(())
}
