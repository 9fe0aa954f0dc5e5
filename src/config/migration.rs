//! The migration runner's settings.

use std::time::Duration;

use super::Config;

impl Config {
    /// How long the migration runner waits for the migration lock held by
    /// another migrator. On PostgreSQL the wait starts again whenever the
    /// lock passes to another transaction (each migration another migrator
    /// applies is one), so it bounds one holder, not another migrator's
    /// whole run. Defaults to 60 s.
    pub fn with_migration_lock_timeout(mut self, d: Duration) -> Self {
        self.lock_timeout = d;
        self
    }

    /// PostgreSQL: the `lock_timeout` of each migration's statements (of a
    /// transactional migration, of each statement of a no-transaction one):
    /// how long a migration may wait for a table lock, holding up every
    /// session queued behind its request, before it backs off and retries.
    /// Defaults to 3 s.
    pub fn with_migration_statement_lock_timeout(mut self, d: Duration) -> Self {
        self.statement_lock_timeout = d;
        self
    }

    /// PostgreSQL: how many times a migration that could not take its locks
    /// within [`with_migration_statement_lock_timeout`](Self::with_migration_statement_lock_timeout)
    /// is retried (with backoff: 250 ms, doubling, at most 5 s) before
    /// [`Error::MigrationBlocked`](crate::Error::MigrationBlocked). Defaults to 5.
    pub fn with_migration_lock_retries(mut self, n: u32) -> Self {
        self.lock_retries = n;
        self
    }
}
