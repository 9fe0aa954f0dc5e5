//! Shared read connections: single-statement reads pipelined on a few pooled
//! connections instead of one exclusive connection per call (D-041).
//!
//! tokio-postgres pipelines concurrent requests on one `Client`: each request
//! carries its own `Sync`, so the server answers them in order and an error
//! stays with its own statement. A *lane* is a pooled connection that several
//! reads use at once. Lanes are borrowed from the same deadpool pool as every
//! other connection (they count against the pool size). A lane whose last
//! read has finished keeps its connection (D-129): the next read runs on it
//! at once, with no checkout and no return, which is the whole cost of a
//! sequential read path. It goes back to the pool as soon as anybody needs
//! it: when its last read ends while a checkout is waiting, or when a
//! checkout finds no connection free ([`Lanes::release_idle`], under the
//! same waiter count, so no hand-back is missed). Units of work, writes and
//! the migrator still always get exclusive connections.
//!
//! Choosing a lane: the live lane with the fewest reads in flight, unless a
//! lane is free and a pooled connection is free right now (checked without
//! waiting), in which case that lane opens, so the load spreads over up to
//! `lanes` server backends. A read never waits for the pool while a live lane
//! can take it; it waits (at most the pool's acquire timeout in all) only when
//! no lane is live. A sequential caller always runs on one lane, which is the
//! pool's warmest connection (LIFO). There are at most `pool_size - 1` lanes,
//! so reads can never hold every connection: writes and units of work always
//! have one to wait for.
//!
//! A read that misses the client deadline discards its lane's connection only
//! when no read on that lane got an answer within the deadline (a frozen
//! server or a dead path); on a live but slow connection it just fails.
//!
//! Writes never use lanes: each one waits for its commit flush, and commits
//! pipelined on one connection flush one after the other, where separate
//! connections share a flush (measured in docs/PERFORMANCE.md).

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::RawClient as Client;
use crate::error::{Error, Result};
use crate::observe;

/// Records the reads in flight on every lane (the lanes' queue depth).
fn record_in_flight(lanes: &[Lane]) {
    observe::shared_reads(lanes.iter().map(|l| l.in_flight).sum());
}

/// One connection in use as a lane. Dropped (and so returned to the pool)
/// when the last read on it ends; a poisoned one is detached from the pool
/// instead, so a connection that missed its deadline is never handed out
/// again.
struct LaneConn {
    obj: Option<Object>,
    /// The pool's `pool` metric label.
    label: &'static str,
    poisoned: AtomicBool,
    /// When it was opened, and when a read on it last got an answer (in ms
    /// after `opened`).
    opened: Instant,
    answered_ms: AtomicU64,
}

impl Drop for LaneConn {
    fn drop(&mut self) {
        if self.poisoned.load(Ordering::Acquire) {
            if let Some(obj) = self.obj.take() {
                super::discard_from(self.label, obj, "deadline");
            }
        }
    }
}

impl LaneConn {
    fn new(obj: Object, label: &'static str) -> Self {
        LaneConn {
            obj: Some(obj),
            label,
            poisoned: AtomicBool::new(false),
            opened: Instant::now(),
            answered_ms: AtomicU64::new(0),
        }
    }

    fn since_opened_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a read on it got an answer within the last `window`.
    fn answered_within(&self, window: Duration) -> bool {
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let last = self.answered_ms.load(Ordering::Relaxed);
        last > 0 && self.since_opened_ms().saturating_sub(last) < window
    }

    fn client(&self) -> &Client {
        // `obj` is `Some` from construction until `drop`.
        self.obj
            .as_deref()
            .expect("lane connection present until dropped")
    }
}

#[derive(Default)]
struct Lane {
    // `conn` with `in_flight == 0`: an idle lane keeping its connection.
    conn: Option<Arc<LaneConn>>,
    in_flight: usize,
    /// A caller is checking a connection out to open this lane.
    opening: bool,
}

pub(crate) struct Lanes {
    lanes: Mutex<Vec<Lane>>,
    /// Wakes reads waiting for a lane that is being opened.
    opened: Notify,
    /// How long a read may wait for a lane (the pool's acquire timeout).
    acquire_timeout: Duration,
    /// The pool's `pool` metric label.
    label: &'static str,
    /// Checkouts of the pool that found no connection free and wait (or are
    /// about to): an idle lane gives its connection back while this is
    /// non-zero.
    waiters: AtomicUsize,
}

/// Counts one checkout as waiting for the pool while it lives
/// ([`Lanes::waiting`]).
pub(crate) struct PoolWaiter<'a>(&'a Lanes);

