//! Shared read connections: single-statement reads pipelined on a few pooled
//! connections instead of one exclusive connection per call (D-041).
//!
//! tokio-postgres pipelines concurrent requests on one `Client`: each request
//! carries its own `Sync`, so the server answers them in order and an error
//! stays with its own statement. A *lane* is a pooled connection that several
//! reads use at once. Lanes are borrowed from the same deadpool pool as every
//! other connection (they count against the pool size) and go back to it as
//! soon as their last read finishes, so an idle `Db` holds no lane and units
//! of work, writes and the migrator still get exclusive connections.
//!
//! Choosing a lane: the live lane with the fewest reads in flight; when even
//! that one is busy and a lane is free, a connection is checked out to open
//! it, so the load spreads over up to `lanes` server backends before reads
//! start to queue behind one another. Reads never use more connections than
//! there are lanes: while every lane is being opened, a read waits for one
//! (at most the pool's acquire timeout). A sequential caller always runs on
//! one lane, which is the pool's warmest connection (LIFO).
//!
//! Writes never use lanes: each one waits for its commit flush, and commits
//! pipelined on one connection flush one after the other, where separate
//! connections share a flush (measured in docs/PERFORMANCE.md).

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool_postgres::Object;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::Client;
use crate::error::{Error, Result};

/// One connection in use as a lane. Dropped (and so returned to the pool)
/// when the last read on it ends; a poisoned one is detached from the pool
/// instead, so a connection that missed its deadline is never handed out
/// again.
struct LaneConn {
    obj: Option<Object>,
    poisoned: AtomicBool,
}

impl Drop for LaneConn {
    fn drop(&mut self) {
        if self.poisoned.load(Ordering::Acquire) {
            if let Some(obj) = self.obj.take() {
                drop(Object::take(obj));
            }
        }
    }
}

impl LaneConn {
    fn client(&self) -> &Client {
        // `obj` is `Some` from construction until `drop`.
        self.obj
            .as_deref()
            .expect("lane connection present until dropped")
    }
}

#[derive(Default)]
struct Lane {
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
    /// Never hands this connection out again (after a missed deadline: maybe
    /// a frozen server or a dead network path). Reads already in flight on a
    /// shared connection finish or time out on their own.
    pub(crate) fn discard(self) {
        match self {
            Conn::Exclusive(o) => drop(Object::take(o)),
            Conn::Shared(s) => {
                s.conn.poisoned.store(true, Ordering::Release);
                let mut lanes = s.lanes.lock();
                let lane = &mut lanes[s.index];
                if lane.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &s.conn)) {
                    // Detach it: the reads still on it no longer count here.
                    lane.conn = None;
                    lane.in_flight = 0;
                }
                // `s` drops after the lock: its release finds the lane
                // detached and leaves it alone.
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
                if lane.in_flight == 0 {
                    lane.conn.take()
                } else {
                    None
                }
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
    Open(usize),
    /// Every lane is being opened: wait for one.
    Wait(Notified<'a>),
}

impl Lanes {
    /// `count` lanes (at least one).
    pub(crate) fn new(count: usize, acquire_timeout: Duration) -> Self {
        Lanes {
            lanes: Mutex::new((0..count.max(1)).map(|_| Lane::default()).collect()),
            opened: Notify::new(),
            acquire_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Lane>> {
        // The critical sections cannot panic half-way; a poisoned lock still
        // holds consistent counts.
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pick(&self) -> Pick<'_> {
        let mut lanes = self.lock();
        // A lane whose connection the server closed is dropped here; the pool
        // discards the connection when it comes back (its recycle check).
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
            .map(|(i, l)| (i, l.in_flight));
        let free = lanes.iter().position(|l| l.conn.is_none() && !l.opening);
        // The least busy live lane, unless it is busy and a lane is free.
        let live = best.filter(|&(_, busy)| busy == 0 || free.is_none());
        if let Some((i, _)) = live {
            let lane = &mut lanes[i];
            if let Some(conn) = &lane.conn {
                lane.in_flight += 1;
                return Pick::Live(i, Arc::clone(conn));
            }
        }
        match free {
            Some(i) => {
                lanes[i].opening = true;
                Pick::Open(i)
            }
            // Registered before the lock is released: no wake-up is missed.
            None => Pick::Wait(self.opened.notified()),
        }
    }

    /// A shared connection for one single-statement read. `checkout` checks
    /// a connection out of the pool to open a lane. Reads use at most as
    /// many connections as there are lanes.
    pub(crate) async fn read<F>(&self, checkout: impl Fn() -> F) -> Result<Conn<'_>>
    where
        F: std::future::Future<Output = Result<Object>>,
    {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        loop {
            match self.pick() {
                Pick::Live(index, conn) => {
                    return Ok(Conn::Shared(SharedRead {
                        lanes: self,
                        index,
                        conn,
                    }))
                }
                Pick::Open(index) => return self.open(index, &checkout).await,
                Pick::Wait(opened) => {
                    if tokio::time::timeout_at(deadline, opened).await.is_err() {
                        return Err(Error::timeout("waiting for a pooled PostgreSQL connection"));
                    }
                }
            }
        }
    }

    async fn open<F>(&self, index: usize, checkout: impl Fn() -> F) -> Result<Conn<'_>>
    where
        F: std::future::Future<Output = Result<Object>>,
    {
        // Clears `opening` and wakes the waiters if the checkout fails or is
        // cancelled.
        let opening = Opening { lanes: self, index };
        let obj = checkout().await?;
        let conn = Arc::new(LaneConn {
            obj: Some(obj),
            poisoned: AtomicBool::new(false),
        });
        let mut lanes = self.lock();
        // The guard's work is done here, under the lock it would take.
        std::mem::forget(opening);
        let lane = &mut lanes[index];
        lane.opening = false;
        // While `opening` was set no other caller could fill this lane
        // (`pick` only opens lanes that are not being opened).
        debug_assert!(lane.conn.is_none());
        lane.conn = Some(Arc::clone(&conn));
        lane.in_flight = 1;
        drop(lanes);
        self.opened.notify_waiters();
        Ok(Conn::Shared(SharedRead {
            lanes: self,
            index,
            conn,
        }))
    }

    /// Drops every idle lane's hold on its connection (at close).
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
