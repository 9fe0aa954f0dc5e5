//! Rows and inputs of the five tables.
//!
//! Timestamps are UTC seconds since the Unix epoch (`i64`) in every field. In
//! loadout slots, `0` means empty.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Violation};

/// A user's id: 64-bit, assigned by the database, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A stored account.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Database-assigned id.
    pub user_id: UserId,
    /// Email, as given (display form), NFC-normalised.
    pub email: String,
    /// Username, as given (display form), NFC-normalised.
    pub username: String,
    /// The encoded password hash produced by the auth layer.
    pub pass_hash: Vec<u8>,
    /// Creation time.
    pub created_at: i64,
    /// Last successful login, if any.
    pub last_login_at: Option<i64>,
}

impl fmt::Debug for Account {
    // The hash stays out of logs; the email is personal data, so it does too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("email", &"<redacted>")
            .field("pass_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("last_login_at", &self.last_login_at)
            .finish()
    }
}

/// The input of [`AccountsRepo::create`](crate::AccountsRepo::create).
#[derive(Clone, Copy)]
pub struct NewAccount<'a> {
    /// Email: 1 to 254 characters, no control characters. Unique through
    /// [`canonical_key`](crate::canonical_key).
    pub email: &'a str,
    /// Username: 1 to 32 characters, no control characters. Unique through
    /// [`canonical_key`](crate::canonical_key).
    pub username: &'a str,
    /// Encoded password hash: 1 to 512 bytes.
    pub pass_hash: &'a [u8],
    /// Creation time.
    pub created_at: i64,
}

impl fmt::Debug for NewAccount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccount")
            .field("username", &self.username)
            .field("email", &"<redacted>")
            .field("pass_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// The public id of a session: the first 16 bytes of the stored token digest,
/// shown as 32 hex characters. Safe to show to the user (it cannot be turned
/// back into a bearer token) and used to revoke one session from a list.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub(crate) [u8; 16]);

impl SessionId {
    pub(crate) fn from_digest(digest: &[u8]) -> Option<Self> {
        digest.get(..16)?.try_into().ok().map(SessionId)
    }

    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl FromStr for SessionId {
    type Err = Error;
    /// Parses the 32-hex-character form.
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).map_err(|_| {
            Error::invalid(
                "session_id",
                Violation::Malformed("expected 32 hex characters"),
            )
        })?;
        Ok(SessionId(out))
    }
}

/// A stored session. The bearer token itself is never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Public id (see [`SessionId`]).
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// Creation time.
    pub created_at: i64,
    /// Expiry time; the caller decides what an expired session means.
    pub expires_at: i64,
}

/// The four army-ability slots (`army_ability_1..4`); `0` is empty.
pub type ArmyAbilities = [i32; 4];

/// The four item slots (`item_1..4`); `0` is empty.
pub type Items = [i32; 4];

/// One ability assignment per chess piece type (`ability_<piece>`); `0` is
/// empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PieceAbilities {
    /// `ability_pawn`.
    pub pawn: i32,
    /// `ability_knight`.
    pub knight: i32,
    /// `ability_bishop`.
    pub bishop: i32,
    /// `ability_rook`.
    pub rook: i32,
    /// `ability_queen`.
    pub queen: i32,
    /// `ability_king`.
    pub king: i32,
}

impl PieceAbilities {
    /// The six values in canonical piece order (pawn, knight, bishop, rook,
    /// queen, king).
    pub fn to_array(self) -> [i32; 6] {
        [
            self.pawn,
            self.knight,
            self.bishop,
            self.rook,
            self.queen,
            self.king,
        ]
    }

    /// From six values in canonical piece order.
    pub fn from_array(a: [i32; 6]) -> Self {
        let [pawn, knight, bishop, rook, queen, king] = a;
        PieceAbilities {
            pawn,
            knight,
            bishop,
            rook,
            queen,
            king,
        }
    }
}

/// A user's whole army loadout. Ids are catalogue ids (non-negative); `0`
/// means an empty slot. Which ids are legal is the caller's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Loadout {
    /// Owner.
    pub user_id: UserId,
    /// Element id.
    pub element_id: i32,
    /// Army-ability slots.
    pub army_abilities: ArmyAbilities,
    /// Per-piece abilities.
    pub piece_abilities: PieceAbilities,
    /// Item slots.
    pub items: Items,
    /// Time of the last save.
    pub updated_at: i64,
}

