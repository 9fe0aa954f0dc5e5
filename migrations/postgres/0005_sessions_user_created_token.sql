-- persist:no-transaction
-- A user's sessions in list order (issue 15's online migration): the index
-- of 0004 orders a user's sessions by created_at only, so
-- `sessions.list_for_user` and every keyset page (`list_for_user_page`,
-- ORDER BY created_at, token) sorted the user's rows after reading them.
-- With token as the third column the index returns them in that order: no
-- sort, and a page reads just its range. The old index is then redundant
-- (its columns are a prefix of the new one's) and goes.
--
-- No transaction (first line): each statement runs on its own, with the
-- runner's lock timeout and retries. CONCURRENTLY takes SHARE UPDATE
-- EXCLUSIVE on sessions, which lookups and writes do not queue behind. Both
-- statements can run again: an interrupted run is resumed from the first
-- statement (an INVALID index left by a failed build is dropped first).
CREATE INDEX CONCURRENTLY IF NOT EXISTS sessions_user_created_token_idx
    ON sessions (user_id, created_at, token);
DROP INDEX CONCURRENTLY IF EXISTS sessions_user_created_idx;
