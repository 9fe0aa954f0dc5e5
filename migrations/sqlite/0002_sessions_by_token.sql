-- Sessions clustered on their token (D-042): `sessions` becomes WITHOUT ROWID,
-- so the lookup by token, run on every authenticated request, reads one B-tree
-- instead of the token index and then the table. Same columns, checks, foreign
-- key and indexes as 0001; the rows are copied as they are.
--
-- The runner applies this with foreign-key enforcement off and checks
-- foreign_key_check before committing; nothing references `sessions`.

CREATE TABLE sessions_by_token (
    token      BLOB    NOT NULL PRIMARY KEY CHECK (length(token) = 32),
    user_id    INTEGER NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL CHECK (created_at >= 0),
    CHECK (expires_at >= created_at)
) STRICT, WITHOUT ROWID;

INSERT INTO sessions_by_token (token, user_id, expires_at, created_at)
    SELECT token, user_id, expires_at, created_at FROM sessions;

DROP TABLE sessions;
ALTER TABLE sessions_by_token RENAME TO sessions;
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
