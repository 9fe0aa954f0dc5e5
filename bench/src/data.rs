//! The data set and the inputs of every operation, derived from a sequence
//! number so that every implementation does exactly the same work.

use persist::{Loadout, PieceAbilities, UserId};
use sha2::{Digest, Sha256};

/// The fixed "now" of the data set (seconds since the epoch).
pub const T0: i64 = 1_700_000_000;
/// Sessions of the main data set expire 30 days after `T0`.
pub const SESSION_TTL: i64 = 30 * 24 * 3600;
/// Flags held by the users of the unlock set: 0, 2, ..., 38.
pub const HELD_FLAGS: i32 = 20;
/// Rows per "1000 account inserts in one transaction".
pub const BULK_ROWS: u64 = 1000;
/// A realistic encoded argon2id hash (97 bytes).
pub const PASS_HASH: &[u8] =
    b"$argon2id$v=19$m=19456,t=2,p=1$YmVuY2hzYWx0YmVuY2g$3r1J0y3c1nV8kq0p9m4kq1bH3m8yV2m1k0r7c5sZ9xQ";

/// Sizes of the data set.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Accounts in the main data set (user ids 1..=accounts).
    pub accounts: u64,
    /// Sessions in the main data set.
    pub sessions: u64,
    /// Users holding `HELD_FLAGS` unlocks each (user ids 1..=unlock_users).
    /// The first half is only read (list), the second half receives grants.
    pub unlock_users: u64,
    /// Accounts of the growth data set.
    pub growth_accounts: u64,
    /// Sessions of the growth data set, small and large.
    pub growth_small: u64,
    pub growth_large: u64,
}

impl Scale {
    pub fn full() -> Self {
        Scale {
            accounts: 100_000,
            sessions: 200_000,
            unlock_users: 10_000,
            growth_accounts: 10_000,
            growth_small: 10_000,
            growth_large: 1_000_000,
        }
    }

    pub fn quick() -> Self {
        Scale {
            accounts: 5_000,
            sessions: 10_000,
            unlock_users: 1_000,
            growth_accounts: 1_000,
            growth_small: 1_000,
            growth_large: 20_000,
        }
    }
}

/// The bearer token of session `i`: 43 characters, like the auth layer's
/// base64url tokens. PostgreSQL setup builds the same string server-side
/// (`'bench-token-' || lpad(i::text, 31, '0')`).
pub fn token(i: u64) -> String {
    format!("bench-token-{i:031}")
}

/// The bearer token a login or registration with operation number `seq`
/// issues (43 characters; never one of the seeded tokens).
pub fn login_token(seq: u64) -> String {
    format!("bench-login-{seq:031}")
}

/// What `sessions.token` stores: SHA-256 of the bearer token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Email and username of seeded account `i` (already canonical: ASCII lower case).
pub fn seed_email(i: u64) -> String {
    format!("user{i}@bench.example")
}
pub fn seed_username(i: u64) -> String {
    format!("user{i}")
}

/// splitmix64: a cheap, well-mixed pseudo-random function of the sequence number.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The inputs of operation number `seq` (unique across the whole run).
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    pub seq: u64,
    /// Logout: the operation number of the login whose session it ends.
    pub logout: u64,
    /// `list_sessions` / `delete_user_sessions`: the user with many sessions.
    pub many_user: i64,
    r: u64,
    sessions: u64,
    accounts: u64,
    unlock_half: u64,
}

impl Inputs {
    pub fn new(seq: u64, scale: &Scale, sessions: u64) -> Self {
        Inputs {
            seq,
            logout: 0,
            many_user: 1,
            r: mix(seq),
            sessions,
            accounts: scale.accounts,
            unlock_half: (scale.unlock_users / 2).max(1),
        }
    }

    /// A random existing session's token.
    pub fn lookup_token(&self) -> String {
        token(self.r % self.sessions)
    }

    /// A random seeded account.
    pub fn user(&self) -> i64 {
        (1 + self.r % self.accounts) as i64
    }

    /// A user of the read-only half of the unlock set (20 flags each).
    pub fn list_user(&self) -> i64 {
        (1 + self.r % self.unlock_half) as i64
    }

    /// A user of the granting half of the unlock set.
    pub fn grant_user(&self) -> i64 {
        (1 + self.unlock_half + self.r % self.unlock_half) as i64
    }

