//! The exactly-once battle end (issue 18) next to today's `battle_end_tx`.
//!
//! `persist-bench --battle-once [--quick] [--backend ...]` measures, per
//! backend and on one task:
//!
//! - `persist once`: `db.battles().apply(..)`, each call a new battle id
//!   (the first delivery of a report: the full cost);
//! - `raw once`: the raw driver running the same SQL in its own
//!   transaction (claim insert, guarded xp update, flag insert, answer
//!   update; `BEGIN IMMEDIATE` on SQLite, `BEGIN` on PostgreSQL);
//! - `persist tx`: today's non-idempotent battle end, a unit of work with
//!   `add_xp` and `grant_many`.
//!
//! Implementations run interleaved, one window each per round; every round
//! gives one ratio `persist once / raw once` and one `persist once /
//! persist tx`. The report gives the median of the rounds and the 2.5th to
//! 97.5th percentile of the per-round ratios (the spread a reader should
//! expect on this machine; timings are noisy, so no single figure is
//! trusted). Self-contained: it creates and drops its own SQLite file and
//! PostgreSQL database.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use persist::{BattleEnd, Config, Db, UserId};

/// Players the battles are spread over.
const USERS: i64 = 64;

/// Three flags per battle, most already held after the first rounds.
fn flags(i: u64) -> [i32; 3] {
    let i = i32::try_from(i % 20).unwrap_or(0);
    [1 + i, 21 + i, 41]
}

/// The same statements persist runs for one first delivery (SQLite).
const LITE: [&str; 4] = [
    "INSERT INTO battle_results (user_id, battle_id, xp_delta, flags, ended_at, level, xp, \
     granted) VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, '') ON CONFLICT (user_id, battle_id) DO NOTHING",
    "UPDATE progression SET xp = xp + ?2, version = version + 1 WHERE user_id = ?1 AND \
     CASE WHEN ?2 >= 0 THEN xp <= 9223372036854775807 - ?2 ELSE xp + ?2 >= 0 END \
     RETURNING level, xp",
    "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) \
     SELECT ?1, value, ?3 FROM json_each(?2) WHERE true \
     ON CONFLICT (user_id, flag_id) DO NOTHING RETURNING flag_id",
    "UPDATE battle_results SET level = ?3, xp = ?4, granted = ?5 \
     WHERE user_id = ?1 AND battle_id = ?2",
];

/// The same statements persist runs for one first delivery (PostgreSQL).
const PG: [&str; 4] = [
    "INSERT INTO battle_results (user_id, battle_id, xp_delta, flags, ended_at, level, xp, \
     granted) VALUES ($1, $2, $3, $4, $5, 0, 0, '') ON CONFLICT (user_id, battle_id) DO NOTHING",
    "UPDATE progression SET xp = xp + $2::int8, version = version + 1 WHERE user_id = $1 AND \
     CASE WHEN $2::int8 >= 0 THEN xp <= 9223372036854775807 - $2::int8 \
     ELSE xp + $2::int8 >= 0 END RETURNING level, xp",
    "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) \
     SELECT $1, f, $3 FROM unnest($2::int4[]) AS f \
     ON CONFLICT (user_id, flag_id) DO NOTHING RETURNING flag_id",
    "UPDATE battle_results SET level = $3, xp = $4, granted = $5 \
     WHERE user_id = $1 AND battle_id = $2",
];

const AT: i64 = 1_700_000_000;

