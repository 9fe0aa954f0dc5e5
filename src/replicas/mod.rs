//! Read replicas: which server answers a read outside a unit of work, the
//! read-your-writes fence, and the counters (D-114 to D-117).
//!
//! The fence is the highest primary write position acknowledged through
//! this handle (every write and every committed unit of work raises it),
//! or a caller's [`Position`] ([`crate::Db::reading_after`]). A replica
//! answers a read only when it is healthy and its replayed position has
//! reached the fence: known from the last health check or read, else
//! checked in the same round trip as the read (a position query pipelined
//! before it on the same connection). A replica behind the fence, failing,
//! or answering "not found" sends the read to the primary, whose answer is
//! final.

pub(crate) mod health;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Poll;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::postgres::{self, Client};
use crate::types::replica::{Position, ReplicaState, ReplicaStats, ReplicaStatus};

/// The fence value while a write's position is unknown: every read goes to
/// the primary until the health check learns the primary's position.
const UNKNOWN: u64 = u64::MAX;

/// One replica: its pool and what is known of it.
pub(crate) struct Node {
    url: String,
    pub(crate) pool: postgres::Pool,
    state: AtomicU8,
    replayed: AtomicU64,
    /// Lag in microseconds at the last check; `u64::MAX` before one.
    lag_us: AtomicU64,
    /// WAL bytes behind the primary at the last check; `u64::MAX` before one.
    behind: AtomicU64,
    started_us: AtomicI64,
    /// The pool's opened-connection count when `replayed` was last read
    /// from the server: a connection opened since may reach a restarted
    /// server, whose visible state may be older, so until a check on the
    /// current connections `replayed` is not trusted.
    checked_at: AtomicU64,
    reads: AtomicU64,
    last_error: Mutex<Option<String>>,
}

fn state_code(s: ReplicaState) -> u8 {
    match s {
        ReplicaState::Starting => 0,
        ReplicaState::Healthy => 1,
        ReplicaState::Lagging => 2,
        ReplicaState::Unreachable => 3,
        _ => 4,
    }
}

fn state_of(code: u8) -> ReplicaState {
    match code {
        0 => ReplicaState::Starting,
        1 => ReplicaState::Healthy,
        2 => ReplicaState::Lagging,
        3 => ReplicaState::Unreachable,
        _ => ReplicaState::Promoted,
    }
}

