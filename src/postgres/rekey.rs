//! The key recompute of a migration marked `-- persist:recompute-keys`, on
//! PostgreSQL, inside the migration's transaction: every `accounts` row whose
//! stored key differs from `canonical_key` of its display form gets the new
//! key, unless some new key is empty or taken, in which case the migration is
//! refused with every conflict named (user ids, never the values).

use std::collections::HashMap;

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::error::map;
use super::error::message as postgres_message;
use crate::error::Result;
use crate::keys::{self, KeyField, Rekey};
use crate::migrate::{failed, Migration};

/// Rows read per batch.
const BATCH: i64 = 10_000;

/// Runs the recompute when `m` asks for it.
pub(crate) async fn after_sql<C: GenericClient>(c: &C, m: &Migration) -> Result<()> {
    if !m.recomputes_keys() {
        return Ok(());
    }
    let changes = changes(c).await?;
    let mut holders: HashMap<(KeyField, String), Vec<i64>> = HashMap::new();
    for ch in &changes {
        let sql = format!(
            "SELECT user_id FROM accounts WHERE {} = $1",
            ch.field.column()
        );
        let ids = c
            .query_typed(&sql, &[(&ch.key, Type::TEXT)])
            .await
            .map_err(map)?
            .iter()
            .map(|r| r.try_get::<_, i64>(0).map_err(map))
            .collect::<Result<Vec<_>>>()?;
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
            "UPDATE accounts SET {} = $2 WHERE user_id = $1",
            ch.field.column()
        );
        c.execute_typed(&sql, &[(&ch.user_id, Type::INT8), (&ch.key, Type::TEXT)])
            .await
            .map_err(|e| failed(m, postgres_message(&e), e.into()))?;
    }
    if !changes.is_empty() {
        tracing::info!(keys = changes.len(), "recomputed canonical keys");
    }
    Ok(())
}

/// Every key that must change, read in user-id batches.
async fn changes<C: GenericClient>(c: &C) -> Result<Vec<Rekey>> {
    let mut out = Vec::new();
    let mut after = i64::MIN;
    loop {
        let rows = c
            .query_typed(
                "SELECT user_id, email, email_key, username, username_key FROM accounts \
                 WHERE user_id > $1 ORDER BY user_id LIMIT $2",
                &[(&after, Type::INT8), (&BATCH, Type::INT8)],
            )
            .await
            .map_err(map)?;
        for r in &rows {
            let id: i64 = r.try_get(0).map_err(map)?;
            let email: &str = r.try_get(1).map_err(map)?;
            let email_key: &str = r.try_get(2).map_err(map)?;
            let username: &str = r.try_get(3).map_err(map)?;
            let username_key: &str = r.try_get(4).map_err(map)?;
            out.extend(keys::rekeys(id, email, email_key, username, username_key));
            after = id;
        }
        if (rows.len() as i64) < BATCH {
            return Ok(out);
        }
    }
}
