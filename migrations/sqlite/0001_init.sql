-- Canonical schema (CANON.md). Timestamps: UTC seconds since the Unix epoch.
-- Email and username are unique through *_key columns computed by the crate
-- (persist::canonical_key), so uniqueness is case- and Unicode-insensitive and
-- identical on SQLite and PostgreSQL. The display forms are stored as given.

CREATE TABLE accounts (
    -- AUTOINCREMENT: ids are never reused, even after the newest account is deleted.
    user_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL CHECK (length(email) BETWEEN 1 AND 254),
    email_key     TEXT    NOT NULL CHECK (length(email_key) BETWEEN 1 AND 8192),
    username      TEXT    NOT NULL CHECK (length(username) BETWEEN 1 AND 32),
    username_key  TEXT    NOT NULL CHECK (length(username_key) BETWEEN 1 AND 8192),
    pass_hash     BLOB    NOT NULL CHECK (length(pass_hash) BETWEEN 1 AND 512),
    created_at    INTEGER NOT NULL CHECK (created_at >= 0),
    last_login_at INTEGER          CHECK (last_login_at >= 0),
    CONSTRAINT accounts_email_key_uq UNIQUE (email_key),
    CONSTRAINT accounts_username_key_uq UNIQUE (username_key)
) STRICT;

-- token: SHA-256 digest of the bearer token, never the token itself.
CREATE TABLE sessions (
    token      BLOB    NOT NULL PRIMARY KEY CHECK (length(token) = 32),
    user_id    INTEGER NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL CHECK (created_at >= 0),
    CHECK (expires_at >= created_at)
) STRICT;
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE army_loadouts (
    user_id        INTEGER NOT NULL PRIMARY KEY REFERENCES accounts (user_id) ON DELETE CASCADE,
    element_id     INTEGER NOT NULL DEFAULT 0 CHECK (element_id BETWEEN 0 AND 2147483647),
    army_ability_1 INTEGER NOT NULL DEFAULT 0 CHECK (army_ability_1 BETWEEN 0 AND 2147483647),
    army_ability_2 INTEGER NOT NULL DEFAULT 0 CHECK (army_ability_2 BETWEEN 0 AND 2147483647),
    army_ability_3 INTEGER NOT NULL DEFAULT 0 CHECK (army_ability_3 BETWEEN 0 AND 2147483647),
    army_ability_4 INTEGER NOT NULL DEFAULT 0 CHECK (army_ability_4 BETWEEN 0 AND 2147483647),
    ability_pawn   INTEGER NOT NULL DEFAULT 0 CHECK (ability_pawn BETWEEN 0 AND 2147483647),
    ability_knight INTEGER NOT NULL DEFAULT 0 CHECK (ability_knight BETWEEN 0 AND 2147483647),
    ability_bishop INTEGER NOT NULL DEFAULT 0 CHECK (ability_bishop BETWEEN 0 AND 2147483647),
    ability_rook   INTEGER NOT NULL DEFAULT 0 CHECK (ability_rook BETWEEN 0 AND 2147483647),
    ability_queen  INTEGER NOT NULL DEFAULT 0 CHECK (ability_queen BETWEEN 0 AND 2147483647),
    ability_king   INTEGER NOT NULL DEFAULT 0 CHECK (ability_king BETWEEN 0 AND 2147483647),
    item_1         INTEGER NOT NULL DEFAULT 0 CHECK (item_1 BETWEEN 0 AND 2147483647),
    item_2         INTEGER NOT NULL DEFAULT 0 CHECK (item_2 BETWEEN 0 AND 2147483647),
    item_3         INTEGER NOT NULL DEFAULT 0 CHECK (item_3 BETWEEN 0 AND 2147483647),
    item_4         INTEGER NOT NULL DEFAULT 0 CHECK (item_4 BETWEEN 0 AND 2147483647),
    updated_at     INTEGER NOT NULL CHECK (updated_at >= 0)
) STRICT;

CREATE TABLE progression (
    user_id INTEGER NOT NULL PRIMARY KEY REFERENCES accounts (user_id) ON DELETE CASCADE,
    level   INTEGER NOT NULL DEFAULT 0 CHECK (level BETWEEN 0 AND 2147483647),
    xp      INTEGER NOT NULL DEFAULT 0 CHECK (xp >= 0)
) STRICT;

CREATE TABLE user_unlocks (
    user_id     INTEGER NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    flag_id     INTEGER NOT NULL CHECK (flag_id BETWEEN 0 AND 2147483647),
    unlocked_at INTEGER NOT NULL CHECK (unlocked_at >= 0),
    PRIMARY KEY (user_id, flag_id)
) STRICT, WITHOUT ROWID;