impl Loadout {
    /// An all-empty loadout (element 0, every slot 0).
    pub fn empty(user_id: UserId, updated_at: i64) -> Self {
        Loadout {
            user_id,
            element_id: 0,
            army_abilities: [0; 4],
            piece_abilities: PieceAbilities::default(),
            items: [0; 4],
            updated_at,
        }
    }
}

/// A user's level and experience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Progression {
    /// Owner.
    pub user_id: UserId,
    /// Level, zero or more.
    pub level: i32,
    /// Experience points, zero or more.
    pub xp: i64,
}

/// One unlock flag held by a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Unlock {
    /// Flag id, zero or more.
    pub flag_id: i32,
    /// When it was granted.
    pub unlocked_at: i64,
}

/// A value read together with its version, for a conflict-checked save
/// ([`LoadoutsRepo::save_if_version`](crate::LoadoutsRepo::save_if_version),
/// [`ProgressionRepo::set_if_version`](crate::ProgressionRepo::set_if_version)).
/// Every save, checked or plain, adds one to the version; a row's first
/// version is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version, 1 or more.
    pub version: i64,
}

/// One page of a keyset-paginated list: at most the requested number of
/// items, in the list's order, and where the next page starts (`None` on the
/// last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass this as `after` to read the next page; `None` when this page is
    /// the last.
    pub next: Option<C>,
}

/// Where a page of [`SessionsRepo::list_for_user_page`](crate::SessionsRepo::list_for_user_page)
/// starts: after the session with this creation time and id (sessions are
/// listed by creation time, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionCursor {
    /// Creation time of the last session of the previous page.
    pub created_at: i64,
    /// Its id.
    pub id: SessionId,
}

impl SessionCursor {
    /// The cursor that starts a page after `session`.
    pub fn after(session: &Session) -> Self {
        SessionCursor {
            created_at: session.created_at,
            id: session.id,
        }
    }
}

/// One battle's result for one player, applied at most once per battle id by
/// [`BattlesRepo::apply`](crate::BattlesRepo::apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BattleEnd<'a> {
    /// The player.
    pub user_id: UserId,
    /// The match server's id of the battle (opaque; 1 to 128 characters, no
    /// NUL or control characters). Unique per player: both players of one
    /// battle use the same id.
    pub battle_id: &'a str,
    /// XP to add (may be negative, as with `add_xp`).
    pub xp: i64,
    /// Flags to grant (order and repeats do not matter; at most
    /// [`BattleEnd::MAX_FLAGS`]).
    pub flags: &'a [i32],
    /// When the battle ended (the grant time of the flags; the retention
    /// sweep goes by it).
    pub at: i64,
}

impl BattleEnd<'_> {
    /// Most flags one battle may grant.
    pub const MAX_FLAGS: usize = 256;
}

/// The answer of [`BattlesRepo::apply`](crate::BattlesRepo::apply): the same
/// for the first call and every repeat of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BattleResult {
    /// The player's progression right after the battle was applied.
    pub progression: Progression,
    /// The flags the battle granted that the player did not hold before,
    /// ascending.
    pub granted: Vec<i32>,
    /// `true` when this call was a repeat and applied nothing.
    pub replayed: bool,
}

/// What the dialect code found or did for one [`BattleEnd`] (the repository
/// turns it into a [`BattleResult`] or an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BattleOutcome {
    /// Applied now: level, xp, newly granted flags.
    Applied(i32, i64, Vec<i32>),
    /// Applied before: the stored request and answer.
    Stored(StoredBattle),
    /// Nothing applied: the player has no progression row.
    NoProgression,
    /// Nothing applied: the xp would leave `0..=i64::MAX`.
    OutOfRange,
}

/// A stored battle row: the request (xp, flags, time) and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredBattle {
    pub(crate) xp_delta: i64,
    pub(crate) flags: String,
    pub(crate) ended_at: i64,
    pub(crate) level: i32,
    pub(crate) xp: i64,
    pub(crate) granted: String,
}

/// Flag ids as stored in `battle_results` (ascending, joined by commas).
pub(crate) fn flag_list(flags: &[i32]) -> String {
    flags
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