impl Drop for PoolWaiter<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection one call runs on.
// Lives on the stack for one call and is never moved in a loop: boxing the
// large variant would only add an allocation per call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Conn<'a> {
    /// A connection of its own, checked out of the pool.
    Exclusive(Object),
    /// A read on a lane; released when dropped.
    Shared(SharedRead<'a>),
}

pub(crate) struct SharedRead<'a> {
    lanes: &'a Lanes,
    index: usize,
    conn: Arc<LaneConn>,
}

impl Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        match self {
            Conn::Exclusive(o) => o,
            Conn::Shared(s) => s.conn.client(),
        }
    }
}

impl Conn<'_> {
    /// Records that the call got an answer (the connection is alive).
    pub(crate) fn answered(&self) {
        if let Conn::Shared(s) = self {
            let ms = s.conn.since_opened_ms().max(1);
            s.conn.answered_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// After the call missed the client deadline `window`: never hands this
    /// connection out again (maybe a frozen server or a dead network path).
    /// A shared connection on which another read got an answer within
    /// `window` is alive, only slow, and is kept. Reads already in flight on
    /// a discarded shared connection finish or time out on their own.
    pub(crate) fn discard(self, window: Duration, label: &'static str) {
        match self {
            Conn::Exclusive(o) => super::discard_from(label, o, "deadline"),
            Conn::Shared(s) => {
                if s.conn.answered_within(window) {
                    return;
                }
                s.conn.poisoned.store(true, Ordering::Release);
                let mut lanes = s.lanes.lock();
                let lane = &mut lanes[s.index];
                if lane.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &s.conn)) {
                    // Detach it: the reads still on it no longer count here.
                    lane.conn = None;
                    lane.in_flight = 0;
                }
                // Unlock before `s` is released: its release takes the lock
                // (and finds the lane detached).
                drop(lanes);
                drop(s);
            }
        }
    }
}

impl Drop for SharedRead<'_> {
    fn drop(&mut self) {
        let last = {
            let mut lanes = self.lanes.lock();
            let lane = &mut lanes[self.index];
            if lane
                .conn
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &self.conn))
            {
                lane.in_flight -= 1;
                // The lane keeps its connection unless a checkout waits for
                // one (see `Lanes::waiting`).
                let last = if lane.in_flight == 0 && self.lanes.waiters.load(Ordering::Acquire) > 0
                {
                    lane.conn.take()
                } else {
                    None
                };
                record_in_flight(&lanes);
                last
            } else {
                None
            }
        };
        // The connection goes back to the pool outside the lock.
        drop(last);
    }
}

/// Clears `opening` on a lane when the checkout that opens it ends, however
/// it ends (including cancellation).
struct Opening<'a> {
    lanes: &'a Lanes,
    index: usize,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.lanes.lock()[self.index].opening = false;
        self.lanes.opened.notify_waiters();
    }
}

enum Pick<'a> {
    Live(usize, Arc<LaneConn>),
    /// Open this lane; `wait`: no lane is live, so wait for the pool (else
    /// only take a connection that is free right now).
    Open {
        index: usize,
        wait: bool,
    },
    /// No lane is live and every lane is being opened: wait for one.
    Wait(Notified<'a>),
}

impl Lanes {
    /// `count` lanes (at least one).
    pub(crate) fn new(count: usize, acquire_timeout: Duration, label: &'static str) -> Self {
        Lanes {
            lanes: Mutex::new((0..count.max(1)).map(|_| Lane::default()).collect()),
            opened: Notify::new(),
            acquire_timeout,
            label,
            waiters: AtomicUsize::new(0),
        }
    }

