//! The limit on PostgreSQL: raw tokio-postgres with statements prepared once
//! per connection. Two shapes: a minimal pool of 8 connections (a semaphore
//! and a free list, no checkout round trip), and one shared connection that
//! concurrent tasks pipeline on.

use std::collections::VecDeque;
use std::hint::black_box;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Mutex;

use anyhow::{anyhow, ensure, Context, Result};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, NoTls, Statement};

use crate::data::{
    digest, loadout_values, login_token, seed_email, Inputs, BULK_ROWS, PASS_HASH, SESSION_TTL,
};
use crate::ops::Op;
use crate::sql::postgres as q;

pub struct Stmts {
    lookup: Statement,
    create_account: Statement,
    touch_login: Statement,
    save_loadout: Statement,
    grant: Statement,
    list_unlocks: Statement,
    add_xp: Statement,
    set_progression: Statement,
    find_by_email: Statement,
    get_loadout: Statement,
    get_progression: Statement,
    create_session: Statement,
    delete_session: Statement,
    list_sessions: Statement,
    delete_user_sessions: Statement,
}

pub struct PgConn {
    pub client: Client,
    st: Stmts,
}

/// Connects without TLS (the benchmark compares on plaintext loopback).
pub async fn connect_client(url: &str) -> Result<Client> {
    let cfg = tokio_postgres::Config::from_str(url).context("parse PostgreSQL URL")?;
    let (client, conn) = cfg.connect(NoTls).await.context("connect to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("persist-bench: raw PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

impl PgConn {
    pub async fn connect(url: &str) -> Result<Self> {
        let client = connect_client(url).await?;
        let st = Stmts {
            lookup: client.prepare(q::LOOKUP).await?,
            create_account: client.prepare(q::CREATE_ACCOUNT).await?,
            touch_login: client.prepare(q::TOUCH_LOGIN).await?,
            save_loadout: client.prepare(q::SAVE_LOADOUT).await?,
            grant: client.prepare(q::GRANT).await?,
            list_unlocks: client.prepare(q::LIST_UNLOCKS).await?,
            add_xp: client.prepare(q::ADD_XP).await?,
            set_progression: client.prepare(q::SET_PROGRESSION).await?,
            find_by_email: client.prepare(q::FIND_BY_EMAIL).await?,
            get_loadout: client.prepare(q::GET_LOADOUT).await?,
            get_progression: client.prepare(q::GET_PROGRESSION).await?,
            create_session: client.prepare(q::CREATE_SESSION).await?,
            delete_session: client.prepare(q::DELETE_SESSION).await?,
            list_sessions: client.prepare(q::LIST_SESSIONS).await?,
            delete_user_sessions: client.prepare(q::DELETE_USER_SESSIONS).await?,
        };
        Ok(PgConn { client, st })
    }

    async fn run(&self, op: Op, x: &Inputs) -> Result<()> {
        let c = &self.client;
        let st = &self.st;
        match op {
            Op::SessionLookup => {
                let d = digest(&x.lookup_token());
                let r = c
                    .query_opt(&st.lookup, &[&&d[..]])
                    .await?
                    .ok_or_else(|| anyhow!("session not found"))?;
                black_box((
                    r.try_get::<_, i64>(0)?,
                    r.try_get::<_, i64>(1)?,
                    r.try_get::<_, i64>(2)?,
                ));
            }
            Op::UnlockList => {
                let rows = c.query(&st.list_unlocks, &[&x.list_user()]).await?;
                let v = rows
                    .iter()
                    .map(|r| Ok((r.try_get::<_, i32>(0)?, r.try_get::<_, i64>(1)?)))
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
                ensure!(!v.is_empty(), "unlock list came back empty");
                black_box(v);
            }
            Op::AccountCreate => {
                let (email, username) = x.new_account("c");
                black_box(self.create_account(&email, &username, x.at()).await?);
            }
            Op::LoginStamp => {
                let n = c.execute(&st.touch_login, &[&x.user(), &x.at()]).await?;
                ensure!(n == 1, "no account");
            }
            Op::LoadoutSave => self.save_loadout(x, x.user()).await?,
            Op::UnlockGrant => {
                let n = c
                    .execute(&st.grant, &[&x.grant_user(), &x.grant_flag(), &x.at()])
                    .await?;
                black_box(n == 1);
            }
            Op::AddXp => {
                black_box(self.add_xp(x.user(), 10).await?);
            }
            Op::RegisterTx => {
                self.in_tx(async {
                    let (email, username) = x.new_account("r");
                    let id = self.create_account(&email, &username, x.at()).await?;
                    c.execute(&st.set_progression, &[&id, &0i32, &0i64]).await?;
                    self.save_loadout(x, id).await
                })
                .await?
            }
            Op::BattleEndTx => {
                self.in_tx(async {
                    let user = x.grant_user();
                    black_box(self.add_xp(user, 25).await?);
                    for f in x.battle_flags() {
                        black_box(c.execute(&st.grant, &[&user, &f, &x.at()]).await?);
                    }
                    Ok(())
                })
                .await?
            }
            Op::Insert1000Tx => {
                self.in_tx(async {
                    for j in 0..BULK_ROWS {
                        let (email, username) = x.bulk_account(j);
                        black_box(self.create_account(&email, &username, x.at()).await?);
                    }
                    Ok(())
                })
                .await?
            }
            Op::LoadoutGet => {
                let r = c
                    .query_opt(&st.get_loadout, &[&x.user()])
                    .await?
                    .ok_or_else(|| anyhow!("no loadout"))?;
                let mut v = [0i32; 15];
                for (i, x) in v.iter_mut().enumerate() {
                    *x = r.try_get(i)?;
                }
                black_box((v, r.try_get::<_, i64>(15)?));
            }
            Op::ProgressionGet => {
                let r = c
                    .query_opt(&st.get_progression, &[&x.user()])
                    .await?
                    .ok_or_else(|| anyhow!("no progression"))?;
                black_box((r.try_get::<_, i32>(0)?, r.try_get::<_, i64>(1)?));
            }
            Op::Login => {
                let key = persist::canonical_key(&seed_email(x.user() as u64));
                let r = c
                    .query_opt(&st.find_by_email, &[&key])
                    .await?
                    .ok_or_else(|| anyhow!("no account"))?;
                let id: i64 = r.try_get(0)?;
                black_box((
                    r.try_get::<_, String>(1)?,
                    r.try_get::<_, String>(2)?,
                    r.try_get::<_, Vec<u8>>(3)?,
                    r.try_get::<_, i64>(4)?,
                    r.try_get::<_, Option<i64>>(5)?,
                ));
                let n = c.execute(&st.touch_login, &[&id, &x.at()]).await?;
                ensure!(n == 1, "no account");
                self.create_session(x, id).await?;
            }
            Op::Logout => {
                let d = digest(&login_token(x.logout));
                let n = c.execute(&st.delete_session, &[&&d[..]]).await?;
                ensure!(n == 1, "no session to log out");
            }
            Op::Register => {
                let id = std::sync::atomic::AtomicI64::new(0);
                self.in_tx(async {
                    let (email, username) = x.new_account("g");
                    let v = self.create_account(&email, &username, x.at()).await?;
                    c.execute(&st.set_progression, &[&v, &0i32, &0i64]).await?;
                    self.save_loadout(x, v).await?;
                    id.store(v, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                })
                .await?;
                self.create_session(x, id.load(std::sync::atomic::Ordering::Relaxed))
                    .await?;
            }
            Op::ListSessions => {
                let rows = c.query(&st.list_sessions, &[&x.many_user]).await?;
                let v = rows
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get::<_, Vec<u8>>(0)?,
                            r.try_get::<_, i64>(1)?,
                            r.try_get::<_, i64>(2)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
                ensure!(!v.is_empty(), "no sessions listed");
                black_box(v);
            }
            Op::DeleteUserSessions => {
                black_box(c.execute(&st.delete_user_sessions, &[&x.many_user]).await?);
            }
        }
        Ok(())
    }

    async fn create_session(&self, x: &Inputs, user: i64) -> Result<()> {
        let d = digest(&login_token(x.seq));
        self.client
            .execute(
                &self.st.create_session,
                &[&&d[..], &user, &(x.at() + SESSION_TTL), &x.at()],
            )
            .await?;
        Ok(())
    }

    async fn in_tx(&self, body: impl std::future::Future<Output = Result<()>>) -> Result<()> {
        self.client.batch_execute("BEGIN").await?;
        match body.await {
            Ok(()) => {
                self.client.batch_execute("COMMIT").await?;
                Ok(())
            }
            Err(e) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn create_account(&self, email: &str, username: &str, at: i64) -> Result<i64> {
        let email_key = persist::canonical_key(email);
        let username_key = persist::canonical_key(username);
        let r = self
            .client
            .query_one(
                &self.st.create_account,
                &[
                    &email,
                    &email_key,
                    &username,
                    &username_key,
                    &PASS_HASH,
                    &at,
                ],
            )
            .await?;
        Ok(r.try_get(0)?)
    }

    async fn save_loadout(&self, x: &Inputs, user: i64) -> Result<()> {
        let l = x.loadout(user);
        let v = loadout_values(&l);
        self.client
            .execute(
                &self.st.save_loadout,
                &[
                    &user,
                    &v[0],
                    &v[1],
                    &v[2],
                    &v[3],
                    &v[4],
                    &v[5],
                    &v[6],
                    &v[7],
                    &v[8],
                    &v[9],
                    &v[10],
                    &v[11],
                    &v[12],
                    &v[13],
                    &v[14],
                    &l.updated_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn add_xp(&self, user: i64, delta: i64) -> Result<(i32, i64)> {
        let r = self
            .client
            .query_opt(&self.st.add_xp, &[&user, &delta])
            .await?
            .ok_or_else(|| anyhow!("no progression row"))?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }
}

enum Mode {
    /// A minimal pool: checkout is a semaphore permit and a pop.
    Pool {
        permits: Semaphore,
        idle: Mutex<VecDeque<PgConn>>,
        /// Hand out the least recently used connection (deadpool's default
        /// queue mode) instead of the most recently used one.
        fifo: bool,
    },
    /// One connection shared by every task: concurrent single statements
    /// pipeline; transactions take turns.
    Shared {
        conn: Box<PgConn>,
        tx_turn: tokio::sync::Mutex<()>,
    },
    /// persist's read shape: a few connections shared by every task, each
    /// call on the one with the fewest calls in flight (reads pipeline on
    /// it). Single statements only.
    Lanes {
        conns: Vec<(PgConn, std::sync::atomic::AtomicUsize)>,
    },
}

pub struct RawPg {
    mode: Mode,
}

struct Pooled<'a> {
    idle: &'a Mutex<VecDeque<PgConn>>,
    conn: Option<PgConn>,
    _permit: SemaphorePermit<'a>,
}

impl Deref for Pooled<'_> {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        self.conn.as_ref().expect("present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push_back(c);
            }
        }
    }
}

impl RawPg {
    /// A pool of `size` connections handing out the most recently used
    /// one (LIFO), or with `fifo` the least recently used one.
    pub async fn pool(url: &str, size: usize, fifo: bool) -> Result<Self> {
        let mut conns = VecDeque::with_capacity(size);
        for _ in 0..size {
            conns.push_back(PgConn::connect(url).await?);
        }
        Ok(RawPg {
            mode: Mode::Pool {
                permits: Semaphore::new(size),
                idle: Mutex::new(conns),
                fifo,
            },
        })
    }

    /// `n` shared pipelined connections (persist's read shape).
    pub async fn lanes(url: &str, n: usize) -> Result<Self> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push((
                PgConn::connect(url).await?,
                std::sync::atomic::AtomicUsize::new(0),
            ));
        }
        Ok(RawPg {
            mode: Mode::Lanes { conns },
        })
    }

    /// The clients this implementation runs on (for durability queries).
    pub fn clients(&self) -> Vec<&Client> {
        match &self.mode {
            Mode::Shared { conn, .. } => vec![&conn.client],
            Mode::Lanes { conns } => conns.iter().map(|(c, _)| &c.client).collect(),
            // A pool's connections are idle between calls; peeked under the lock.
            Mode::Pool { .. } => Vec::new(),
        }
    }

    /// Runs `f` on every idle pooled connection (durability queries).
    pub async fn pool_settings(&self, sql: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        match &self.mode {
            Mode::Pool { idle, .. } => {
                let conns: Vec<PgConn> = {
                    let mut idle = idle.lock().map_err(|_| anyhow!("poisoned"))?;
                    idle.drain(..).collect()
                };
                let mut err = None;
                for c in &conns {
                    match c.client.query_one(sql, &[]).await {
                        Ok(r) => out.push(r.try_get::<_, String>(0)?),
                        Err(e) => err = Some(e),
                    }
                }
                idle.lock().map_err(|_| anyhow!("poisoned"))?.extend(conns);
                if let Some(e) = err {
                    return Err(e.into());
                }
            }
            _ => {
                for c in self.clients() {
                    out.push(c.query_one(sql, &[]).await?.try_get::<_, String>(0)?);
                }
            }
        }
        Ok(out)
    }

    pub async fn shared(url: &str) -> Result<Self> {
        Ok(RawPg {
            mode: Mode::Shared {
                conn: Box::new(PgConn::connect(url).await?),
                tx_turn: tokio::sync::Mutex::new(()),
            },
        })
    }

    pub async fn run(&self, op: Op, x: &Inputs) -> Result<()> {
        match &self.mode {
            Mode::Pool {
                permits,
                idle,
                fifo,
            } => {
                let permit = permits.acquire().await?;
                let conn = {
                    let mut idle = idle.lock().map_err(|_| anyhow!("poisoned"))?;
                    if *fifo {
                        idle.pop_front()
                    } else {
                        idle.pop_back()
                    }
                }
                .ok_or_else(|| anyhow!("pool free list empty"))?;
                let c = Pooled {
                    idle,
                    conn: Some(conn),
                    _permit: permit,
                };
                c.run(op, x).await
            }
            Mode::Lanes { conns } => {
                ensure!(
                    !op.is_tx(),
                    "the shared-lanes shape runs single statements only"
                );
                use std::sync::atomic::Ordering::Relaxed;
                let (conn, inflight) = conns
                    .iter()
                    .min_by_key(|(_, n)| n.load(Relaxed))
                    .ok_or_else(|| anyhow!("no connections"))?;
                inflight.fetch_add(1, Relaxed);
                let out = conn.run(op, x).await;
                inflight.fetch_sub(1, Relaxed);
                out
            }
            Mode::Shared { conn, tx_turn } => {
                if op.is_tx() {
                    let _turn = tx_turn.lock().await;
                    conn.run(op, x).await
                } else {
                    conn.run(op, x).await
                }
            }
        }
    }
}
