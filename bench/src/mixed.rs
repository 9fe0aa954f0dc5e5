//! Tail latency under a game-shaped load: an open-loop mixed workload.
//!
//! 1,000 simulated players each send calls on a fixed schedule (player `j`'s
//! `k`-th call is due at `(j + k * 1000) / rate` seconds), so the offered
//! rate is constant whatever the server does. A call's latency runs from
//! its *intended* send time, not from when it was actually sent: a player
//! whose previous call was slow sends late, and that lateness counts
//! (coordinated omission corrected, as wrk2 does). Latencies go into one
//! HdrHistogram per operation (microseconds, 3 significant digits).
//!
//! The rate climbs step by step until neither implementation sustains it;
//! at each step persist and the raw driver (in persist's connection shape)
//! run the same mix, in alternating order. Each implementation's saturation
//! rate is then narrowed by bisection between its highest sustained step and
//! the next one (D-136), so a small capacity difference near a step does not
//! read as a whole step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hdrhistogram::Histogram;
use persist::{Db, UserId};
use tokio::time::Instant;

use crate::data::{login_token, mix, SESSION_TTL, T0};
use crate::harness::{Ctx, Entry};
use crate::ops::Op;
use crate::report::{MixedStats, OpLatency, Record, Results};

/// Calls of an operation (on each side) below which its p99 ratio is not
/// judged.
pub const MIN_CALLS: u64 = 100;

/// Simulated players (concurrent senders).
pub const PLAYERS: usize = 1000;

/// A rate is sustained when at least this share of the offered calls
/// completes per second over the step...
const SUSTAIN_SHARE: f64 = 0.95;
/// ...and the p99 over every call stays under this bound (ms).
pub const P99_BOUND_MS: f64 = 50.0;

/// Bisection rounds after the climb (D-136): each halves the gap, on a
/// log scale, between an implementation's highest sustained rate and the
/// lowest rate above it that it did not sustain; two rounds narrow a x1.25
/// step to x1.057 (x2 in quick mode to x1.19).
pub const REFINE_ROUNDS: usize = 2;

/// The mix, in calls per thousand. From CANON's flows, per player-hour of
/// play: one login (or, for a few, a registration) and one logout; about
/// ten battles, each with the loadout screen read (and every other one
/// saved), the end of battle (xp + unlocks) and the results screen
/// (progression and unlocks read); and a session lookup on every
/// authenticated request: the calls above plus the WebSocket binds and
/// lobby requests, about 60. That is 60 : 10 : 10 : 10 : 10 : 5 : 1 : 1 :
/// 0.5, normalised below.
pub const MIX: [(Op, u64); 9] = [
    (Op::SessionLookup, 558),
    (Op::LoadoutGet, 93),
    (Op::ProgressionGet, 93),
    (Op::UnlockList, 93),
    (Op::BattleEndTx, 93),
    (Op::LoadoutSave, 47),
    (Op::Login, 9),
    (Op::Logout, 9),
    (Op::Register, 5),
];

fn pick(seq: u64) -> usize {
    let total: u64 = MIX.iter().map(|(_, w)| w).sum();
    let mut r = mix(seq ^ 0xA5A5_5A5A) % total;
    for (i, (_, w)) in MIX.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= w;
    }
    0
}

/// Sessions a step's logouts end: created before the step (not measured),
/// handed out in order.
struct Logouts {
    first: u64,
    end: u64,
    next: AtomicU64,
}

impl Logouts {
    /// Creates `n` login sessions through persist in one unit of work.
    async fn seed(db: &Db, ctx: &Ctx, n: u64) -> Result<Self> {
        let first = ctx.seq.fetch_add(n, Ordering::Relaxed);
        let tx = db.begin().await?;
        for s in first..first + n {
            let user = UserId((1 + mix(s) % ctx.scale.accounts) as i64);
            tx.sessions()
                .create(&login_token(s), user, T0, T0 + SESSION_TTL)
                .await?;
        }
        tx.commit().await?;
        Ok(Logouts {
            first,
            end: first + n,
            next: AtomicU64::new(first),
        })
    }

    fn take(&self) -> Result<u64> {
        let s = self.next.fetch_add(1, Ordering::Relaxed);
        ensure!(
            s < self.end,
            "more logouts than seeded sessions ({})",
            self.end - self.first
        );
        Ok(s)
    }
}

