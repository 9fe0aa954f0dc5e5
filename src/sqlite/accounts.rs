//! `accounts` on SQLite.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::error::{is_unique_violation, map, unique_or};
use crate::error::{Entity, Error, Result, UniqueKey};
use crate::models::{Account, NewAccount, UserId};

macro_rules! select_where {
    ($cond:literal) => {
        concat!(
            "SELECT user_id, email, username, pass_hash, created_at, last_login_at \
             FROM accounts WHERE ",
            $cond
        )
    };
}

fn row(r: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        user_id: UserId(r.get(0)?),
        email: r.get(1)?,
        username: r.get(2)?,
        pass_hash: r.get(3)?,
        created_at: r.get(4)?,
        last_login_at: r.get(5)?,
    })
}

fn one(c: &Connection, sql: &str, key: &dyn rusqlite::ToSql) -> Result<Account> {
    c.prepare_cached(sql)
        .and_then(|mut st| st.query_row([key], row).optional())
        .map_err(map)?
        .ok_or(Error::NotFound(Entity::Account))
}

/// Which unique key a failed insert or update collided with. SQLite names the
/// key only in message text, so ask the table instead (email first, as
/// PostgreSQL checks the email constraint first).
fn which_key(c: &Connection, email_key: &str) -> Result<UniqueKey> {
    let taken = c
        .prepare_cached("SELECT 1 FROM accounts WHERE email_key = ?1")
        .and_then(|mut st| st.exists([email_key]))
        .map_err(map)?;
    Ok(if taken {
        UniqueKey::Email
    } else {
        UniqueKey::Username
    })
}

pub(crate) fn create(
    c: &Connection,
    a: &NewAccount<'_>,
    email_key: &str,
    username_key: &str,
) -> Result<Account> {
    let inserted = c
        .prepare_cached(
            "INSERT INTO accounts (email, email_key, username, username_key, pass_hash, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING user_id",
        )
        .and_then(|mut st| {
            st.query_row(
                params![a.email, email_key, a.username, username_key, a.pass_hash, a.created_at],
                |r| r.get::<_, i64>(0),
            )
        });
    match inserted {
        Ok(id) => Ok(Account {
            user_id: UserId(id),
            email: a.email.to_string(),
            username: a.username.to_string(),
            pass_hash: a.pass_hash.to_vec(),
            created_at: a.created_at,
            last_login_at: None,
        }),
        Err(e) if is_unique_violation(&e) => Err(Error::Conflict(which_key(c, email_key)?)),
        Err(e) => Err(map(e)),
    }
}

pub(crate) fn get(c: &Connection, id: UserId) -> Result<Account> {
    one(c, select_where!("user_id = ?1"), &id.0)
}

pub(crate) fn find_by_email_key(c: &Connection, key: &str) -> Result<Account> {
    one(c, select_where!("email_key = ?1"), &key)
}

pub(crate) fn find_by_username_key(c: &Connection, key: &str) -> Result<Account> {
    one(c, select_where!("username_key = ?1"), &key)
}

fn changed(n: usize) -> Result<()> {
    if n == 0 {
        Err(Error::NotFound(Entity::Account))
    } else {
        Ok(())
    }
}

pub(crate) fn touch_login(c: &Connection, id: UserId, at: i64) -> Result<()> {
    let n = c
        .prepare_cached("UPDATE accounts SET last_login_at = ?2 WHERE user_id = ?1")
        .and_then(|mut st| st.execute(params![id.0, at]))
        .map_err(map)?;
    changed(n)
}

pub(crate) fn update_pass_hash(c: &Connection, id: UserId, hash: &[u8]) -> Result<()> {
    let n = c
        .prepare_cached("UPDATE accounts SET pass_hash = ?2 WHERE user_id = ?1")
        .and_then(|mut st| st.execute(params![id.0, hash]))
        .map_err(map)?;
    changed(n)
}

pub(crate) fn update_email(c: &Connection, id: UserId, email: &str, key: &str) -> Result<()> {
    let n = c
        .prepare_cached("UPDATE accounts SET email = ?2, email_key = ?3 WHERE user_id = ?1")
        .and_then(|mut st| st.execute(params![id.0, email, key]))
        .map_err(|e| unique_or(e, UniqueKey::Email))?;
    changed(n)
}

pub(crate) fn update_username(c: &Connection, id: UserId, username: &str, key: &str) -> Result<()> {
    let n = c
        .prepare_cached("UPDATE accounts SET username = ?2, username_key = ?3 WHERE user_id = ?1")
        .and_then(|mut st| st.execute(params![id.0, username, key]))
        .map_err(|e| unique_or(e, UniqueKey::Username))?;
    changed(n)
}

pub(crate) fn delete(c: &Connection, id: UserId) -> Result<()> {
    let n = c
        .prepare_cached("DELETE FROM accounts WHERE user_id = ?1")
        .and_then(|mut st| st.execute([id.0]))
        .map_err(map)?;
    changed(n)
}
