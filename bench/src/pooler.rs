//! `persist-bench --pgbouncer`: persist behind a transaction pooler against
//! the raw driver behind the same pooler, and the direct-mode pair beside
//! it.
//!
//! It starts a private PgBouncer (Debian's, default settings,
//! `pool_mode = transaction`, trust authentication) in front of the
//! `--postgres-url` server, creates a scratch database, and measures a
//! session lookup (the hottest path) and a write (`progression.add_xp`) by
//! one task and by 16:
//!
//! - `persist txpool`: persist with `?pooler=transaction` through the
//!   bouncer (unnamed statements, each in one round trip), pool of 16;
//! - `raw txpool`: tokio-postgres through the same bouncer with the same
//!   statement style (`query_typed`: unnamed, typed, one round trip), one
//!   client per task;
//! - `persist direct` and `raw direct`: the same on a direct connection
//!   (persist's default mode: statements prepared once per connection;
//!   raw: prepared statements).
//!
//! Implementations take turns window by window (interleaved rounds); the
//! ratios are ratios of means with paired bootstrap 95 % intervals
//! (`stats::paired_ratio`) and the verdict rule of `stats::verdict`.
//! Target: persist >= 0.9x raw in each pooler cell.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use persist::{Config, Db, UserId};
use sha2::{Digest, Sha256};
use tokio_postgres::types::Type;

use crate::stats::{paired_ratio, verdict, Verdict};

const USERS: i64 = 512;
const AT: i64 = 1_700_000_000;
const LOOKUP: &str = "SELECT user_id, created_at, expires_at FROM sessions WHERE token = $1";
const ADD_XP: &str = "UPDATE progression SET xp = xp + $2::int8, version = version + 1 \
     WHERE user_id = $1 AND CASE WHEN $2::int8 >= 0 THEN xp <= 9223372036854775807 - $2::int8 \
     ELSE xp + $2::int8 >= 0 END RETURNING level, xp";

fn token(i: i64) -> String {
    format!("pooler-bench-token-{i:024}")
}

