//! Raw connections to a test database, past the repositories: what the
//! storage really holds.

use std::time::Duration;

use persist::{BackendKind, Db};

/// The six tables, parents first.
pub const TABLES: [&str; 6] = [
    "accounts",
    "sessions",
    "army_loadouts",
    "progression",
    "user_unlocks",
    "battle_results",
];

pub enum Raw {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl Raw {
    /// A connection of its own to the database `db` is open on (SQLite: it
    /// waits up to 10 s for a lock another connection holds).
    pub async fn open(db: &Db) -> Raw {
        match db.backend() {
            BackendKind::Sqlite => {
                let path = db.config().sqlite_path().expect("a SQLite file database");
                let c = rusqlite::Connection::open(path).expect("raw SQLite connection");
                c.busy_timeout(Duration::from_secs(10))
                    .expect("busy timeout");
                Raw::Sqlite(c)
            }
            BackendKind::Postgres => {
                let url = super::with_database(
                    &super::pg_admin_url(),
                    db.config()
                        .postgres_database()
                        .expect("a PostgreSQL database"),
                );
                let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("raw PostgreSQL connection");
                tokio::spawn(conn);
                Raw::Postgres(c)
            }
        }
    }

    /// Empties the six tables, children first, in one transaction.
    pub async fn wipe(&self) {
        let sql = "BEGIN; DELETE FROM battle_results; DELETE FROM user_unlocks; DELETE FROM progression; \
                   DELETE FROM army_loadouts; DELETE FROM sessions; DELETE FROM accounts; \
                   COMMIT;";
        match self {
            Raw::Sqlite(c) => c.execute_batch(sql).expect("wipe SQLite"),
            Raw::Postgres(c) => c.batch_execute(sql).await.expect("wipe PostgreSQL"),
        }
    }

    /// Row counts of the six tables, in [`TABLES`] order, read by one
    /// statement.
    pub async fn counts(&self) -> [i64; 6] {
        let sql = format!(
            "SELECT {}",
            TABLES
                .map(|t| format!("(SELECT count(*) FROM {t})"))
                .join(", ")
        );
        let mut out = [0; 6];
        match self {
            Raw::Sqlite(c) => c
                .query_row(&sql, [], |r| {
                    for (i, n) in out.iter_mut().enumerate() {
                        *n = r.get(i)?;
                    }
                    Ok(())
                })
                .expect("counts"),
            Raw::Postgres(c) => {
                let r = c.query_one(&sql, &[]).await.expect("counts");
                for (i, n) in out.iter_mut().enumerate() {
                    *n = r.get(i);
                }
            }
        }
        out
    }
}
