//! A cold start (the first calls after `open`) and the calls on one user's
//! sessions when a user has many (`list_for_user`, `delete_all_for_user`).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use persist::{Db, UserId};

use crate::data::{login_token, SESSION_TTL, T0};
use crate::harness::{median, run_cell, Ctx, Entry, Subject, Timing};
use crate::ops::Op;
use crate::report::{ColdStats, Record, Results};

/// Opens an implementation `reps` times; each time times `open`, the first
/// session lookup and a second one, then closes it. Records the medians.
#[allow(clippy::too_many_arguments)]
pub async fn cold_start<F, Fut>(
    backend: &'static str,
    durability: Option<&'static str>,
    implementation: &'static str,
    variant: &'static str,
    reps: u32,
    ctx: &Arc<Ctx>,
    res: &mut Results,
    open: F,
) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Subject>>,
{
    let (mut o, mut f, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t0 = Instant::now();
        let subject = open().await?;
        let t1 = Instant::now();
        subject
            .run(Op::SessionLookup, &ctx.inputs(ctx.scale.sessions))
            .await?;
        let t2 = Instant::now();
        subject
            .run(Op::SessionLookup, &ctx.inputs(ctx.scale.sessions))
            .await?;
        let t3 = Instant::now();
        subject.close().await;
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
        o.push(ms(t0, t1));
        f.push(ms(t1, t2));
        s.push(ms(t2, t3));
    }
    let mut r = Record::blank(
        backend,
        durability,
        "cold",
        "cold_start",
        implementation,
        variant,
    );
    r.cold = Some(ColdStats {
        repetitions: reps,
        open_ms: median(&o),
        first_ms: median(&f),
        second_ms: median(&s),
    });
    res.push(r);
    Ok(())
}

/// Gives `user` `n` more sessions (setup, through persist, one unit of
/// work).
async fn seed(db: &Db, ctx: &Ctx, user: i64, n: u64) -> Result<()> {
    let first = ctx.seq.fetch_add(n, Ordering::Relaxed);
    let tx = db.begin().await?;
    for s in first..first + n {
        tx.sessions()
            .create(&login_token(s), UserId(user), T0, T0 + SESSION_TTL)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `list_for_user` (a throughput cell, sequential) and
/// `delete_all_for_user` (one call per implementation and round, on a
/// freshly seeded user: its rate is 1 / the call's duration) on a user
/// with `n` sessions.
#[allow(clippy::too_many_arguments)]
pub async fn many_sessions(
    backend: &'static str,
    durability: Option<&'static str>,
    entries: &[Entry],
    db: &Db,
    n: u64,
    timing: Timing,
    ctx: &Arc<Ctx>,
    res: &mut Results,
) -> Result<()> {
    // A user of its own (the data set's users' sessions are looked up by
    // other cells).
    let seq = ctx.seq.fetch_add(1, Ordering::Relaxed);
    let user = db
        .accounts()
        .create(&persist::NewAccount {
            email: &format!("many{seq}@bench.example"),
            username: &format!("many{seq}"),
            pass_hash: crate::data::PASS_HASH,
            created_at: T0,
        })
        .await?
        .user_id
        .0;
    seed(db, ctx, user, n).await?;
    ctx.many_user.store(user, Ordering::Relaxed);
    let samples = run_cell(
        entries,
        Op::ListSessions,
        1,
        timing,
        ctx,
        ctx.scale.sessions,
    )
    .await?;
    for (e, s) in entries.iter().zip(samples) {
        res.push(Record::cell(
            backend,
            durability,
            "many_sessions",
            n,
            Op::ListSessions,
            1,
            e,
            s,
        ));
    }
    let mut samples = vec![Vec::new(); entries.len()];
    for round in 0..timing.warmup + timing.reps {
        for k in 0..entries.len() {
            let i = (k + round) % entries.len();
            seed(db, ctx, user, n).await?;
            let x = ctx.inputs(ctx.scale.sessions);
            let t = Instant::now();
            entries[i].subject.run(Op::DeleteUserSessions, &x).await?;
            let secs = t.elapsed().as_secs_f64();
            if round >= timing.warmup {
                samples[i].push(1.0 / secs);
            }
        }
    }
    for (e, s) in entries.iter().zip(samples) {
        res.push(Record::cell(
            backend,
            durability,
            "many_sessions",
            n,
            Op::DeleteUserSessions,
            1,
            e,
            s,
        ));
    }
    ctx.many_user.store(1, Ordering::Relaxed);
    Ok(())
}