    /// Registers a checkout that found no connection free, then gives the
    /// idle lanes' connections back to the pool for it. Registered first: a
    /// lane going idle after this sees the waiter and gives its connection
    /// back itself, one that went idle before is released here.
    pub(crate) fn waiting(&self) -> PoolWaiter<'_> {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        self.release_idle();
        PoolWaiter(self)
    }

    /// Gives the connections of idle lanes (no read in flight) back to the
    /// pool.
    fn release_idle(&self) {
        let taken: Vec<_> = self
            .lock()
            .iter_mut()
            .filter(|l| l.in_flight == 0)
            .filter_map(|l| l.conn.take())
            .collect();
        // Back to the pool outside the lock.
        drop(taken);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Lane>> {
        // The critical sections cannot panic half-way; a poisoned lock still
        // holds consistent counts.
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `may_open_busy`: whether to try opening a free lane while a live one
    /// could take the read.
    fn pick(&self, may_open_busy: bool) -> Pick<'_> {
        let mut lanes = self.lock();
        // A lane whose connection the server closed is dropped here; the pool
        // discards the connection at its next checkout (its recycle check).
        for lane in lanes.iter_mut() {
            if lane.conn.as_ref().is_some_and(|c| c.client().is_closed()) {
                lane.conn = None;
                lane.in_flight = 0;
            }
        }
        let best = lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| l.conn.is_some())
            .min_by_key(|(_, l)| l.in_flight)
            .map(|(i, _)| i);
        let free = lanes.iter().position(|l| l.conn.is_none() && !l.opening);
        let opening = lanes.iter().any(|l| l.opening);
        if let Some(i) = best {
            // An idle lane (kept connection) takes the read: no lane opens
            // while one has nothing in flight.
            if free.is_none() || !may_open_busy || lanes[i].in_flight == 0 {
                let lane = &mut lanes[i];
                if let Some(conn) = &lane.conn {
                    lane.in_flight += 1;
                    let conn = Arc::clone(conn);
                    record_in_flight(&lanes);
                    return Pick::Live(i, conn);
                }
            }
        }
        match free {
            // Spread onto another lane if a connection is free right now.
            Some(i) if may_open_busy && (best.is_some() || opening) => {
                lanes[i].opening = true;
                Pick::Open {
                    index: i,
                    wait: false,
                }
            }
            // No lane is live or being opened: this read opens one, waiting
            // for the pool if it must.
            Some(i) if best.is_none() && !opening => {
                lanes[i].opening = true;
                Pick::Open {
                    index: i,
                    wait: true,
                }
            }
            // A lane is being opened: wait for it rather than for the pool.
            // Registered before the lock is released: no wake-up is missed.
            _ => Pick::Wait(self.opened.notified()),
        }
    }

    /// A shared connection for one single-statement read. `checkout(wait)`
    /// checks a connection out of the pool, waiting at most `wait` for a free
    /// one (`Duration::ZERO`: only one free right now).
    pub(crate) async fn read<F>(&self, checkout: impl Fn(Duration) -> F) -> Result<Conn<'_>>
    where
        F: std::future::Future<Output = Result<Object>>,
    {
        let deadline =
            tokio::time::Instant::from_std(crate::config::deadline_after(self.acquire_timeout));
        let mut may_open_busy = true;
        loop {
            match self.pick(may_open_busy) {
                Pick::Live(index, conn) => {
                    return Ok(Conn::Shared(SharedRead {
                        lanes: self,
                        index,
                        conn,
                    }))
                }
                Pick::Open { index, wait } => {
                    let within = if wait {
                        deadline.saturating_duration_since(tokio::time::Instant::now())
                    } else {
                        Duration::ZERO
                    };
                    match self.open(index, checkout(within)).await {
                        Ok(conn) => return Ok(conn),
                        // No connection free right now: share a live lane.
                        Err(Error::Timeout { .. }) if !wait => may_open_busy = false,
                        Err(e) => return Err(e),
                    }
                }
                Pick::Wait(opened) => {
                    if tokio::time::timeout_at(deadline, opened).await.is_err() {
                        return Err(Error::timeout("waiting for a pooled PostgreSQL connection"));
                    }
                }
            }
        }
    }

    async fn open(
        &self,
        index: usize,
        checkout: impl std::future::Future<Output = Result<Object>>,
    ) -> Result<Conn<'_>> {
        // Clears `opening` and wakes the waiters if the checkout fails or is
        // cancelled.
        let opening = Opening { lanes: self, index };
        let conn = Arc::new(LaneConn::new(checkout.await?, self.label));
        let mut lanes = self.lock();
        // The guard's work is done here, under the lock its drop would take
        // (dropping it here instead would deadlock).
        std::mem::forget(opening);
        let lane = &mut lanes[index];
        lane.opening = false;
        // While `opening` was set no other caller could fill this lane
        // (`pick` only opens lanes that are not being opened).
        debug_assert!(lane.conn.is_none());
        lane.conn = Some(Arc::clone(&conn));
        lane.in_flight = 1;
        record_in_flight(&lanes);
        drop(lanes);
        self.opened.notify_waiters();
        Ok(Conn::Shared(SharedRead {
            lanes: self,
            index,
            conn,
        }))
    }

    /// Drops the lanes' hold on their connections (at close); reads in flight
    /// keep theirs until they end.
    pub(crate) fn clear(&self) {
        let taken: Vec<_> = self
            .lock()
            .iter_mut()
            .filter_map(|l| {
                l.in_flight = 0;
                l.conn.take()
            })
            .collect();
        drop(taken);
    }
}
