//! `accounts` on PostgreSQL.

use tokio_postgres::Row;

use super::error::map;
use super::secret::Redacted;
use super::{Client, Param};
use crate::error::{Entity, Error, Result};
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

fn row(r: &Row) -> Result<Account> {
    Ok(Account {
        user_id: UserId(r.try_get(0).map_err(map)?),
        email: r.try_get(1).map_err(map)?,
        username: r.try_get(2).map_err(map)?,
        pass_hash: r.try_get(3).map_err(map)?,
        created_at: r.try_get(4).map_err(map)?,
        last_login_at: r.try_get(5).map_err(map)?,
    })
}

async fn one(c: &Client<'_>, sql: &str, key: &dyn Param) -> Result<Account> {
    let st = sql;
    match c.query_opt(st, &[key]).await.map_err(map)? {
        Some(r) => row(&r),
        None => Err(Error::NotFound(Entity::Account)),
    }
}

pub(crate) async fn create(
    c: &Client<'_>,
    a: &NewAccount<'_>,
    email_key: &str,
    username_key: &str,
) -> Result<Account> {
    let st =
        "INSERT INTO accounts (email, email_key, username, username_key, pass_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING user_id";
    let r = c
        .query_one(
            st,
            &[
                &Redacted(a.email),
                &Redacted(email_key),
                &a.username,
                &username_key,
                &Redacted(a.pass_hash),
                &a.created_at,
            ],
        )
        .await
        .map_err(map)?;
    Ok(Account {
        user_id: UserId(r.try_get(0).map_err(map)?),
        email: a.email.to_string(),
        username: a.username.to_string(),
        pass_hash: a.pass_hash.to_vec(),
        created_at: a.created_at,
        last_login_at: None,
    })
}

pub(crate) async fn get(c: &Client<'_>, id: UserId) -> Result<Account> {
    one(c, select_where!("user_id = $1"), &id.0).await
}

pub(crate) async fn find_by_email_key(c: &Client<'_>, key: &str) -> Result<Account> {
    one(c, select_where!("email_key = $1"), &Redacted(key)).await
}

pub(crate) async fn find_by_username_key(c: &Client<'_>, key: &str) -> Result<Account> {
    one(c, select_where!("username_key = $1"), &key).await
}

async fn update(c: &Client<'_>, sql: &str, params: &[&dyn Param]) -> Result<()> {
    let st = sql;
    if c.execute(st, params).await.map_err(map)? == 0 {
        return Err(Error::NotFound(Entity::Account));
    }
    Ok(())
}

pub(crate) async fn touch_login(c: &Client<'_>, id: UserId, at: i64) -> Result<()> {
    update(
        c,
        "UPDATE accounts SET last_login_at = $2 WHERE user_id = $1",
        &[&id.0, &at],
    )
    .await
}

pub(crate) async fn update_pass_hash(c: &Client<'_>, id: UserId, hash: &[u8]) -> Result<()> {
    update(
        c,
        "UPDATE accounts SET pass_hash = $2 WHERE user_id = $1",
        &[&id.0, &Redacted(hash)],
    )
    .await
}

pub(crate) async fn update_email(c: &Client<'_>, id: UserId, email: &str, key: &str) -> Result<()> {
    update(
        c,
        "UPDATE accounts SET email = $2, email_key = $3 WHERE user_id = $1",
        &[&id.0, &Redacted(email), &Redacted(key)],
    )
    .await
}

pub(crate) async fn update_username(
    c: &Client<'_>,
    id: UserId,
    username: &str,
    key: &str,
) -> Result<()> {
    update(
        c,
        "UPDATE accounts SET username = $2, username_key = $3 WHERE user_id = $1",
        &[&id.0, &username, &key],
    )
    .await
}

pub(crate) async fn delete(c: &Client<'_>, id: UserId) -> Result<()> {
    update(c, "DELETE FROM accounts WHERE user_id = $1", &[&id.0]).await
}