impl Node {
    pub(crate) fn state(&self) -> ReplicaState {
        state_of(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: ReplicaState, error: Option<String>) {
        self.state.store(state_code(s), Ordering::Release);
        if let Ok(mut e) = self.last_error.lock() {
            *e = error;
        }
    }

    /// Records a replayed position read from the server when the pool had
    /// opened `opened` connections: it only grows while no connection was
    /// opened since the last reading; otherwise it replaces the old value
    /// (maybe a restarted server, which may show an older state).
    pub(crate) fn saw(&self, opened: u64, replayed: u64) {
        if self.checked_at.swap(opened, Ordering::AcqRel) == opened {
            self.replayed.fetch_max(replayed, Ordering::AcqRel);
        } else {
            self.replayed.store(replayed, Ordering::Release);
        }
    }

    /// The replayed position, if it can be trusted for the pool's current
    /// connections.
    fn trusted_replayed(&self) -> Option<u64> {
        let checked = self.checked_at.load(Ordering::Acquire);
        (checked == self.pool.opened()).then(|| self.replayed.load(Ordering::Acquire))
    }

    fn failed(&self, e: &Error) {
        self.set_state(ReplicaState::Unreachable, Some(e.to_string()));
    }

    fn status(&self) -> ReplicaStatus {
        let lag = self.lag_us.load(Ordering::Acquire);
        ReplicaStatus {
            url: self.url.clone(),
            state: self.state(),
            replayed: Position(self.replayed.load(Ordering::Acquire)),
            lag: (lag != u64::MAX).then(|| std::time::Duration::from_micros(lag)),
            behind_bytes: Some(self.behind.load(Ordering::Acquire)).filter(|b| *b != u64::MAX),
            reads: self.reads.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

#[derive(Default)]
struct Counters {
    replica: AtomicU64,
    primary: AtomicU64,
    behind: AtomicU64,
    no_replica: AtomicU64,
    error: AtomicU64,
    rechecks: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The replicas of one handle.
pub(crate) struct Replicas {
    pub(crate) nodes: Vec<Node>,
    /// Highest write position acknowledged through this handle.
    fence: AtomicU64,
    /// Serialises setting the fence to [`UNKNOWN`] with clearing it
    /// (failures counted so a clear never hides a newer failure).
    unknown: Mutex<u64>,
    next: AtomicUsize,
    counters: Counters,
    pub(crate) max_lag: std::time::Duration,
    pub(crate) interval: std::time::Duration,
    /// One connection to the primary for the health check's position
    /// samples (never taken from the handle's pool).
    primary_probe: postgres::Pool,
    closed: AtomicBool,
}

/// Which replica a read may use.
enum Pick<'a> {
    /// Known to have reached the fence.
    Ready(&'a Node),
    /// Healthy, not known to have reached it: check in the same round trip.
    Check(&'a Node),
    None,
}

impl Replicas {
    /// The replicas `config` names (pools built, nothing connected yet).
    pub(crate) fn new(config: &Config) -> Result<Replicas> {
        let mut probe = config.clone();
        probe.replicas.clear();
        let probe = probe.with_pool_size(1).with_shared_read_connections(0);
        let mut nodes = Vec::with_capacity(config.replicas.len());
        for r in &config.replicas {
            nodes.push(Node {
                url: r.redacted_url(),
                pool: postgres::Pool::build(r, postgres::REPLICA_POOL)?,
                state: AtomicU8::new(state_code(ReplicaState::Starting)),
                replayed: AtomicU64::new(0),
                lag_us: AtomicU64::new(u64::MAX),
                behind: AtomicU64::new(u64::MAX),
                started_us: AtomicI64::new(0),
                checked_at: AtomicU64::new(u64::MAX),
                reads: AtomicU64::new(0),
                last_error: Mutex::new(None),
            });
        }
        Ok(Replicas {
            nodes,
            fence: AtomicU64::new(0),
            unknown: Mutex::new(0),
            next: AtomicUsize::new(0),
            counters: Counters::default(),
            max_lag: config.replica_max_lag,
            interval: config.replica_check_interval,
            primary_probe: postgres::Pool::build(&probe, postgres::REPLICA_CHECK_POOL)?,
            closed: AtomicBool::new(false),
        })
    }

    /// The handle's fence.
    pub(crate) fn fence(&self) -> u64 {
        self.fence.load(Ordering::Acquire)
    }

    /// Records an acknowledged write's position, or that it is unknown.
    pub(crate) fn wrote(&self, position: Result<u64>) {
        match position {
            Ok(p) => {
                self.fence.fetch_max(p, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::warn!(error = %e, "write position unknown: reads go to the primary until the next replica check");
                let mut failures = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
                *failures += 1;
                self.fence.store(UNKNOWN, Ordering::Release);
            }
        }
    }

    /// The failure count, read before the health check samples the primary.
    pub(crate) fn unknown_failures(&self) -> u64 {
        *self.unknown.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces an unknown fence by `primary` (sampled after `failures` was
    /// read), unless a write failed since.
    pub(crate) fn settle_unknown(&self, failures: u64, primary: u64) {
        let now = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        if *now == failures {
            let _ =
                self.fence
                    .compare_exchange(UNKNOWN, primary, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn pick(&self, need: u64) -> Pick<'_> {
        let n = self.nodes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut healthy = None;
        for i in 0..n {
            let node = &self.nodes[(start + i) % n];
            if node.state() != ReplicaState::Healthy {
                continue;
            }
            if node.trusted_replayed().is_some_and(|r| r >= need) {
                return Pick::Ready(node);
            }
            healthy.get_or_insert(node);
        }
        match healthy {
            Some(node) if need != UNKNOWN => Pick::Check(node),
            _ => Pick::None,
        }
    }

    /// One read outside a unit of work: on a replica that has reached the
    /// fence (`floor` raises it), else on the primary.
    pub(crate) async fn read<T>(
        &self,
        primary: &postgres::Pool,
        floor: u64,
        pg: impl AsyncFnOnce(&Client<'_>) -> Result<T> + Clone,
    ) -> Result<T> {
        let need = self.fence().max(floor);
        let (node, out) = match self.pick(need) {
            Pick::Ready(node) => (node, node.pool.call(true, pg.clone()).await.map(Some)),
            Pick::Check(node) => {
                let out = node
                    .pool
                    .call(true, async |c| fenced(c, node, need, pg.clone()).await)
                    .await;
                (node, out)
            }
            Pick::None => {
                bump(
                    if need == UNKNOWN
                        || self
                            .nodes
                            .iter()
                            .any(|n| n.state() == ReplicaState::Healthy)
                    {
                        &self.counters.behind
                    } else {
                        &self.counters.no_replica
                    },
                );
                return self.on_primary(primary, pg).await;
            }
        };
        match out {
            Ok(Some(v)) => {
                bump(&node.reads);
                bump(&self.counters.replica);
                Ok(v)
            }
            Ok(None) => {
                bump(&self.counters.behind);
                self.on_primary(primary, pg).await
            }
            Err(Error::NotFound(_)) => {
                bump(&self.counters.rechecks);
                self.on_primary(primary, pg).await
            }
            Err(e) => {
                tracing::debug!(replica = %node.url, error = %e, "replica read failed: repeated on the primary");
                node.failed(&e);
                bump(&self.counters.error);
                self.on_primary(primary, pg).await
            }
        }
    }

    async fn on_primary<T>(
        &self,
        primary: &postgres::Pool,
        pg: impl AsyncFnOnce(&Client<'_>) -> Result<T>,
    ) -> Result<T> {
        bump(&self.counters.primary);
        primary.call(true, pg).await
    }

    /// One write outside a unit of work on the primary; its position (read
    /// on the same connection once it is acknowledged) raises the fence.
    pub(crate) async fn write<T>(
        &self,
        primary: &postgres::Pool,
        pg: impl AsyncFnOnce(&Client<'_>) -> Result<T>,
    ) -> Result<T> {
        let (v, position) = primary
            .call(false, async |c| {
                let v = pg(c).await?;
                Ok((v, postgres::replicas::write_position(c).await))
            })
            .await?;
        self.wrote(position);
        Ok(v)
    }

    /// Runs one round of health checks now (its own lag samples: the lag
    /// it reports is a lower bound for a replica behind the primary).
    pub(crate) async fn check_now(&self) -> Vec<ReplicaStatus> {
        health::check(self, &mut std::collections::VecDeque::new()).await;
        self.status()
    }

    pub(crate) fn status(&self) -> Vec<ReplicaStatus> {
        self.nodes.iter().map(Node::status).collect()
    }

    pub(crate) fn stats(&self) -> ReplicaStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReplicaStats {
            replica_reads: get(&c.replica),
            primary_reads: get(&c.primary),
            fallback_behind: get(&c.behind),
            fallback_no_replica: get(&c.no_replica),
            fallback_error: get(&c.error),
            not_found_rechecks: get(&c.rechecks),
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.primary_probe.close();
        for n in &self.nodes {
            n.pool.close();
        }
    }
}

/// A read on `node` with its replayed position checked in the same round
/// trip: the position query is sent first (the simple protocol sends at the
/// first poll), so the read's snapshot is at least that position. `None`
/// when the replica has not reached `need` (the read's answer is dropped).
async fn fenced<T>(
    c: &Client<'_>,
    node: &Node,
    need: u64,
    pg: impl AsyncFnOnce(&Client<'_>) -> Result<T>,
) -> Result<Option<T>> {
    // Every connection of the pool, this one included, was opened by now.
    let opened = node.pool.opened();
    let mut check = pin!(postgres::replicas::replayed(c.raw()));
    let first = std::future::poll_fn(|cx| Poll::Ready(check.as_mut().poll(cx))).await;
    let read = pg(c).await;
    let replayed = match first {
        Poll::Ready(r) => r?,
        Poll::Pending => check.await?,
    };
    node.saw(opened, replayed);
    if replayed < need {
        return Ok(None);
    }
    read.map(Some)
}
