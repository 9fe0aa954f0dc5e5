//! PostgreSQL backend: the pool, TLS, and the per-table SQL.
//!
//! A deadpool pool of tokio-postgres connections. Checkout does no round trip
//! (`RecyclingMethod::Fast` only checks that the connection is not closed);
//! statements are prepared once per connection and cached, or sent unnamed
//! behind a transaction pooler ([`stmt`]). Nothing rides in the startup
//! packet but what every pooler accepts (user, database, application name):
//! the session's settings are one `SET` batch after connecting, or `SET
//! LOCAL` in each unit of work behind a transaction pooler ([`session`]).

pub(crate) mod accounts;
pub(crate) mod battles;
mod call;
pub(crate) mod connect;
pub(crate) mod copy;
pub(crate) mod error;
mod index_name;
pub(crate) mod introspect;
pub(crate) mod lanes;
pub(crate) mod loadouts;
pub(crate) mod migrate;
mod migration_lock;
pub(crate) mod notx;
pub(crate) mod progression;
pub(crate) mod rekey;
pub(crate) mod replicas;
pub(crate) mod scratch;
pub(crate) mod secret;
pub(crate) mod session;
pub(crate) mod sessions;
pub(crate) mod size;
mod stmt;
pub(crate) mod tls;
pub(crate) mod tx;
pub(crate) mod unlocks;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Hook, Manager, ManagerConfig, Object, PoolError, RecyclingMethod, Runtime, TimeoutType,
};

use crate::config::{Config, Target};
use crate::error::{Error, Result};
use crate::observe;

/// The `db_system` label of this backend's metrics.
pub(crate) const SYSTEM: &str = "postgresql";
/// The `pool` label of the connection pool's metrics.
pub(crate) const POOL: &str = "main";
/// The `pool` label of a read replica's pool (all replicas together).
pub(crate) const REPLICA_POOL: &str = "replica";
/// The `pool` label of the replicas' health check connection to the primary.
pub(crate) const REPLICA_CHECK_POOL: &str = "replica_check";

/// Throws a connection away (never back to the pool), counted with `reason`
/// (`deadline`, `unknown_state`).
pub(crate) fn discard(obj: Object, reason: &'static str) {
    discard_from(POOL, obj, reason);
}

/// [`discard`] for the pool labelled `pool`.
pub(crate) fn discard_from(pool: &'static str, obj: Object, reason: &'static str) {
    observe::discarded(SYSTEM, pool, reason);
    drop(Object::take(obj));
}

/// A pooled client as the driver has it (tools, introspection, copy).
pub(crate) type RawClient = deadpool_postgres::ClientWrapper;
pub(crate) use stmt::{Client, Param};

pub(crate) struct Pool {
    pool: deadpool_postgres::Pool,
    /// Connections shared by single-statement reads (D-041); `None` when
    /// reads are not shared.
    lanes: Option<lanes::Lanes>,
    deadline: Option<Duration>,
    /// The `pool` metric label.
    label: &'static str,
    /// Statements unnamed (behind a transaction pooler, [`stmt`]).
    unnamed: bool,
    /// The batch that begins a unit of work ([`session::Setup::begin`]).
    begin: String,
    /// Connections opened so far (a read replica's cached state is trusted
    /// only for the connections it was checked on: a new one may reach a
    /// restarted server).
    opened: Arc<AtomicU64>,
    /// How the pool connects, for a connection outside it ([`Pool::open_unpooled`]).
    unpooled: Arc<(connect::Connector, tokio_postgres::Config)>,
}

/// Grace past `statement_timeout` before the client gives up on a call: the
/// server cancels a slow statement itself at the timeout; a call still
/// unanswered after this much more is talking to a frozen server or a dead
/// network path, which no server-side timeout can end.
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// Runs one call with the client-side deadline; past it the call fails with
/// [`Error::Timeout`], and the caller must not hand its connection out again.
pub(crate) async fn with_deadline<T>(
    deadline: Option<Duration>,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    timed(deadline, call)
        .await
        .unwrap_or_else(|d| Err(missed_deadline(d)))
}

