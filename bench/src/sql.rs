//! The SQL the raw drivers and sqlx run: the same statements as the persist
//! crate's repositories (`src/sqlite/*.rs`, `src/postgres/*.rs`).

pub mod sqlite {
    pub const LOOKUP: &str =
        "SELECT user_id, created_at, expires_at FROM sessions WHERE token = ?1";
    pub const CREATE_ACCOUNT: &str =
        "INSERT INTO accounts (email, email_key, username, username_key, pass_hash, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING user_id";
    pub const TOUCH_LOGIN: &str = "UPDATE accounts SET last_login_at = ?2 WHERE user_id = ?1";
    pub const SAVE_LOADOUT: &str = "INSERT INTO army_loadouts (user_id, element_id, \
         army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
         ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, ability_king, \
         item_1, item_2, item_3, item_4, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
         ON CONFLICT (user_id) DO UPDATE SET element_id = excluded.element_id, \
         army_ability_1 = excluded.army_ability_1, army_ability_2 = excluded.army_ability_2, \
         army_ability_3 = excluded.army_ability_3, army_ability_4 = excluded.army_ability_4, \
         ability_pawn = excluded.ability_pawn, ability_knight = excluded.ability_knight, \
         ability_bishop = excluded.ability_bishop, ability_rook = excluded.ability_rook, \
         ability_queen = excluded.ability_queen, ability_king = excluded.ability_king, \
         item_1 = excluded.item_1, item_2 = excluded.item_2, item_3 = excluded.item_3, \
         item_4 = excluded.item_4, updated_at = excluded.updated_at, \
         version = army_loadouts.version + 1";
    pub const GRANT: &str = "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) \
         VALUES (?1, ?2, ?3) ON CONFLICT (user_id, flag_id) DO NOTHING";
    pub const LIST_UNLOCKS: &str =
        "SELECT flag_id, unlocked_at FROM user_unlocks WHERE user_id = ?1 ORDER BY flag_id";
    pub const ADD_XP: &str =
        "UPDATE progression SET xp = xp + ?2, version = version + 1 WHERE user_id = ?1 AND \
         CASE WHEN ?2 >= 0 THEN xp <= 9223372036854775807 - ?2 ELSE xp + ?2 >= 0 END \
         RETURNING level, xp";
    pub const SET_PROGRESSION: &str = "INSERT INTO progression (user_id, level, xp) \
         VALUES (?1, ?2, ?3) \
         ON CONFLICT (user_id) DO UPDATE SET level = excluded.level, xp = excluded.xp, \
         version = progression.version + 1";

    // The mixed workload's other calls (persist: accounts.find_by_email,
    // loadouts.get, progression.get, sessions.create / delete /
    // list_for_user / delete_all_for_user).
    pub const FIND_BY_EMAIL: &str = "SELECT user_id, email, username, pass_hash, created_at, \
         last_login_at FROM accounts WHERE email_key = ?1";
    pub const GET_LOADOUT: &str = "SELECT element_id, army_ability_1, army_ability_2, \
         army_ability_3, army_ability_4, ability_pawn, ability_knight, ability_bishop, \
         ability_rook, ability_queen, ability_king, item_1, item_2, item_3, item_4, updated_at \
         FROM army_loadouts WHERE user_id = ?1";
    pub const GET_PROGRESSION: &str = "SELECT level, xp FROM progression WHERE user_id = ?1";
    pub const CREATE_SESSION: &str =
        "INSERT INTO sessions (token, user_id, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)";
    pub const DELETE_SESSION: &str = "DELETE FROM sessions WHERE token = ?1";
    pub const LIST_SESSIONS: &str = "SELECT token, created_at, expires_at FROM sessions \
         WHERE user_id = ?1 ORDER BY created_at, token";
    pub const DELETE_USER_SESSIONS: &str = "DELETE FROM sessions WHERE user_id = ?1";
}

pub mod postgres {
    pub const LOOKUP: &str =
        "SELECT user_id, created_at, expires_at FROM sessions WHERE token = $1";
    pub const CREATE_ACCOUNT: &str =
        "INSERT INTO accounts (email, email_key, username, username_key, pass_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING user_id";
    pub const TOUCH_LOGIN: &str = "UPDATE accounts SET last_login_at = $2 WHERE user_id = $1";
    pub const SAVE_LOADOUT: &str = "INSERT INTO army_loadouts (user_id, element_id, \
         army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
         ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, ability_king, \
         item_1, item_2, item_3, item_4, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (user_id) DO UPDATE SET element_id = excluded.element_id, \
         army_ability_1 = excluded.army_ability_1, army_ability_2 = excluded.army_ability_2, \
         army_ability_3 = excluded.army_ability_3, army_ability_4 = excluded.army_ability_4, \
         ability_pawn = excluded.ability_pawn, ability_knight = excluded.ability_knight, \
         ability_bishop = excluded.ability_bishop, ability_rook = excluded.ability_rook, \
         ability_queen = excluded.ability_queen, ability_king = excluded.ability_king, \
         item_1 = excluded.item_1, item_2 = excluded.item_2, item_3 = excluded.item_3, \
         item_4 = excluded.item_4, updated_at = excluded.updated_at, \
         version = army_loadouts.version + 1";
    pub const GRANT: &str = "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) \
         VALUES ($1, $2, $3) ON CONFLICT (user_id, flag_id) DO NOTHING";
    pub const LIST_UNLOCKS: &str =
        "SELECT flag_id, unlocked_at FROM user_unlocks WHERE user_id = $1 ORDER BY flag_id";
    pub const ADD_XP: &str =
        "UPDATE progression SET xp = xp + $2::int8, version = version + 1 WHERE user_id = $1 AND \
         CASE WHEN $2::int8 >= 0 THEN xp <= 9223372036854775807 - $2::int8 \
         ELSE xp + $2::int8 >= 0 END \
         RETURNING level, xp";
    pub const SET_PROGRESSION: &str = "INSERT INTO progression (user_id, level, xp) \
         VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET level = excluded.level, xp = excluded.xp, \
         version = progression.version + 1";

    // The mixed workload's other calls (persist: accounts.find_by_email,
    // loadouts.get, progression.get, sessions.create / delete /
    // list_for_user / delete_all_for_user).
    pub const FIND_BY_EMAIL: &str = "SELECT user_id, email, username, pass_hash, created_at, \
         last_login_at FROM accounts WHERE email_key = $1";
    pub const GET_LOADOUT: &str = "SELECT element_id, army_ability_1, army_ability_2, \
         army_ability_3, army_ability_4, ability_pawn, ability_knight, ability_bishop, \
         ability_rook, ability_queen, ability_king, item_1, item_2, item_3, item_4, updated_at \
         FROM army_loadouts WHERE user_id = $1";
    pub const GET_PROGRESSION: &str = "SELECT level, xp FROM progression WHERE user_id = $1";
    pub const CREATE_SESSION: &str =
        "INSERT INTO sessions (token, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4)";
    pub const DELETE_SESSION: &str = "DELETE FROM sessions WHERE token = $1";
    pub const LIST_SESSIONS: &str = "SELECT token, created_at, expires_at FROM sessions \
         WHERE user_id = $1 ORDER BY created_at, token";
    pub const DELETE_USER_SESSIONS: &str = "DELETE FROM sessions WHERE user_id = $1";
}