    /// A flag the grant user already holds.
    pub fn held_flag(&self) -> i32 {
        2 * ((self.r >> 32) % HELD_FLAGS as u64) as i32
    }

    /// Unlock grant: every other call grants a flag already held.
    pub fn grant_flag(&self) -> i32 {
        if self.seq.is_multiple_of(2) {
            self.held_flag()
        } else {
            // Unique per call, so always new.
            100_000_000 + (self.seq % 900_000_000) as i32
        }
    }

    /// End of battle: one flag already held and two new ones.
    pub fn battle_flags(&self) -> [i32; 3] {
        let base = 1_000_000_000 + 2 * (self.seq % 500_000_000) as i32;
        [self.held_flag(), base, base + 1]
    }

    pub fn at(&self) -> i64 {
        T0 + (self.seq % 1_000_000) as i64
    }

    /// A new account's email and username (unique per call).
    pub fn new_account(&self, tag: &str) -> (String, String) {
        (
            format!("{tag}{}@bench.example", self.seq),
            format!("{tag}{}", self.seq),
        )
    }

    /// Account `j` of the 1000-row transaction.
    pub fn bulk_account(&self, j: u64) -> (String, String) {
        (
            format!("b{}x{j}@bench.example", self.seq),
            format!("b{}x{j}", self.seq),
        )
    }

    pub fn loadout(&self, user: i64) -> Loadout {
        let v = |k: u64| ((self.r >> k) % 9) as i32;
        Loadout {
            user_id: UserId(user),
            element_id: v(0) % 5,
            army_abilities: [v(3), v(6), v(9), v(12)],
            piece_abilities: PieceAbilities::from_array([v(15), v(18), v(21), v(24), v(27), v(30)]),
            items: [v(33) % 8, v(36) % 8, v(39) % 8, v(42) % 8],
            updated_at: self.at(),
        }
    }
}

/// The 15 loadout values in column order (after user_id, before updated_at).
pub fn loadout_values(l: &Loadout) -> [i32; 15] {
    let [a1, a2, a3, a4] = l.army_abilities;
    let [p, n, b, r, q, k] = l.piece_abilities.to_array();
    let [i1, i2, i3, i4] = l.items;
    [
        l.element_id,
        a1,
        a2,
        a3,
        a4,
        p,
        n,
        b,
        r,
        q,
        k,
        i1,
        i2,
        i3,
        i4,
    ]
}

/// Registers players `1..=users` on a freshly migrated database: account
/// `{prefix}{i}` (email `{prefix}{i}@bench.invalid`) created at [`T0`] and a
/// progression at level 1, xp 0. Their ids must come out as `1..=users`;
/// returned in that order.
pub async fn seed_players(
    db: &persist::Db,
    users: i64,
    prefix: &str,
) -> anyhow::Result<Vec<UserId>> {
    db.migrate().await?;
    let mut ids = Vec::new();
    for i in 1..=users {
        let a = db
            .accounts()
            .create(&persist::NewAccount {
                email: &format!("{prefix}{i}@bench.invalid"),
                username: &format!("{prefix}{i}"),
                pass_hash: PASS_HASH,
                created_at: T0,
            })
            .await?;
        anyhow::ensure!(
            a.user_id == persist::UserId(i),
            "players must get ids 1..={users}"
        );
        db.progression()
            .set(&persist::Progression {
                user_id: a.user_id,
                level: 1,
                xp: 0,
            })
            .await?;
        ids.push(a.user_id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_characters_and_seed_names_canonical() {
        assert_eq!(token(0).len(), 43);
        assert_eq!(token(999_999).len(), 43);
        for i in [1, 77, 100_000] {
            assert_eq!(persist::canonical_key(&seed_email(i)), seed_email(i));
            assert_eq!(persist::canonical_key(&seed_username(i)), seed_username(i));
        }
    }

    #[test]
    fn grants_alternate_between_held_and_new() {
        let s = Scale::quick();
        let even = Inputs::new(10, &s, s.sessions);
        let odd = Inputs::new(11, &s, s.sessions);
        assert!(even.grant_flag() < 2 * HELD_FLAGS && even.grant_flag() % 2 == 0);
        assert!(odd.grant_flag() >= 100_000_000);
        let u = odd.grant_user();
        assert!(u > (s.unlock_users / 2) as i64 && u <= s.unlock_users as i64);
    }
}
