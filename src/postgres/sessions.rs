//! `sessions` on PostgreSQL. `token` holds the SHA-256 digest of the bearer token.

use super::error::map;
use super::secret::Redacted;
use super::Client;
use crate::error::{Entity, Error, Result};
use crate::models::{Session, SessionId, UserId};

pub(crate) async fn create(
    c: &Client<'_>,
    digest: &[u8; 32],
    user: UserId,
    created_at: i64,
    expires_at: i64,
) -> Result<()> {
    let st =
        "INSERT INTO sessions (token, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4)";
    c.execute(
        st,
        &[&Redacted(&digest[..]), &user.0, &expires_at, &created_at],
    )
    .await
    .map_err(map)?;
    Ok(())
}

pub(crate) async fn lookup(c: &Client<'_>, digest: &[u8; 32]) -> Result<(UserId, i64, i64)> {
    let st = "SELECT user_id, created_at, expires_at FROM sessions WHERE token = $1";
    match c
        .query_opt(st, &[&Redacted(&digest[..])])
        .await
        .map_err(map)?
    {
        Some(r) => Ok((
            UserId(r.try_get(0).map_err(map)?),
            r.try_get(1).map_err(map)?,
            r.try_get(2).map_err(map)?,
        )),
        None => Err(Error::NotFound(Entity::Session)),
    }
}

pub(crate) async fn delete(c: &Client<'_>, digest: &[u8; 32]) -> Result<()> {
    let st = "DELETE FROM sessions WHERE token = $1";
    if c.execute(st, &[&Redacted(&digest[..])])
        .await
        .map_err(map)?
        == 0
    {
        return Err(Error::NotFound(Entity::Session));
    }
    Ok(())
}

pub(crate) async fn delete_for_user(c: &Client<'_>, user: UserId) -> Result<u64> {
    let st = "DELETE FROM sessions WHERE user_id = $1";
    c.execute(st, &[&user.0]).await.map_err(map)
}

pub(crate) async fn list_for_user(c: &Client<'_>, user: UserId) -> Result<Vec<Session>> {
    let st = "SELECT token, created_at, expires_at FROM sessions WHERE user_id = $1 \
             ORDER BY created_at, token";
    let rows = c.query(st, &[&user.0]).await.map_err(map)?;
    collect(&rows, user)
}

/// At most `limit` sessions after `(created_at, token)` in the list order
/// (the repository passes a session id padded with 0xFF bytes as the token).
pub(crate) async fn list_for_user_page(
    c: &Client<'_>,
    user: UserId,
    after: (i64, &[u8; 32]),
    limit: i64,
) -> Result<Vec<Session>> {
    let st = "SELECT token, created_at, expires_at FROM sessions WHERE user_id = $1 \
             AND (created_at, token) > ($2, $3) ORDER BY created_at, token LIMIT $4";
    let rows = c
        .query(st, &[&user.0, &after.0, &&after.1[..], &limit])
        .await
        .map_err(map)?;
    collect(&rows, user)
}

fn collect(rows: &[tokio_postgres::Row], user: UserId) -> Result<Vec<Session>> {
    rows.iter()
        .map(|r| {
            let token: &[u8] = r.try_get(0).map_err(map)?;
            let id = SessionId::from_digest(token).ok_or_else(|| Error::Constraint {
                constraint: "sessions.token is not a 32-byte digest".into(),
                source: "malformed row".into(),
            })?;
            Ok(Session {
                id,
                user_id: user,
                created_at: r.try_get(1).map_err(map)?,
                expires_at: r.try_get(2).map_err(map)?,
            })
        })
        .collect()
}

pub(crate) async fn revoke(c: &Client<'_>, user: UserId, id: &SessionId) -> Result<()> {
    let st = "DELETE FROM sessions WHERE user_id = $1 AND substring(token FROM 1 FOR 16) = $2";
    if c.execute(st, &[&user.0, &&id.0[..]]).await.map_err(map)? == 0 {
        return Err(Error::NotFound(Entity::Session));
    }
    Ok(())
}

/// Deletes at most `limit` expired sessions; rows locked by others are
/// skipped, so concurrent sweepers and writers never wait on each other.
pub(crate) async fn delete_expired_batch(c: &Client<'_>, now: i64, limit: i64) -> Result<u64> {
    let st = "DELETE FROM sessions WHERE token IN \
             (SELECT token FROM sessions WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)";
    c.execute(st, &[&now, &limit]).await.map_err(map)
}
