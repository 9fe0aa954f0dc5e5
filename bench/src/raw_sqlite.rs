//! The limit on SQLite: raw rusqlite, synchronous on the calling task, with
//! cached statements. Two shapes: one connection that concurrent tasks share
//! through a mutex (the reference figure), and the fair one, persist's
//! shape: one writer connection for writes and as many reader connections
//! as persist opens, a read taking a free reader.

use std::hint::black_box;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};

use crate::data::{
    digest, loadout_values, login_token, seed_email, Inputs, BULK_ROWS, PASS_HASH, SESSION_TTL,
};
use crate::ops::Op;
use crate::sql::sqlite as q;

/// `PRAGMA synchronous` level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    Full,
    Normal,
}

impl Sync {
    pub fn name(self) -> &'static str {
        match self {
            Sync::Full => "full",
            Sync::Normal => "normal",
        }
    }
}

pub struct RawSqlite {
    /// Writes (and, without readers, reads too).
    conn: Mutex<Connection>,
    /// Reader connections; empty: reads use `conn`.
    readers: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
    /// persist's shape: writers queue on an async gate before taking the
    /// writer connection, so a waiting writer parks its task, not a worker
    /// thread.
    gate: Option<tokio::sync::Mutex<()>>,
    lookup_sql: &'static str,
}

/// Opens a connection with the settings persist uses (WAL, foreign keys,
/// busy timeout, the given synchronous level).
pub fn connect(path: &Path, sync: Sync) -> Result<Connection> {
    let c = Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    c.busy_timeout(Duration::from_secs(5))?;
    c.set_prepared_statement_cache_capacity(64);
    let mode: String = c.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    ensure!(mode.eq_ignore_ascii_case("wal"), "journal_mode is {mode}");
    c.pragma_update(
        None,
        "synchronous",
        match sync {
            Sync::Full => 2,
            Sync::Normal => 1,
        },
    )?;
    c.pragma_update(None, "foreign_keys", true)?;
    Ok(c)
}

impl RawSqlite {
    pub fn open(path: &Path, sync: Sync) -> Result<Self> {
        Self::open_with(path, sync, &[])
    }

    /// With extra integer pragmas (design variants).
    pub fn open_with(path: &Path, sync: Sync, pragmas: &[(&str, i64)]) -> Result<Self> {
        let c = connect(path, sync)?;
        for (name, value) in pragmas {
            c.pragma_update(None, name, value)?;
        }
        Ok(RawSqlite {
            conn: Mutex::new(c),
            readers: Vec::new(),
            next: std::sync::atomic::AtomicUsize::new(0),
            gate: None,
            lookup_sql: q::LOOKUP,
        })
    }

    /// One writer connection and `readers` reader connections.
    pub fn with_readers(path: &Path, sync: Sync, readers: usize) -> Result<Self> {
        let mut r = Self::open(path, sync)?;
        for _ in 0..readers {
            r.readers.push(Mutex::new(connect(path, sync)?));
        }
        r.gate = Some(tokio::sync::Mutex::new(()));
        Ok(r)
    }

