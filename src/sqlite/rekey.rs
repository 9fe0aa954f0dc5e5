//! The key recompute of a migration marked `-- persist:recompute-keys`, on
//! SQLite, inside the migration's transaction: every `accounts` row whose
//! stored key differs from `canonical_key` of its display form gets the new
//! key, unless some new key is empty or taken, in which case the migration is
//! refused with every conflict named (user ids, never the values).

use std::collections::HashMap;

use rusqlite::Connection;

use super::error::map;
use crate::error::Result;
use crate::keys::{self, KeyField, Rekey};
use crate::migrate::{failed, Migration};

/// Rows read per batch.
const BATCH: i64 = 10_000;

/// Runs the recompute when `m` asks for it.
pub(crate) fn after_sql(c: &Connection, m: &Migration) -> Result<()> {
    if !m.recomputes_keys() {
        return Ok(());
    }
    let changes = changes(c)?;
    let mut holders: HashMap<(KeyField, String), Vec<i64>> = HashMap::new();
    for ch in &changes {
        let sql = format!(
            "SELECT user_id FROM accounts WHERE {} = ?1",
            ch.field.column()
        );
        let mut st = c.prepare_cached(&sql).map_err(map)?;
        let ids = st
            .query_map([&ch.key], |r| r.get::<_, i64>(0))
            .map_err(map)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map)?;
        holders.insert((ch.field, ch.key.clone()), ids);
    }
    let problems = keys::rekey_problems(&changes, &holders);
    if !problems.is_empty() {
        return Err(failed(
            m,
            keys::rekey_refusal(&problems),
            "canonical keys would conflict".into(),
        ));
    }
    for ch in &changes {
        let sql = format!(
            "UPDATE accounts SET {} = ?2 WHERE user_id = ?1",
            ch.field.column()
        );
        c.prepare_cached(&sql)
            .and_then(|mut st| st.execute(rusqlite::params![ch.user_id, ch.key]))
            .map_err(|e| failed(m, e.to_string(), e.into()))?;
    }
    if !changes.is_empty() {
        tracing::info!(keys = changes.len(), "recomputed canonical keys");
    }
    Ok(())
}

/// Every key that must change, read in user-id batches.
fn changes(c: &Connection) -> Result<Vec<Rekey>> {
    let mut st = c
        .prepare(
            "SELECT user_id, email, email_key, username, username_key FROM accounts \
             WHERE user_id > ?1 ORDER BY user_id LIMIT ?2",
        )
        .map_err(map)?;
    let mut out = Vec::new();
    let mut after = i64::MIN;
    loop {
        let mut rows = st.query(rusqlite::params![after, BATCH]).map_err(map)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(map)? {
            let id: i64 = r.get(0).map_err(map)?;
            let (email, email_key): (String, String) =
                (r.get(1).map_err(map)?, r.get(2).map_err(map)?);
            let (username, username_key): (String, String) =
                (r.get(3).map_err(map)?, r.get(4).map_err(map)?);
            out.extend(keys::rekeys(
                id,
                &email,
                &email_key,
                &username,
                &username_key,
            ));
            after = id;
            n += 1;
        }
        if n < BATCH {
            return Ok(out);
        }
    }
}