pub(crate) fn missed_deadline(d: Duration) -> Error {
    Error::timeout(crate::error::after(
        "PostgreSQL did not answer (client deadline: statement timeout + 2 s)",
        d,
    ))
}

/// Runs one pool call with the client-side deadline: `Err(deadline)` when it
/// missed it. The caller then discards the connection
/// ([`lanes::Conn::discard`]); a call that got an answer (even an error, such
/// as a server-side statement timeout) marks it alive
/// ([`lanes::Conn::answered`]).
pub(crate) async fn timed<T>(
    deadline: Option<Duration>,
    call: impl std::future::Future<Output = Result<T>>,
) -> std::result::Result<Result<T>, Duration> {
    match deadline {
        None => Ok(call.await),
        Some(d) => tokio::time::timeout(d, call).await.map_err(|_| d),
    }
}

impl Pool {
    /// Builds the pool without connecting (a replica's pool: a replica down
    /// at open must not fail the open).
    pub(crate) fn build(config: &Config, label: &'static str) -> Result<Self> {
        let Target::Postgres(pg) = &config.target else {
            return Err(Error::Config("not a PostgreSQL configuration".into()));
        };
        let mut pg = (**pg).clone();
        pg.connect_timeout(config.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("persist");
        }
        let setup = session::Setup::new(config)?;
        let mgr_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        // The sslmode (and its fallbacks) is applied per connection attempt.
        let connector = connect::Connector::new(
            config.ssl_mode,
            tls::connector(config)?,
            setup.after_connect(),
        );
        let unpooled = Arc::new((connector.clone(), pg.clone()));
        let manager = Manager::from_connect(pg, connector, mgr_config);
        let opened = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&opened);
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(config.pool_size)
            // Last in, first out: sequential callers keep reusing the
            // warmest connection (its prepared statements, its server
            // backend's caches) instead of rotating over all of them
            // (measured in docs/PERFORMANCE.md: 26k/s FIFO vs 40k/s).
            .queue_mode(deadpool_postgres::QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.connect_timeout + Duration::from_millis(500)))
            .recycle_timeout(Some(config.connect_timeout))
            .post_create(Hook::sync_fn(move |_, _| {
                counted.fetch_add(1, Ordering::AcqRel);
                observe::opened(SYSTEM, label, 1);
                Ok(())
            }))
            // Fast recycling drops a connection the server closed (a killed
            // backend, a restart): count it before it goes.
            .pre_recycle(Hook::sync_fn(move |client, _| {
                if client.is_closed() {
                    observe::discarded(SYSTEM, label, "closed_by_server");
                }
                Ok(())
            }))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the connection pool: {e}")))?;
        // At most pool_size - 1 lanes: reads never hold every connection.
        // No lanes behind a transaction pooler: a pipelined read could be
        // sent to a server connection the pooler already gave to another
        // client.
        let unnamed = config.pooler.per_transaction();
        let lane_count = match unnamed {
            true => 0,
            false => config.shared_reads.min(config.pool_size.saturating_sub(1)),
        };
        Ok(Pool {
            pool,
            lanes: (lane_count > 0)
                .then(|| lanes::Lanes::new(lane_count, config.acquire_timeout, label)),
            deadline: config.statement_timeout.map(|d| d + DEADLINE_GRACE),
            label,
            unnamed,
            begin: setup.begin(),
            opened,
            unpooled,
        })
    }

    pub(crate) async fn open(config: &Config) -> Result<Self> {
        let pool = Self::build(config, POOL)?;
        // Fail at open, not at the first query, when the server is unusable;
        // a TLS refusal says in one line what failed.
        match pool.get().await {
            Ok(c) => drop(c),
            Err(Error::Unavailable {
                message,
                source: Some(source),
            }) => {
                let message = tls::explain(source.as_ref(), config).unwrap_or(message);
                return Err(Error::Unavailable {
                    message,
                    source: Some(source),
                });
            }
            Err(e) => return Err(e),
        }
        Ok(pool)
    }

    /// A connection like the pool's (same TLS, same session settings) but
    /// outside it: not counted in `pool_size`, closed when its task is
    /// aborted or the client dropped. For a no-transaction migration's
    /// statement and watch connections, so it needs no free pool slot.
    pub(crate) async fn open_unpooled(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
        use deadpool_postgres::Connect as _;
        let (connector, pg) = &*self.unpooled;
        connector.connect(pg).await.map_err(error::map)
    }

    /// How many connections this pool has opened.
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Acquire)
    }

    /// Checks a connection out of the pool, waiting at most the acquire
    /// timeout.
    pub(crate) async fn get(&self) -> Result<Object> {
        self.checkout(None).await
    }

    /// Records the pool's usage gauges (at each checkout and after each
    /// call: a mutex taken for a few loads).
    pub(crate) fn record_usage(&self) {
        let s = self.pool.status();
        observe::pool_usage(
            SYSTEM,
            self.label,
            s.size.saturating_sub(s.available),
            s.available,
            s.max_size,
        );
    }

    /// Checks a connection out of the pool, waiting at most `wait` for a
    /// free one (`Duration::ZERO`: only one free right now).
    async fn get_within(&self, wait: Duration) -> Result<Object> {
        self.checkout(Some(wait)).await
    }

    /// Checks a connection out, waiting at most `wait` (`None`: the acquire
    /// timeout). A connection free at once (or a new one opened at once) is
    /// the hot path of every call and records no wait, as the SQLite writer
    /// gate; only a caller that finds every connection in use is counted in
    /// the pending gauge and the wait histogram.
    async fn checkout(&self, wait: Option<Duration>) -> Result<Object> {
        let mut timeouts = self.pool.timeouts();
        let full_wait = wait.or(timeouts.wait);
        timeouts.wait = Some(Duration::ZERO);
        let out = match self.pool.timeout_get(&timeouts).await {
            Err(PoolError::Timeout(TimeoutType::Wait)) if wait != Some(Duration::ZERO) => {
                timeouts.wait = full_wait;
                // Idle read lanes give their connections back for it.
                let _waiter = self.lanes.as_ref().map(lanes::Lanes::waiting);
                let waiting = observe::Waiting::start(SYSTEM, self.label);
                let got = self.pool.timeout_get(&timeouts).await;
                waiting.done();
                got
            }
            other => other,
        }
        .map_err(error::map_pool);
        self.record_usage();
        out
    }

    /// The connection for one repository call outside a unit of work: a
    /// shared one for a read (`shared`), else one of its own.
    pub(crate) async fn conn(&self, shared: bool) -> Result<lanes::Conn<'_>> {
        if let (true, Some(lanes)) = (shared, &self.lanes) {
            lanes.read(|wait| self.get_within(wait)).await
        } else {
            Ok(lanes::Conn::Exclusive(self.get().await?))
        }
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let c = self.get().await?;
        let out = with_deadline(self.deadline, async {
            c.simple_query("").await.map_err(error::map)?;
            Ok(())
        })
        .await;
        if matches!(out, Err(Error::Timeout { .. })) {
            discard_from(self.label, c, "deadline");
        }
        out
    }

    /// Whether statements go unnamed (see [`stmt`]).
    pub(crate) fn unnamed(&self) -> bool {
        self.unnamed
    }

    /// Begins a unit of work on `c` (with the transaction's settings behind
    /// a transaction pooler).
    pub(crate) async fn begin(&self, c: &RawClient) -> Result<()> {
        c.batch_execute(&self.begin).await.map_err(error::map)
    }

    /// The client-side deadline of one call (statement timeout + grace), if
    /// statement timeouts are on.
    pub(crate) fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    pub(crate) fn close(&self) {
        observe::closed(SYSTEM, self.label, self.pool.status().size as u64);
        self.pool.close();
        if let Some(lanes) = &self.lanes {
            lanes.clear();
        }
    }
}