/// A private PgBouncer, killed on drop.
struct Bouncer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn start_bouncer(target_port: u16) -> Result<Bouncer> {
    let program = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("pgbouncer not found (apt-get install -y pgbouncer)")?;
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("persist-bench-bouncer-")
        .tempdir_in("/tmp")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let p = dir.path();
    std::fs::write(p.join("users.txt"), "\"postgres\" \"\"\n")?;
    std::fs::write(
        p.join("pgbouncer.ini"),
        format!(
            "[databases]\n* = host=127.0.0.1 port={target_port}\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
             logfile = {log}\n",
            users = p.join("users.txt").display(),
            log = p.join("pgbouncer.log").display(),
        ),
    )?;
    let mut cmd = Command::new(program);
    if root {
        for f in [
            p.to_path_buf(),
            p.join("users.txt"),
            p.join("pgbouncer.ini"),
        ] {
            Command::new("chown").arg("postgres").arg(&f).status()?;
        }
        cmd.arg("-u").arg("postgres");
    }
    let child = cmd
        .arg(p.join("pgbouncer.ini"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start pgbouncer")?;
    let bouncer = Bouncer {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "pgbouncer did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(bouncer)
}

async fn seed(db: &Db) -> Result<()> {
    crate::data::seed_players(db, USERS, "pooler").await?;
    for i in 1..=USERS {
        db.sessions()
            .create(&token(i), UserId(i), AT, AT + 1_000_000_000)
            .await?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Lookup,
    AddXp,
}

/// One raw client and how it sends statements.
struct RawClient {
    c: tokio_postgres::Client,
    /// Direct: prepared lookup and add_xp; through the pooler: none (unnamed).
    prepared: Option<[tokio_postgres::Statement; 2]>,
}

impl RawClient {
    async fn open(url: &str, prepare: bool) -> Result<Self> {
        let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let prepared = match prepare {
            true => Some([c.prepare(LOOKUP).await?, c.prepare(ADD_XP).await?]),
            false => None,
        };
        Ok(RawClient { c, prepared })
    }

    async fn run(&self, op: Op, i: i64) -> Result<()> {
        let user = 1 + i % USERS;
        match (op, &self.prepared) {
            (Op::Lookup, p) => {
                let digest: Vec<u8> = Sha256::digest(token(user).as_bytes()).to_vec();
                let row = match p {
                    Some(st) => self.c.query_opt(&st[0], &[&digest]).await?,
                    None => {
                        self.c
                            .query_typed_opt(LOOKUP, &[(&digest, Type::BYTEA)])
                            .await?
                    }
                };
                std::hint::black_box(row.context("session")?.get::<_, i64>(0));
            }
            (Op::AddXp, Some(st)) => {
                std::hint::black_box(self.c.query_opt(&st[1], &[&user, &1i64]).await?);
            }
            (Op::AddXp, None) => {
                std::hint::black_box(
                    self.c
                        .query_typed_opt(ADD_XP, &[(&user, Type::INT8), (&1i64, Type::INT8)])
                        .await?,
                );
            }
        }
        Ok(())
    }
}

async fn persist_op(db: &Db, op: Op, i: i64) -> Result<()> {
    let user = 1 + i % USERS;
    match op {
        Op::Lookup => {
            std::hint::black_box(db.sessions().find_by_token(&token(user)).await?);
        }
        Op::AddXp => {
            std::hint::black_box(db.progression().add_xp(UserId(user), 1).await?);
        }
    }
    Ok(())
}

/// One implementation of one cell.
enum Imp {
    Persist(Db),
    Raw(Vec<Arc<RawClient>>),
}

/// Operations per second of `imp` running `op` on `tasks` tasks for `window`.
async fn window(imp: &Imp, op: Op, tasks: usize, window: Duration, seq: i64) -> Result<f64> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (db, raw) = match imp {
            Imp::Persist(db) => (Some(db.clone()), None),
            Imp::Raw(clients) => (None, Some(Arc::clone(&clients[t]))),
        };
        set.spawn(async move {
            let mut n = 0u64;
            let mut i = seq + t as i64 * 7919;
            while start.elapsed() < window {
                match (&db, &raw) {
                    (Some(db), _) => persist_op(db, op, i).await?,
                    (_, Some(raw)) => raw.run(op, i).await?,
                    _ => unreachable!(),
                }
                n += 1;
                i += 1;
            }
            anyhow::Ok(n)
        });
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Measures `persist` against `raw` in one cell and prints the verdict.
async fn cell(
    name: &str,
    imps: [&Imp; 2],
    op: Op,
    tasks: usize,
    rounds: usize,
    w: Duration,
) -> Result<Verdict> {
    let mut rates = [Vec::new(), Vec::new()];
    let mut seq = 0i64;
    for round in 0..=rounds {
        for k in 0..2 {
            let j = (k + round) % 2;
            seq += 1_000_003;
            let r = window(imps[j], op, tasks, w, seq).await?;
            if round > 0 {
                rates[j].push(r);
            }
        }
    }
    let e = paired_ratio(&[rates[0].clone()], &[rates[1].clone()]);
    let v = verdict(Some(e), 0.9, true);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "{name:<34} persist {:>8.0}/s  raw {:>8.0}/s  ratio {:.3} [{:.3}, {:.3}]  {}",
        mean(&rates[0]),
        mean(&rates[1]),
        e.value,
        e.lo,
        e.hi,
        v.label()
    );
    Ok(v)
}

async fn measure(direct_url: &str, pooled_url: &str, quick: bool) -> Result<()> {
    let (rounds, w) = if quick {
        (6, Duration::from_millis(100))
    } else {
        (20, Duration::from_millis(300))
    };
    let open = |url: String| async move {
        let db = persist::open(&Config::from_url(&url)?.with_pool_size(17)).await?;
        anyhow::Ok(db)
    };
    let pooled_persist = Imp::Persist(open(format!("{pooled_url}&pooler=transaction")).await?);
    let direct_persist = Imp::Persist(open(direct_url.to_string()).await?);
    let mut pooled_raw = Vec::new();
    let mut direct_raw = Vec::new();
    for _ in 0..16 {
        pooled_raw.push(Arc::new(RawClient::open(pooled_url, false).await?));
        direct_raw.push(Arc::new(RawClient::open(direct_url, true).await?));
    }
    let (pooled_raw, direct_raw) = (Imp::Raw(pooled_raw), Imp::Raw(direct_raw));
    println!(
        "persist / raw, {rounds} interleaved rounds of {} ms windows per implementation \
         (ratio of means, paired bootstrap 95 % interval; target >= 0.90 behind the pooler)",
        w.as_millis()
    );
    let mut verdicts = Vec::new();
    for (op, op_name) in [(Op::Lookup, "session_lookup"), (Op::AddXp, "add_xp")] {
        for tasks in [1, 16] {
            let v = cell(
                &format!("pgbouncer-tx {op_name} {tasks} task(s)"),
                [&pooled_persist, &pooled_raw],
                op,
                tasks,
                rounds,
                w,
            )
            .await?;
            verdicts.push(v);
            cell(
                &format!("direct     {op_name} {tasks} task(s)"),
                [&direct_persist, &direct_raw],
                op,
                tasks,
                rounds,
                w,
            )
            .await?;
        }
    }
    for imp in [pooled_persist, direct_persist] {
        if let Imp::Persist(db) = imp {
            db.close().await;
        }
    }
    Ok(())
}

/// Runs the cell against the server of `postgres_url`.
pub async fn run(postgres_url: &str, quick: bool) -> Result<()> {
    let server: tokio_postgres::Config = postgres_url.parse()?;
    let port = server.get_ports().first().copied().unwrap_or(5432);
    let bouncer = tokio::task::spawn_blocking(move || start_bouncer(port)).await??;
    let name = format!("persist_bench_pooler_{}", std::process::id());
    let scratch = crate::bench_pg::Scratch::create(postgres_url, &name).await?;
    let out = async {
        let direct = &scratch.url;
        let db = persist::open(&Config::from_url(direct)?).await?;
        seed(&db).await?;
        db.close().await;
        let pooled = format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            bouncer.port
        );
        measure(direct, &pooled, quick).await
    }
    .await;
    scratch.remove_or_warn().await;
    drop(bouncer);
    out
}
