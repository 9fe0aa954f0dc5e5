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

use crate::data::{digest, loadout_values, Inputs, BULK_ROWS, PASS_HASH};
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
        }
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
        conn: PgConn,
        tx_turn: tokio::sync::Mutex<()>,
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

    pub async fn shared(url: &str) -> Result<Self> {
        Ok(RawPg {
            mode: Mode::Shared {
                conn: PgConn::connect(url).await?,
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
