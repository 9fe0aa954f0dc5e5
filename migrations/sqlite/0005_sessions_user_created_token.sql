-- A user's sessions in list order (issue 15's online migration; the same
-- version and name as PostgreSQL's). `sessions` is WITHOUT ROWID, clustered
-- on token, so the index of 0004 already held token after its columns and
-- served ORDER BY created_at, token; the index is rebuilt with token named,
-- so both dialects hold the same index by name and columns.
--
-- SQLite has no concurrent index build: one transaction like any migration
-- (the runner holds the database's write lock; readers are not blocked in
-- WAL mode). Both statements can run again.
CREATE INDEX IF NOT EXISTS sessions_user_created_token_idx
    ON sessions (user_id, created_at, token);
DROP INDEX IF EXISTS sessions_user_created_idx;
