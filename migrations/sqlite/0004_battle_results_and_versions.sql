-- Exactly-once battle results and conflict-checked saves (issue 18).
--
-- battle_results: one row per (player, battle) applied through
-- `BattlesRepo::apply`. The request (xp_delta, flags, ended_at) tells a retry
-- from a different result under the same battle id; the answer (level, xp,
-- granted) is what a retry gets back. `flags` and `granted` are ascending
-- flag ids joined by commas ('' when none). Rows older than the retention
-- are removed by `BattlesRepo::delete_ended_before` (by ended_at).
CREATE TABLE battle_results (
    user_id   INTEGER NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    battle_id TEXT    NOT NULL CHECK (length(battle_id) BETWEEN 1 AND 128),
    xp_delta  INTEGER NOT NULL,
    flags     TEXT    NOT NULL CHECK (length(flags) <= 4096),
    ended_at  INTEGER NOT NULL CHECK (ended_at >= 0),
    level     INTEGER NOT NULL CHECK (level BETWEEN 0 AND 2147483647),
    xp        INTEGER NOT NULL CHECK (xp >= 0),
    granted   TEXT    NOT NULL CHECK (length(granted) <= 4096),
    PRIMARY KEY (user_id, battle_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX battle_results_ended_at_idx ON battle_results (ended_at);

-- Versions for conflict-checked saves: every save adds one; rows that exist
-- now start at 1.
ALTER TABLE army_loadouts ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1);
ALTER TABLE progression ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1);

-- Keyset pages of a user's sessions (by created_at, then token) read an
-- index range instead of every session of the user; the same index serves
-- "delete all of a user's sessions".
DROP INDEX sessions_user_id_idx;
CREATE INDEX sessions_user_created_idx ON sessions (user_id, created_at);