    /// The value of a pragma on every connection (writer first).
    pub fn pragma_all(&self, name: &str) -> Result<Vec<String>> {
        std::iter::once(&self.conn)
            .chain(&self.readers)
            .map(|m| {
                let c = m.lock().map_err(|_| anyhow!("poisoned connection"))?;
                Ok(c.pragma_query_value(None, name, |r| {
                    Ok(match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                        other => format!("{other:?}"),
                    })
                })?)
            })
            .collect()
    }

    /// The connection for `op`: a free reader for reads (the next one in
    /// turn when all are busy), the writer otherwise.
    fn conn_for(&self, op: Op) -> Result<std::sync::MutexGuard<'_, Connection>> {
        let n = self.readers.len();
        if n == 0 || !op.is_read() {
            return self.conn.lock().map_err(|_| anyhow!("poisoned connection"));
        }
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for k in 0..n {
            if let Ok(g) = self.readers[(start + k) % n].try_lock() {
                return Ok(g);
            }
        }
        self.readers[start % n]
            .lock()
            .map_err(|_| anyhow!("poisoned connection"))
    }

    /// Looks sessions up with another statement (a design variant's table).
    pub fn with_lookup_sql(mut self, sql: &'static str) -> Self {
        self.lookup_sql = sql;
        self
    }

    /// The value of an integer pragma on this connection.
    pub fn pragma(&self, name: &str) -> Result<i64> {
        let c = self
            .conn
            .lock()
            .map_err(|_| anyhow!("poisoned connection"))?;
        Ok(c.pragma_query_value(None, name, |r| r.get(0))?)
    }

    /// Runs `op` on the calling task; with persist's shape, a write first
    /// waits its turn at the async gate.
    pub async fn run_async(&self, op: Op, x: &Inputs) -> Result<()> {
        match &self.gate {
            Some(gate) if !op.is_read() => {
                let _turn = gate.lock().await;
                self.run(op, x)
            }
            _ => self.run(op, x),
        }
    }

    pub fn run(&self, op: Op, x: &Inputs) -> Result<()> {
        let c = self.conn_for(op)?;
        match op {
            Op::SessionLookup => {
                let d = digest(&x.lookup_token());
                let row = c
                    .prepare_cached(self.lookup_sql)?
                    .query_row([&d[..]], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()?;
                black_box(row.ok_or_else(|| anyhow!("session not found"))?);
            }
            Op::UnlockList => {
                let mut st = c.prepare_cached(q::LIST_UNLOCKS)?;
                let rows = st
                    .query_map([x.list_user()], |r| {
                        Ok((r.get::<_, i32>(0)?, r.get::<_, i64>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                ensure!(!rows.is_empty(), "unlock list came back empty");
                black_box(rows);
            }
            Op::AccountCreate => {
                let (email, username) = x.new_account("c");
                black_box(create_account(&c, &email, &username, x.at())?);
            }
            Op::LoginStamp => {
                let n = c
                    .prepare_cached(q::TOUCH_LOGIN)?
                    .execute(params![x.user(), x.at()])?;
                ensure!(n == 1, "no account");
            }
            Op::LoadoutSave => save_loadout(&c, x, x.user())?,
            Op::UnlockGrant => {
                black_box(grant(&c, x.grant_user(), x.grant_flag(), x.at())?);
            }
            Op::AddXp => {
                black_box(add_xp(&c, x.user(), 10)?);
            }
            Op::RegisterTx => in_tx(&c, |c| {
                let (email, username) = x.new_account("r");
                let id = create_account(c, &email, &username, x.at())?;
                c.prepare_cached(q::SET_PROGRESSION)?
                    .execute(params![id, 0, 0])?;
                save_loadout(c, x, id)
            })?,
            Op::BattleEndTx => in_tx(&c, |c| {
                let user = x.grant_user();
                black_box(add_xp(c, user, 25)?);
                for f in x.battle_flags() {
                    black_box(grant(c, user, f, x.at())?);
                }
                Ok(())
            })?,
            Op::Insert1000Tx => in_tx(&c, |c| {
                for j in 0..BULK_ROWS {
                    let (email, username) = x.bulk_account(j);
                    black_box(create_account(c, &email, &username, x.at())?);
                }
                Ok(())
            })?,
            Op::LoadoutGet => {
                let mut st = c.prepare_cached(q::GET_LOADOUT)?;
                let v = st
                    .query_row([x.user()], |r| {
                        let mut v = [0i32; 15];
                        for (i, x) in v.iter_mut().enumerate() {
                            *x = r.get(i)?;
                        }
                        Ok((v, r.get::<_, i64>(15)?))
                    })
                    .optional()?
                    .ok_or_else(|| anyhow!("no loadout"))?;
                black_box(v);
            }
            Op::ProgressionGet => {
                let v = c
                    .prepare_cached(q::GET_PROGRESSION)?
                    .query_row([x.user()], |r| {
                        Ok((r.get::<_, i32>(0)?, r.get::<_, i64>(1)?))
                    })
                    .optional()?
                    .ok_or_else(|| anyhow!("no progression"))?;
                black_box(v);
            }
            Op::Login => {
                let key = persist::canonical_key(&seed_email(x.user() as u64));
                let id: i64 = c
                    .prepare_cached(q::FIND_BY_EMAIL)?
                    .query_row([&key], |r| {
                        black_box((
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                        ));
                        r.get(0)
                    })
                    .optional()?
                    .ok_or_else(|| anyhow!("no account"))?;
                let n = c
                    .prepare_cached(q::TOUCH_LOGIN)?
                    .execute(params![id, x.at()])?;
                ensure!(n == 1, "no account");
                create_session(&c, x, id)?;
            }
            Op::Logout => {
                let d = digest(&login_token(x.logout));
                let n = c.prepare_cached(q::DELETE_SESSION)?.execute([&d[..]])?;
                ensure!(n == 1, "no session to log out");
            }
            Op::Register => {
                let id = in_tx_value(&c, |c| {
                    let (email, username) = x.new_account("g");
                    let id = create_account(c, &email, &username, x.at())?;
                    c.prepare_cached(q::SET_PROGRESSION)?
                        .execute(params![id, 0, 0])?;
                    save_loadout(c, x, id)?;
                    Ok(id)
                })?;
                create_session(&c, x, id)?;
            }
            Op::ListSessions => {
                let mut st = c.prepare_cached(q::LIST_SESSIONS)?;
                let rows = st
                    .query_map([x.many_user], |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                ensure!(!rows.is_empty(), "no sessions listed");
                black_box(rows);
            }
            Op::DeleteUserSessions => {
                black_box(
                    c.prepare_cached(q::DELETE_USER_SESSIONS)?
                        .execute([x.many_user])?,
                );
            }
        }
        Ok(())
    }
}

fn create_session(c: &Connection, x: &Inputs, user: i64) -> Result<()> {
    let d = digest(&login_token(x.seq));
    c.prepare_cached(q::CREATE_SESSION)?.execute(params![
        &d[..],
        user,
        x.at() + SESSION_TTL,
        x.at()
    ])?;
    Ok(())
}

fn in_tx_value<T>(c: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let mut out = None;
    in_tx(c, |c| {
        out = Some(f(c)?);
        Ok(())
    })?;
    out.ok_or_else(|| anyhow!("transaction body gave no value"))
}

fn in_tx(c: &Connection, f: impl FnOnce(&Connection) -> Result<()>) -> Result<()> {
    c.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    match f(c) {
        Ok(()) => {
            c.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        }
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn create_account(c: &Connection, email: &str, username: &str, at: i64) -> Result<i64> {
    let email_key = persist::canonical_key(email);
    let username_key = persist::canonical_key(username);
    Ok(c.prepare_cached(q::CREATE_ACCOUNT)?.query_row(
        params![email, email_key, username, username_key, PASS_HASH, at],
        |r| r.get::<_, i64>(0),
    )?)
}

fn save_loadout(c: &Connection, x: &Inputs, user: i64) -> Result<()> {
    let l = x.loadout(user);
    let v = loadout_values(&l);
    c.prepare_cached(q::SAVE_LOADOUT)?.execute(params![
        user,
        v[0],
        v[1],
        v[2],
        v[3],
        v[4],
        v[5],
        v[6],
        v[7],
        v[8],
        v[9],
        v[10],
        v[11],
        v[12],
        v[13],
        v[14],
        l.updated_at
    ])?;
    Ok(())
}

fn grant(c: &Connection, user: i64, flag: i32, at: i64) -> Result<bool> {
    Ok(c.prepare_cached(q::GRANT)?
        .execute(params![user, flag, at])?
        == 1)
}

fn add_xp(c: &Connection, user: i64, delta: i64) -> Result<(i32, i64)> {
    c.prepare_cached(q::ADD_XP)?
        .query_row(params![user, delta], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| anyhow!("no progression row"))
}
