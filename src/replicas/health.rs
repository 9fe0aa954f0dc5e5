//! The replicas' health check: one task per handle that, every check
//! interval, samples the primary's write position and probes each replica
//! (in recovery? replayed position? restarted?), then sets its state.
//!
//! Lag: the primary's positions of the last checks are kept with their
//! times; a replica that has replayed a sample's position had every write
//! of that moment, so its lag is at most the time since the newest sample
//! it has reached (exact to one interval; 0 on an idle primary).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::sync::Weak;

use super::{Node, Replicas};
use crate::postgres;
use crate::types::replica::ReplicaState;

/// The longest a probe of one replica may take before it counts as
/// unreachable.
fn probe_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_millis(500), Duration::from_secs(2))
}

/// Runs until the handle is dropped or closed.
pub(crate) async fn run(set: Weak<Replicas>) {
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    loop {
        let Some(strong) = set.upgrade() else { return };
        if strong.closed.load(Ordering::Acquire) {
            return;
        }
        check(&strong, &mut samples).await;
        let interval = strong.interval;
        drop(strong);
        tokio::time::sleep(interval).await;
    }
}

/// One round of checks.
pub(crate) async fn check(set: &Replicas, samples: &mut VecDeque<(Instant, u64)>) {
    let failures = set.unknown_failures();
    let timeout = probe_timeout(set.interval);
    {
        let primary = &set.primary_probe;
        let sampled = tokio::time::timeout(
            timeout,
            primary.call(false, async |c| postgres::replicas::write_position(c).await),
        )
        .await;
        if let Ok(Ok(p)) = sampled {
            set.settle_unknown(failures, p);
            samples.push_back((Instant::now(), p));
        }
    }
    // Keep the samples that can still decide the lag bound.
    let keep = set.max_lag + set.interval * 2;
    while samples.len() > 1024 || samples.front().is_some_and(|(t, _)| t.elapsed() > keep) {
        samples.pop_front();
    }
    for node in &set.nodes {
        probe(node, set.max_lag, timeout, samples).await;
        if let Some((_, p)) = samples.back() {
            let behind = p.saturating_sub(node.replayed.load(Ordering::Acquire));
            node.behind.store(behind, Ordering::Release);
        }
    }
}

async fn probe(
    node: &Node,
    max_lag: Duration,
    timeout: Duration,
    samples: &VecDeque<(Instant, u64)>,
) {
    let out = tokio::time::timeout(
        timeout,
        node.pool
            .call(false, async |c| postgres::replicas::probe(c).await),
    )
    .await;
    let p = match out {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return node.set_state(ReplicaState::Unreachable, Some(e.to_string())),
        Err(_) => {
            return node.set_state(
                ReplicaState::Unreachable,
                Some(format!("no answer to the health check within {timeout:?}")),
            )
        }
    };
    let before = node.started_us.swap(p.started_us, Ordering::AcqRel);
    if before != 0 && before != p.started_us {
        // Restarted: what it replayed before may not be what it shows now
        // (a restored or re-cloned standby); trust only this probe.
        node.replayed.store(p.replayed, Ordering::Release);
        tracing::info!(replica = %node.url, "replica restarted");
    } else {
        node.saw(p.replayed);
    }
    if !p.in_recovery {
        return node.set_state(
            ReplicaState::Promoted,
            Some(
                "not in recovery (promoted, or not a standby): no longer follows the primary"
                    .into(),
            ),
        );
    }
    let lag = lag(samples, p.replayed);
    node.lag_us.store(
        lag.map_or(u64::MAX, |l| {
            u64::try_from(l.as_micros()).unwrap_or(u64::MAX)
        }),
        Ordering::Release,
    );
    match lag {
        Some(l) if l > max_lag => node.set_state(
            ReplicaState::Lagging,
            Some(format!(
                "{} ms behind the primary (bound {} ms)",
                l.as_millis(),
                max_lag.as_millis()
            )),
        ),
        _ => node.set_state(ReplicaState::Healthy, None),
    }
}

/// The lag of a replica at `replayed`: the time since the newest primary
/// sample it has reached, or (behind every sample) since the oldest one.
fn lag(samples: &VecDeque<(Instant, u64)>, replayed: u64) -> Option<Duration> {
    match samples.iter().rev().find(|(_, p)| *p <= replayed) {
        Some((t, _)) => Some(t.elapsed()),
        None => samples.front().map(|(t, _)| t.elapsed()),
    }
}