/// One step: `entry` under the mix at `rate` calls/s for `secs`.
async fn step(entry: &Entry, db: &Db, rate: f64, secs: f64, ctx: &Arc<Ctx>) -> Result<MixedStats> {
    let calls = (rate * secs).ceil() as u64;
    let logouts = Arc::new(Logouts::seed(db, ctx, calls * 2 / 100 + 50).await?);
    let sessions = ctx.scale.sessions;
    let start = Instant::now() + Duration::from_millis(20);
    let period = 1.0 / rate;
    let mut tasks = Vec::with_capacity(PLAYERS);
    for j in 0..PLAYERS {
        let s = Arc::clone(&entry.subject);
        let ctx = Arc::clone(ctx);
        let logouts = Arc::clone(&logouts);
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<(usize, u64)> = Vec::new();
            let mut k = 0u64;
            loop {
                let n = j as u64 + k * PLAYERS as u64;
                if n >= calls {
                    break;
                }
                let due = start + Duration::from_secs_f64(n as f64 * period);
                // The timer fires on a 1 ms tick: sleep to just before the
                // due time, then yield until it, so the send is not up to
                // a tick late.
                let early = due.checked_sub(Duration::from_millis(1)).unwrap_or(due);
                tokio::time::sleep_until(early).await;
                while Instant::now() < due {
                    tokio::task::yield_now().await;
                }
                let mut x = ctx.inputs(sessions);
                let i = pick(x.seq);
                let op = MIX[i].0;
                if op == Op::Logout {
                    x.logout = logouts.take()?;
                }
                s.run(op, &x)
                    .await
                    .with_context(|| format!("mixed {}", op.name()))?;
                let us = Instant::now().saturating_duration_since(due).as_micros() as u64;
                lat.push((i, us.max(1)));
                k += 1;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut hists: Vec<Histogram<u64>> = (0..MIX.len())
        .map(|_| Histogram::new_with_bounds(1, 600_000_000, 3))
        .collect::<Result<_, _>>()?;
    let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for t in tasks {
        for (i, us) in t.await?? {
            hists[i].saturating_record(us);
            all.saturating_record(us);
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(secs);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let achieved = all.len() as f64 / elapsed;
    let all_p99 = ms(&all, 0.99);
    Ok(MixedStats {
        offered: rate,
        achieved,
        seconds: elapsed,
        all_p99_ms: all_p99,
        sustained: achieved >= SUSTAIN_SHARE * rate && all_p99 <= P99_BOUND_MS,
        ops: MIX
            .iter()
            .zip(&hists)
            .map(|((op, _), h)| OpLatency {
                op: op.name().to_string(),
                count: h.len(),
                p50_ms: ms(h, 0.5),
                p99_ms: ms(h, 0.99),
                p999_ms: ms(h, 0.999),
                max_ms: h.max() as f64 / 1000.0,
            })
            .collect(),
    })
}

/// Rate steps: from `first`, times `factor` each step, up to `max`.
pub fn rates(quick: bool) -> (Vec<f64>, f64) {
    let (first, factor, max, secs): (f64, f64, f64, f64) = if quick {
        (100.0, 2.0, 64_000.0, 0.5)
    } else {
        (100.0, 1.25, 100_000.0, 5.0)
    };
    let mut v = vec![first];
    loop {
        let prev = v[v.len() - 1];
        // Rounded to tens, and always above the previous step.
        let next = ((prev * factor / 10.0).round() * 10.0).max(prev + 10.0);
        if next > max {
            break;
        }
        v.push(next);
    }
    (v, secs)
}

/// A rate both implementations sustained, with (persist's p99, raw's p99,
/// the fewer calls of the two) per operation there.
type BothSustained = (f64, Vec<(f64, f64, u64)>);

/// Of the climb steps both implementations sustained (in climb order), the
/// one the p99 ratios are judged at: the last but one, or the only one
/// (D-142). At the last one, one side may be at its knee, where p99 is
/// queueing and a small difference in capacity (which the saturation target
/// judges) shows as a large ratio. A step only one side sustained is never
/// judged (the other side is past its knee there), so when one lies between
/// the last two, the judged step is two climb steps below the top one.
fn judged<T>(both: &[T]) -> Option<&T> {
    match both.len() {
        0 => None,
        1 => both.first(),
        n => both.get(n - 2),
    }
}

/// Runs the mix on persist and the raw driver at climbing rates, records
/// every step, and derives the saturation ratio and the p99 ratios.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    backend: &'static str,
    durability: Option<&'static str>,
    persist: &Entry,
    raw: &Entry,
    db: &Db,
    quick: bool,
    ctx: &Arc<Ctx>,
    res: &mut Results,
) -> Result<()> {
    let (rates, secs) = rates(quick);
    let mut best: [Option<f64>; 2] = [None, None];
    let mut both: Vec<BothSustained> = Vec::new();
    let mut tried = 0;
    for (n, &rate) in rates.iter().enumerate() {
        tried = n + 1;
        let order = if n % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut got: [Option<MixedStats>; 2] = [None, None];
        for i in order {
            let e = if i == 0 { persist } else { raw };
            let m = step(e, db, rate, secs, ctx).await?;
            if m.sustained {
                best[i] = Some(rate);
            }
            res.push(step_record(backend, durability, e, ctx, &m));
            got[i] = Some(m);
        }
        let [Some(p), Some(w)] = got else { continue };
        eprintln!(
            "{backend}: mixed at {rate}/s: persist p99 {:.2} ms{}, raw p99 {:.2} ms{}",
            p.all_p99_ms,
            if p.sustained { "" } else { " (not sustained)" },
            w.all_p99_ms,
            if w.sustained { "" } else { " (not sustained)" }
        );
        if p.sustained && w.sustained {
            let ratios = p
                .ops
                .iter()
                .zip(&w.ops)
                .map(|(a, b)| (a.p99_ms, b.p99_ms, a.count.min(b.count)))
                .collect();
            both.push((rate, ratios));
        }
        if !p.sustained && !w.sustained {
            break;
        }
    }
    let brackets = brackets(&rates, tried, best);
    refine(
        backend,
        durability,
        [persist, raw],
        db,
        secs,
        ctx,
        brackets,
        &mut best,
        res,
    )
    .await?;
    let derived = |op: String, v: f64| {
        let mut r = Record::blank(
            backend,
            durability,
            "derived",
            &op,
            "persist",
            persist.variant,
        );
        r.ops_per_sec = v;
        r
    };
    for (i, e) in [persist, raw].into_iter().enumerate() {
        let mut r = Record::blank(
            backend,
            durability,
            "derived",
            "mixed_saturation_rate",
            e.implementation,
            e.variant,
        );
        r.ops_per_sec = best[i].unwrap_or(0.0);
        res.push(r);
    }
    if let (Some(p), Some(w)) = (best[0], best[1]) {
        res.push(derived("mixed_saturation".into(), p / w));
    } else if best[1].is_some() {
        res.push(derived("mixed_saturation".into(), 0.0));
    }
    if let Some((rate, _)) = judged(&both) {
        let top = both.last().map(|(rate, _)| *rate);
        eprintln!(
            "{backend}: mixed p99 ratios judged at {rate}/s (top step both sustained: {top:?}/s)"
        );
    }
    // Judged below the top step; the top step's ratios are kept beside them.
    for (prefix, at) in [
        ("mixed_p99_ratio", judged(&both)),
        ("mixed_p99_ratio_top", both.last()),
    ] {
        let Some((rate, ratios)) = at else { continue };
        for ((op, _), &(p, w, n)) in MIX.iter().zip(ratios) {
            // A p99 of fewer than MIN_CALLS calls is its largest few values:
            // no figure (the target says so).
            let v = if n >= MIN_CALLS { p / w } else { f64::NAN };
            let mut r = derived(format!("{prefix}:{}", op.name()), v);
            r.concurrency = *rate as usize;
            res.push(r);
        }
    }
    Ok(())
}

/// The record of one step of one implementation.
fn step_record(
    backend: &'static str,
    durability: Option<&'static str>,
    e: &Entry,
    ctx: &Ctx,
    m: &MixedStats,
) -> Record {
    let mut r = Record::blank(
        backend,
        durability,
        "mixed",
        "mixed",
        e.implementation,
        e.variant,
    );
    r.concurrency = PLAYERS;
    r.sessions_in_table = ctx.scale.sessions;
    r.ops_per_sec = m.achieved;
    r.mixed = Some(m.clone());
    r
}

/// Per implementation, the bracket its saturation rate lies in after the
/// climb: (highest sustained rate, the next step above it), when that next
/// step was run and not sustained. None when it sustained no step, or the
/// top step (nothing above to narrow).
fn brackets(rates: &[f64], tried: usize, best: [Option<f64>; 2]) -> [Option<(f64, f64)>; 2] {
    best.map(|b| {
        let b = b?;
        let above = rates[..tried].iter().copied().find(|&r| r > b)?;
        Some((b, above))
    })
}

/// The geometric middle of a bracket, rounded to tens like the steps.
fn middle((lo, hi): (f64, f64)) -> f64 {
    ((lo * hi).sqrt() / 10.0).round() * 10.0
}

/// The bracket after running its middle `mid`: the saturation rate is above
/// `mid` when `mid` was sustained, below it otherwise.
fn narrow((lo, hi): (f64, f64), mid: f64, sustained: bool) -> (f64, f64) {
    if sustained {
        (mid, hi)
    } else {
        (lo, mid)
    }
}

/// Narrows each implementation's saturation rate by [`REFINE_ROUNDS`]
/// rounds of bisection, both implementations in each round, in alternating
/// order; every step is recorded like the climb's. `best` ends as the
/// highest rate each sustained.
#[allow(clippy::too_many_arguments)]
async fn refine(
    backend: &'static str,
    durability: Option<&'static str>,
    entries: [&Entry; 2],
    db: &Db,
    secs: f64,
    ctx: &Arc<Ctx>,
    mut brackets: [Option<(f64, f64)>; 2],
    best: &mut [Option<f64>; 2],
    res: &mut Results,
) -> Result<()> {
    for round in 0..REFINE_ROUNDS {
        let order = if round % 2 == 0 { [1, 0] } else { [0, 1] };
        for i in order {
            let Some((lo, hi)) = brackets[i] else {
                continue;
            };
            let mid = middle((lo, hi));
            if mid <= lo || mid >= hi {
                continue;
            }
            let m = step(entries[i], db, mid, secs, ctx).await?;
            eprintln!(
                "{backend}: mixed, narrowing {}'s saturation: {mid}/s offered, {:.0}/s \
                 achieved, p99 {:.2} ms, {}",
                entries[i].implementation,
                m.achieved,
                m.all_p99_ms,
                if m.sustained {
                    "sustained"
                } else {
                    "not sustained"
                }
            );
            brackets[i] = Some(narrow((lo, hi), mid, m.sustained));
            if m.sustained {
                best[i] = Some(mid);
            }
            res.push(step_record(backend, durability, entries[i], ctx, &m));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bracket_runs_from_the_highest_sustained_step_to_the_next_one_run() {
        let rates = [100.0, 200.0, 400.0, 800.0];
        // Persist sustained 200, raw 400; the climb stopped after 800.
        assert_eq!(
            brackets(&rates, 4, [Some(200.0), Some(400.0)]),
            [Some((200.0, 400.0)), Some((400.0, 800.0))]
        );
        // The top step sustained: nothing above it to narrow.
        assert_eq!(brackets(&rates, 4, [Some(800.0), None]), [None, None]);
        // Defensive: had the climb stopped at 400, 800 would not be a bracket
        // end (run() stops only after a step both fail, above every best).
        assert_eq!(
            brackets(&rates, 3, [Some(400.0), Some(200.0)]),
            [None, Some((200.0, 400.0))]
        );
        // A failed step below the highest sustained one does not cap it.
        assert_eq!(
            brackets(&rates, 4, [Some(400.0), None]),
            [Some((400.0, 800.0)), None]
        );
    }

    #[test]
    fn a_sustained_middle_raises_the_floor_and_a_failed_one_lowers_the_ceiling() {
        assert_eq!(
            narrow((8_900.0, 11_100.0), 9_940.0, true),
            (9_940.0, 11_100.0)
        );
        assert_eq!(
            narrow((8_900.0, 11_100.0), 9_940.0, false),
            (8_900.0, 9_940.0)
        );
    }

    #[test]
    fn two_rounds_narrow_a_step_to_its_fourth_root() {
        let (lo, hi) = (8_900.0, 11_100.0);
        let m1 = middle((lo, hi));
        assert!(lo < m1 && m1 < hi, "{m1}");
        assert!((m1 / lo - (hi / lo).sqrt()).abs() < 0.002, "{m1}");
        let m2 = middle((lo, m1));
        assert!((m2 / lo - (hi / lo).powf(0.25)).abs() < 0.002, "{m2}");
        assert_eq!(m1 % 10.0, 0.0);
    }

    #[test]
    fn p99_ratios_are_judged_one_step_below_the_top_step_both_sustained() {
        assert_eq!(judged(&[490.0, 610.0, 760.0]), Some(&610.0));
        // Only one step sustained by both: that one.
        assert_eq!(judged(&[100.0]), Some(&100.0));
        assert_eq!(judged::<f64>(&[]), None);
        // 760/s sustained by one side only never enters the list: the
        // step judged is the both-sustained one below 950/s.
        assert_eq!(judged(&[490.0, 610.0, 950.0]), Some(&610.0));
    }

    #[test]
    fn rate_steps_climb_to_the_maximum_and_stop() {
        for quick in [true, false] {
            let (v, _) = rates(quick);
            assert!(v.windows(2).all(|w| w[1] > w[0]), "{v:?}");
            assert!(v.len() < 60, "{} steps", v.len());
            assert!(*v.last().expect("steps") > 10_000.0, "{v:?}");
        }
        assert_eq!(&rates(false).0[..4], &[100.0, 130.0, 160.0, 200.0]);
    }

    #[test]
    fn the_mix_picks_every_operation_in_its_proportion() {
        let mut n = [0u64; MIX.len()];
        for seq in 0..100_000 {
            n[pick(seq)] += 1;
        }
        for (i, (_, w)) in MIX.iter().enumerate() {
            let share = n[i] as f64 / 100.0; // per mille
            assert!(
                (share - *w as f64).abs() < 0.1 * *w as f64 + 2.0,
                "{i}: {share} vs {w}"
            );
        }
    }
}
