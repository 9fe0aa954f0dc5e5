//! Many sessions fast, for tests that need a large `sessions` table (the
//! query-plan check and the online-migration proof): accounts and sessions
//! inserted by one `generate_series` batch on PostgreSQL, with tokens the
//! test can look up again ([`session_token`]).

/// The bearer token of bulk session `i` (1-based): its SHA-256 digest is
/// what [`load_sessions`] stored, so `find_by_token` finds it.
pub fn session_token(i: u64) -> String {
    format!("bulk-session-token-{i:012}")
}

/// `users` accounts and `sessions` sessions spread evenly over them
/// (session `i` belongs to the `i % users`-th account, created at
/// `2_000_000 - i`), then ANALYZE. Returns the smallest user id.
pub async fn load_sessions(c: &tokio_postgres::Client, users: u64, sessions: u64) -> i64 {
    c.batch_execute(&format!(
        "INSERT INTO accounts (email, email_key, username, username_key, pass_hash, created_at)
           SELECT 'u' || i || '@example.com', 'u' || i || '@example.com', 'u' || i, 'u' || i,
                  '\\x01'::bytea, 0
           FROM generate_series(1, {users}) AS i;
         INSERT INTO sessions (token, user_id, created_at, expires_at)
           SELECT sha256(convert_to('bulk-session-token-' || lpad(i::text, 12, '0'), 'UTF8')),
                  (SELECT min(user_id) FROM accounts) + i % {users},
                  2000000 - i, 2000000 - i + 86400
           FROM generate_series(1, {sessions}) AS i;
         ANALYZE accounts; ANALYZE sessions;"
    ))
    .await
    .expect("load sessions");
    c.query_one("SELECT min(user_id) FROM accounts", &[])
        .await
        .expect("first user")
        .get(0)
}

/// The JSON plan (`EXPLAIN (FORMAT JSON)`) of `query` with `params`.
pub async fn plan_json(
    c: &tokio_postgres::Client,
    query: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> serde_json::Value {
    let row = c
        .query_one(&format!("EXPLAIN (FORMAT JSON) {query}"), params)
        .await
        .expect("explain");
    let JsonText(text) = row.get(0);
    let plan: serde_json::Value = serde_json::from_str(&text).expect("plan is JSON");
    plan[0]["Plan"].clone()
}

/// A `json` value as its text (tokio-postgres reads `json` only with a
/// feature this crate does not enable).
struct JsonText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(JsonText(std::str::from_utf8(raw)?.to_string()))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::JSON
    }
}

/// Every node of a plan tree, depth first.
pub fn plan_nodes(plan: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = vec![plan];
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            out.extend(plan_nodes(child));
        }
    }
    out
}
