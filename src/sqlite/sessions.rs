//! `sessions` on SQLite. `token` holds the SHA-256 digest of the bearer token.

use rusqlite::{params, Connection, OptionalExtension};

use super::error::{map, unique_or};
use crate::error::{Entity, Error, Result, UniqueKey};
use crate::models::{Session, SessionId, UserId};

pub(crate) fn create(
    c: &Connection,
    digest: &[u8; 32],
    user: UserId,
    created_at: i64,
    expires_at: i64,
) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO sessions (token, user_id, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut st| st.execute(params![&digest[..], user.0, expires_at, created_at]))
    .map_err(|e| unique_or(e, UniqueKey::SessionToken))?;
    Ok(())
}

pub(crate) fn lookup(c: &Connection, digest: &[u8; 32]) -> Result<(UserId, i64, i64)> {
    c.prepare_cached("SELECT user_id, created_at, expires_at FROM sessions WHERE token = ?1")
        .and_then(|mut st| {
            st.query_row([&digest[..]], |r| {
                Ok((UserId(r.get(0)?), r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(map)?
        .ok_or(Error::NotFound(Entity::Session))
}

pub(crate) fn delete(c: &Connection, digest: &[u8; 32]) -> Result<()> {
    let n = c
        .prepare_cached("DELETE FROM sessions WHERE token = ?1")
        .and_then(|mut st| st.execute([&digest[..]]))
        .map_err(map)?;
    if n == 0 {
        return Err(Error::NotFound(Entity::Session));
    }
    Ok(())
}

pub(crate) fn delete_for_user(c: &Connection, user: UserId) -> Result<u64> {
    let n = c
        .prepare_cached("DELETE FROM sessions WHERE user_id = ?1")
        .and_then(|mut st| st.execute([user.0]))
        .map_err(map)?;
    Ok(n as u64)
}

pub(crate) fn list_for_user(c: &Connection, user: UserId) -> Result<Vec<Session>> {
    let mut st = c
        .prepare_cached(
            "SELECT token, created_at, expires_at FROM sessions WHERE user_id = ?1 \
             ORDER BY created_at, token",
        )
        .map_err(map)?;
    let rows = st.query([user.0]).map_err(map)?;
    collect(rows, user)
}

/// At most `limit` sessions after `(created_at, token)` in the list order
/// (the repository passes a session id padded with 0xFF bytes as the token).
pub(crate) fn list_for_user_page(
    c: &Connection,
    user: UserId,
    after: (i64, &[u8; 32]),
    limit: i64,
) -> Result<Vec<Session>> {
    let mut st = c
        .prepare_cached(
            "SELECT token, created_at, expires_at FROM sessions WHERE user_id = ?1 \
             AND (created_at, token) > (?2, ?3) ORDER BY created_at, token LIMIT ?4",
        )
        .map_err(map)?;
    let rows = st
        .query(params![user.0, after.0, &after.1[..], limit])
        .map_err(map)?;
    collect(rows, user)
}

fn collect(rows: rusqlite::Rows<'_>, user: UserId) -> Result<Vec<Session>> {
    let rows = rows.mapped(|r| {
        let token: Vec<u8> = r.get(0)?;
        Ok((token, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    let mut out = Vec::new();
    for row in rows {
        let (token, created_at, expires_at) = row.map_err(map)?;
        let id = SessionId::from_digest(&token).ok_or_else(|| Error::Constraint {
            constraint: "sessions.token is not a 32-byte digest".into(),
            source: "malformed row".into(),
        })?;
        out.push(Session {
            id,
            user_id: user,
            created_at,
            expires_at,
        });
    }
    Ok(out)
}

pub(crate) fn revoke(c: &Connection, user: UserId, id: &SessionId) -> Result<()> {
    let n = c
        .prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND substr(token, 1, 16) = ?2")
        .and_then(|mut st| st.execute(params![user.0, &id.0[..]]))
        .map_err(map)?;
    if n == 0 {
        return Err(Error::NotFound(Entity::Session));
    }
    Ok(())
}

/// Deletes at most `limit` sessions with `expires_at <= now`; one short write.
pub(crate) fn delete_expired_batch(c: &Connection, now: i64, limit: i64) -> Result<u64> {
    let n = c
        .prepare_cached(
            "DELETE FROM sessions WHERE token IN \
             (SELECT token FROM sessions WHERE expires_at <= ?1 LIMIT ?2)",
        )
        .and_then(|mut st| st.execute(params![now, limit]))
        .map_err(map)?;
    Ok(n as u64)
}