fn list(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

enum Raw {
    Lite(rusqlite::Connection),
    Pg(tokio_postgres::Client, Vec<tokio_postgres::Statement>),
}

impl Raw {
    async fn once(&self, user: i64, battle: &str, i: u64) -> Result<()> {
        let mut fl = flags(i).to_vec();
        fl.sort_unstable();
        match self {
            Raw::Lite(c) => {
                c.execute_batch("BEGIN IMMEDIATE")?;
                let body = || -> rusqlite::Result<()> {
                    let json = format!("[{}]", list(&fl));
                    c.prepare_cached(LITE[0])?.execute(rusqlite::params![
                        user,
                        battle,
                        25i64,
                        list(&fl),
                        AT
                    ])?;
                    let (level, xp): (i32, i64) = c
                        .prepare_cached(LITE[1])?
                        .query_row(rusqlite::params![user, 25i64], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?;
                    let mut st = c.prepare_cached(LITE[2])?;
                    let mut new = st
                        .query_map(rusqlite::params![user, json, AT], |r| r.get::<_, i32>(0))?
                        .collect::<rusqlite::Result<Vec<i32>>>()?;
                    new.sort_unstable();
                    c.prepare_cached(LITE[3])?.execute(rusqlite::params![
                        user,
                        battle,
                        level,
                        xp,
                        list(&new)
                    ])?;
                    Ok(())
                };
                match body() {
                    Ok(()) => c.execute_batch("COMMIT")?,
                    Err(e) => {
                        c.execute_batch("ROLLBACK")?;
                        return Err(e.into());
                    }
                }
            }
            Raw::Pg(c, st) => {
                c.batch_execute("BEGIN").await?;
                let fl_text = list(&fl);
                c.execute(&st[0], &[&user, &battle, &25i64, &fl_text, &AT])
                    .await?;
                let r = c.query_one(&st[1], &[&user, &25i64]).await?;
                let (level, xp): (i32, i64) = (r.get(0), r.get(1));
                let rows = c.query(&st[2], &[&user, &fl, &AT]).await?;
                let mut new: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
                new.sort_unstable();
                c.execute(&st[3], &[&user, &battle, &level, &xp, &list(&new)])
                    .await?;
                c.batch_execute("COMMIT").await?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Imp {
    PersistOnce,
    RawOnce,
    PersistTx,
}

async fn one(db: &Db, raw: &Raw, imp: Imp, tag: &str, i: u64) -> Result<()> {
    let user = 1 + (i as i64 % USERS);
    let battle = format!("{tag}-{i}");
    match imp {
        Imp::PersistOnce => {
            let f = flags(i);
            let r = db
                .battles()
                .apply(&BattleEnd {
                    user_id: UserId(user),
                    battle_id: &battle,
                    xp: 25,
                    flags: &f,
                    at: AT,
                })
                .await?;
            std::hint::black_box(r);
        }
        Imp::RawOnce => raw.once(user, &battle, i).await?,
        Imp::PersistTx => {
            let tx = db.begin().await?;
            std::hint::black_box(tx.progression().add_xp(UserId(user), 25).await?);
            std::hint::black_box(tx.unlocks().grant_many(UserId(user), &flags(i), AT).await?);
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Mean of per-round ratios with a normal-approximation 95 % interval, and
/// the verdict against `bound`: met only when the whole interval clears it,
/// missed when it is all below, otherwise undecided.
fn mean_ci_verdict(v: &[f64], bound: f64) -> (f64, f64, f64, &'static str) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let e = crate::stats::Estimate::around(mean, 1.96 * (var / n).sqrt());
    let verdict = crate::stats::verdict(Some(e), bound, true).label();
    (mean, e.lo, e.hi, verdict)
}

/// The 2.5th and 97.5th percentiles (nearest rank) and the median.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
    (at(0.5), at(0.025), at(0.975))
}

async fn measure(name: &str, db: &Db, raw: &Raw, rounds: usize, ops: u64) -> Result<()> {
    let imps = [Imp::PersistOnce, Imp::RawOnce, Imp::PersistTx];
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    let mut seq = 0u64;
    for round in 0..rounds {
        // Rotate the order so no implementation always runs first.
        for k in 0..imps.len() {
            let j = (k + round) % imps.len();
            let started = Instant::now();
            for _ in 0..ops {
                seq += 1;
                one(db, raw, imps[j], &format!("r{round}i{j}"), seq).await?;
            }
            rates[j].push(ops as f64 / started.elapsed().as_secs_f64());
        }
    }
    let ratio = |a: usize, b: usize| -> Vec<f64> {
        rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect()
    };
    let (vs_raw, vs_tx) = (spread(&ratio(0, 1)), spread(&ratio(0, 2)));
    println!(
        "{name:<9} persist once {:>7.0}/s   raw once {:>7.0}/s   persist tx {:>7.0}/s",
        spread(&rates[0]).0,
        spread(&rates[1]).0,
        spread(&rates[2]).0
    );
    println!(
        "{:<9} persist once / raw once   {:.2}x (rounds 2.5-97.5%: {:.2}..{:.2}; target >= 0.90)",
        "", vs_raw.0, vs_raw.1, vs_raw.2
    );
    let (mean, lo, hi, verdict) = mean_ci_verdict(&ratio(0, 1), 0.9);
    println!(
        "{:<9} persist once / raw once   mean {mean:.2}x, 95 % CI {lo:.2}..{hi:.2}: {verdict}",
        ""
    );
    println!(
        "{:<9} persist once / persist tx {:.2}x (rounds 2.5-97.5%: {:.2}..{:.2}; the cost of \
         exactly-once)",
        "", vs_tx.0, vs_tx.1, vs_tx.2
    );
    Ok(())
}

/// Runs the comparison on the chosen backends.
pub async fn run(
    quick: bool,
    sqlite: bool,
    postgres: bool,
    postgres_url: &str,
    dir: &Path,
) -> Result<()> {
    // 120 rounds (about 15 s per backend). At 15 the fsync-bound SQLite
    // cell's interval was too wide to decide (0.93 [0.86, 1.00]); at 40 the
    // reference run of 2026-12-06 still was (0.91 [0.87, 0.95]): per-round
    // ratios spread 0.69..1.14 there, so 40 rounds give +-0.04, too wide for
    // a ratio between 0.90 and 0.95. Declared before the next run, never
    // extended after one.
    let (rounds, ops) = if quick { (3, 40) } else { (120, 200) };
    println!(
        "Exactly-once battle end, one task, {rounds} rounds x {ops} battles per implementation \
         (medians; ratios per round)"
    );
    if sqlite {
        let tmp = tempfile::tempdir_in(dir)?;
        let path = tmp.path().join("battle_once.db");
        let db = persist::open(&Config::from_url(&format!("sqlite://{}", path.display()))?).await?;
        crate::data::seed_players(&db, USERS, "bench").await?;
        let c = rusqlite::Connection::open(&path)?;
        c.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON")?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        let raw = Raw::Lite(c);
        measure("sqlite", &db, &raw, rounds, ops).await?;
        db.close().await;
    }
    if postgres {
        let scratch = crate::bench_pg::Scratch::create(
            postgres_url,
            &format!("persist_bench_once_{}", std::process::id()),
        )
        .await?;
        let out = async {
            // Plaintext for both, as every PostgreSQL cell: the raw client
            // here has no TLS (with the URL's default sslmode=prefer,
            // persist would talk TLS to a server with ssl=on).
            let url = &scratch.url;
            let db = persist::open(&Config::from_url(url)?).await?;
            crate::data::seed_players(&db, USERS, "bench").await?;
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let mut st = Vec::new();
            for sql in PG {
                st.push(c.prepare(sql).await?);
            }
            let raw = Raw::Pg(c, st);
            measure("postgres", &db, &raw, rounds, ops).await?;
            db.close().await;
            anyhow::Ok(())
        }
        .await;
        scratch.remove_or_warn().await;
        out?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_reports_median_and_tails() {
        let v: Vec<f64> = (1..=41).map(f64::from).collect();
        assert_eq!(spread(&v), (21.0, 2.0, 40.0));
    }
}
