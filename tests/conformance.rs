mod common;

// The conformance suite of issue 3: every repository operation, its happy
// path, its not-found path and its error paths, each case written once and
// run on both backends (`sqlite::case`, `postgres::case`, each on a fresh
// migrated database).

use std::fmt::Debug;

use common::raw::{Raw, TABLES};
use persist::{
    Account, Db, Entity, Error, Loadout, NewAccount, PieceAbilities, Progression, SessionId,
    UniqueKey, Unlock, UserId, Violation,
};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const HASH: &[u8] = b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
const T0: i64 = 1_700_000_000;
const TS_MAX: i64 = 253_402_300_799;
const TS_RANGE: Violation = Violation::OutOfRange {
    min: 0,
    max: TS_MAX,
};
const UID_RANGE: Violation = Violation::OutOfRange {
    min: 1,
    max: i64::MAX,
};
/// An id no account will get in a fresh database.
const NOBODY: UserId = UserId(987_654_321);

fn acct<'a>(email: &'a str, username: &'a str) -> NewAccount<'a> {
    NewAccount {
        email,
        username,
        pass_hash: HASH,
        created_at: T0,
    }
}

async fn mk(db: &Db, email: &str, username: &str) -> Account {
    db.accounts()
        .create(&acct(email, username))
        .await
        .unwrap_or_else(|e| panic!("create {username}: {e}"))
}

/// Asserts `Err(InvalidInput { field, violation })` exactly.
#[track_caller]
fn invalid<T: Debug>(r: persist::Result<T>, want_field: &str, want: Violation) {
    match r {
        Err(Error::InvalidInput { field, violation })
            if field == want_field && violation == want => {}
        other => panic!(
            "expected InvalidInput {{ field: {want_field:?}, violation: {want:?} }}, got {other:?}"
        ),
    }
}

/// Asserts the result is the error matched by the pattern.
macro_rules! assert_err {
    ($res:expr, $pat:pat) => {
        match $res {
            Err($pat) => {}
            other => panic!(
                "{}: expected Err({}), got {:?}",
                stringify!($res),
                stringify!($pat),
                other
            ),
        }
    };
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Tokens in these cases are short names padded past the 22-character floor
/// a session is created with.
const PAD: &str = "bearer-token-padding-";

fn padded(name: &str) -> String {
    format!("{PAD}{name}")
}

/// The session id of the padded token `name`.
fn sid(name: &str) -> SessionId {
    hex::encode(&sha256(&padded(name))[..16]).parse().unwrap()
}

/// Every row of the five tables, read through a raw connection (not the
/// repositories), so "nothing changed" is checked against the real storage.
async fn snapshot(db: &Db) -> Vec<String> {
    snapshot_of(&Raw::open(db).await).await
}

/// [`snapshot`] through a connection already open.
async fn snapshot_of(raw: &Raw) -> Vec<String> {
    let mut out = Vec::new();
    match raw {
        Raw::Sqlite(c) => {
            for t in TABLES {
                let mut st = c.prepare(&format!("SELECT * FROM {t}")).unwrap();
                let n = st.column_count();
                let mut rows = st.query([]).unwrap();
                let mut v = Vec::new();
                while let Some(r) = rows.next().unwrap() {
                    let cols: Vec<String> = (0..n)
                        .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                        .collect();
                    v.push(format!("{t}({})", cols.join(",")));
                }
                v.sort();
                out.extend(v);
            }
        }
        Raw::Postgres(c) => {
            for t in TABLES {
                for r in c
                    .query(&format!("SELECT {t}::text FROM {t} ORDER BY 1"), &[])
                    .await
                    .unwrap()
                {
                    out.push(format!("{t}{}", r.get::<_, String>(0)));
                }
            }
        }
    }
    out
}

/// Row counts of the six tables, in `TABLES` order.
async fn counts(db: &Db) -> [i64; 6] {
    Raw::open(db).await.counts().await
}

/// A user with a row in every table: 2 sessions, a loadout, progression and
/// two unlocks.
async fn populated_user(db: &Db, email: &str, username: &str, tok_prefix: &str) -> Account {
    let a = mk(db, email, username).await;
    for i in 0..2 {
        db.sessions()
            .create(
                &format!("{PAD}{tok_prefix}-{i}"),
                a.user_id,
                T0 + i,
                T0 + 3600,
            )
            .await
            .unwrap();
    }
    db.loadouts()
        .save(&Loadout::empty(a.user_id, T0))
        .await
        .unwrap();
    db.progression()
        .set(&Progression {
            user_id: a.user_id,
            level: 3,
            xp: 300,
        })
        .await
        .unwrap();
    assert_eq!(
        db.unlocks()
            .grant_many(a.user_id, &[1, 2], T0)
            .await
            .unwrap(),
        vec![1, 2]
    );
    a
}

fn full_loadout(user: UserId, base: i32, at: i64) -> Loadout {
    Loadout {
        user_id: user,
        element_id: base,
        army_abilities: [base + 1, base + 2, base + 3, base + 4],
        piece_abilities: PieceAbilities {
            pawn: base + 5,
            knight: base + 6,
            bishop: base + 7,
            rook: base + 8,
            queen: base + 9,
            king: base + 10,
        },
        items: [base + 11, base + 12, base + 13, base + 14],
        updated_at: at,
    }
}

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

async fn account_create_returns_id_and_echoes_fields(db: &Db) {
    let a = db
        .accounts()
        .create(&NewAccount {
            email: "Ada@Example.com",
            username: "Ada",
            pass_hash: HASH,
            created_at: T0,
        })
        .await
        .unwrap();
    assert!(a.user_id.0 >= 1, "{:?}", a.user_id);
    assert_eq!(a.email, "Ada@Example.com");
    assert_eq!(a.username, "Ada");
    assert_eq!(a.pass_hash, HASH);
    assert_eq!(a.created_at, T0);
    assert_eq!(a.last_login_at, None);
    // What was stored is what was returned.
    assert_eq!(db.accounts().get(a.user_id).await.unwrap(), a);

    let b = mk(db, "bob@example.com", "bob").await;
    assert_ne!(a.user_id, b.user_id);
    assert!(b.user_id > a.user_id, "ids increase: {a:?} {b:?}");
    assert_eq!(counts(db).await, [2, 0, 0, 0, 0, 0]);
}

async fn account_get_and_find_not_found(db: &Db) {
    assert_err!(
        db.accounts().get(NOBODY).await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().find_by_email("nobody@example.com").await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().find_by_username("nobody").await,
        Error::NotFound(Entity::Account)
    );
    let a = mk(db, "ada@example.com", "ada").await;
    // Email and username are separate key spaces.
    assert_err!(
        db.accounts().find_by_email("ada").await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().find_by_username("ada@example.com").await,
        Error::NotFound(Entity::Account)
    );
    // Near misses do not match.
    assert_err!(
        db.accounts().find_by_username("ada ").await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().find_by_username("adam").await,
        Error::NotFound(Entity::Account)
    );
    assert_eq!(db.accounts().find_by_username("ada").await.unwrap(), a);
}

async fn account_lookup_is_case_and_unicode_insensitive(db: &Db) {
    let a = mk(db, "Ada@Example.com", "Ada").await;
    for e in ["ada@example.com", "ADA@EXAMPLE.COM", "aDa@eXample.Com"] {
        assert_eq!(db.accounts().find_by_email(e).await.unwrap(), a, "{e}");
    }
    for u in ["ada", "ADA", "aDA", "\u{ff21}da"] {
        assert_eq!(db.accounts().find_by_username(u).await.unwrap(), a, "{u}");
    }
    // Stored NFC, looked up NFD, and the other way round.
    let jose = mk(db, "Jos\u{e9}@example.com", "Jos\u{e9}").await;
    assert_eq!(
        db.accounts().find_by_username("Jose\u{301}").await.unwrap(),
        jose
    );
    assert_eq!(
        db.accounts()
            .find_by_email("JOSE\u{301}@EXAMPLE.COM")
            .await
            .unwrap(),
        jose
    );
    let zoe = mk(db, "zoe@example.com", "Zoe\u{308}").await;
    assert_eq!(
        db.accounts().find_by_username("zo\u{eb}").await.unwrap(),
        zoe
    );
    assert_eq!(
        db.accounts().find_by_username("ZO\u{cb}").await.unwrap(),
        zoe
    );
    // Full case folding: ß and SS, final sigma.
    let s = mk(db, "s@example.com", "stra\u{df}e").await;
    assert_eq!(db.accounts().find_by_username("STRASSE").await.unwrap(), s);
    let o = mk(db, "o@example.com", "\u{39f}\u{394}\u{39f}\u{3a3}").await;
    assert_eq!(
        db.accounts()
            .find_by_username("\u{3bf}\u{3b4}\u{3bf}\u{3c2}")
            .await
            .unwrap(),
        o
    );
    // The display forms are stored as given, NFC-normalised (issue 12: one
    // name has one form and one length).
    assert_eq!(
        db.accounts().get(jose.user_id).await.unwrap().username,
        "Jos\u{e9}"
    );
    assert_eq!(
        db.accounts().get(zoe.user_id).await.unwrap().username,
        "Zo\u{eb}"
    );
}

async fn account_create_conflicts(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let before = snapshot(db).await;
    // Both taken: email is reported.
    assert_err!(
        db.accounts().create(&acct("ada@example.com", "ada")).await,
        Error::Conflict(UniqueKey::Email)
    );
    assert_err!(
        db.accounts().create(&acct("ADA@example.COM", "ADA")).await,
        Error::Conflict(UniqueKey::Email)
    );
    // Only the email taken (any case or normal form).
    assert_err!(
        db.accounts()
            .create(&acct("ADA@EXAMPLE.COM", "someone"))
            .await,
        Error::Conflict(UniqueKey::Email)
    );
    // Only the username taken.
    assert_err!(
        db.accounts()
            .create(&acct("other@example.com", "ADA"))
            .await,
        Error::Conflict(UniqueKey::Username)
    );
    assert_err!(
        db.accounts()
            .create(&acct("other@example.com", "\u{ff41}\u{ff44}\u{ff41}"))
            .await,
        Error::Conflict(UniqueKey::Username)
    );
    assert_eq!(snapshot(db).await, before);
    let j = mk(db, "jose@example.com", "Jose\u{301}").await;
    assert_err!(
        db.accounts()
            .create(&acct("jose2@example.com", "JOS\u{c9}"))
            .await,
        Error::Conflict(UniqueKey::Username)
    );
    let _ = j;
    let s = mk(db, "s@example.com", "stra\u{df}e").await;
    assert_err!(
        db.accounts()
            .create(&acct("s2@example.com", "Strasse"))
            .await,
        Error::Conflict(UniqueKey::Username)
    );
    let _ = s;
    // Nothing else was created by the refused calls.
    assert_eq!(counts(db).await, [3, 0, 0, 0, 0, 0]);
    // The first account is untouched.
    assert_eq!(db.accounts().get(a.user_id).await.unwrap(), a);
}

async fn account_update_last_login(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    db.accounts()
        .update_last_login(a.user_id, T0 + 60)
        .await
        .unwrap();
    let got = db.accounts().get(a.user_id).await.unwrap();
    assert_eq!(got.last_login_at, Some(T0 + 60));
    assert_eq!(
        got,
        Account {
            last_login_at: Some(T0 + 60),
            ..a.clone()
        }
    );
    db.accounts()
        .update_last_login(a.user_id, T0 + 120)
        .await
        .unwrap();
    assert_eq!(
        db.accounts()
            .find_by_username("ADA")
            .await
            .unwrap()
            .last_login_at,
        Some(T0 + 120)
    );
    // Boundaries.
    db.accounts().update_last_login(a.user_id, 0).await.unwrap();
    assert_eq!(
        db.accounts().get(a.user_id).await.unwrap().last_login_at,
        Some(0)
    );
    db.accounts()
        .update_last_login(a.user_id, TS_MAX)
        .await
        .unwrap();
    assert_eq!(
        db.accounts().get(a.user_id).await.unwrap().last_login_at,
        Some(TS_MAX)
    );
    assert_err!(
        db.accounts().update_last_login(NOBODY, T0).await,
        Error::NotFound(Entity::Account)
    );
}

async fn account_update_pass_hash(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    let new_hash = b"$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3aGFzaA";
    db.accounts()
        .update_pass_hash(a.user_id, new_hash)
        .await
        .unwrap();
    assert_eq!(
        db.accounts().get(a.user_id).await.unwrap(),
        Account {
            pass_hash: new_hash.to_vec(),
            ..a
        }
    );
    // Other accounts are untouched.
    assert_eq!(db.accounts().get(b.user_id).await.unwrap(), b);
    // 512 bytes is the cap, inclusive.
    let big = vec![b'x'; 512];
    db.accounts()
        .update_pass_hash(a.user_id, &big)
        .await
        .unwrap();
    assert_eq!(db.accounts().get(a.user_id).await.unwrap().pass_hash, big);
    assert_err!(
        db.accounts().update_pass_hash(NOBODY, new_hash).await,
        Error::NotFound(Entity::Account)
    );
}

async fn account_update_email(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    // Taken by another account, in any case.
    assert_err!(
        db.accounts()
            .update_email(a.user_id, "BOB@example.com")
            .await,
        Error::Conflict(UniqueKey::Email)
    );
    assert_eq!(db.accounts().get(a.user_id).await.unwrap(), a);
    // Changing only the case of one's own email: allowed, display form updates.
    db.accounts()
        .update_email(a.user_id, "Ada@Example.COM")
        .await
        .unwrap();
    assert_eq!(
        db.accounts().get(a.user_id).await.unwrap().email,
        "Ada@Example.COM"
    );
    // A real change: old key is free, new key finds the account.
    db.accounts()
        .update_email(a.user_id, "ada.l@example.org")
        .await
        .unwrap();
    assert_err!(
        db.accounts().find_by_email("ada@example.com").await,
        Error::NotFound(Entity::Account)
    );
    let got = db
        .accounts()
        .find_by_email("ADA.L@EXAMPLE.ORG")
        .await
        .unwrap();
    assert_eq!(
        got,
        Account {
            email: "ada.l@example.org".into(),
            ..a.clone()
        }
    );
    // The freed email can be taken by someone else.
    db.accounts()
        .update_email(b.user_id, "ADA@example.com")
        .await
        .unwrap();
    assert_eq!(
        db.accounts()
            .find_by_email("ada@example.com")
            .await
            .unwrap()
            .user_id,
        b.user_id
    );
    assert_err!(
        db.accounts().update_email(NOBODY, "x@example.com").await,
        Error::NotFound(Entity::Account)
    );
    // An unknown id is NotFound even when the email is taken.
    assert_err!(
        db.accounts().update_email(NOBODY, "ada@example.com").await,
        Error::NotFound(Entity::Account)
    );
}

async fn account_update_username(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    assert_err!(
        db.accounts().update_username(a.user_id, "BOB").await,
        Error::Conflict(UniqueKey::Username)
    );
    assert_err!(
        db.accounts().update_username(a.user_id, "\u{ff42}ob").await,
        Error::Conflict(UniqueKey::Username)
    );
    assert_eq!(db.accounts().get(a.user_id).await.unwrap(), a);
    db.accounts()
        .update_username(a.user_id, "ADA")
        .await
        .unwrap();
    assert_eq!(db.accounts().get(a.user_id).await.unwrap().username, "ADA");
    db.accounts()
        .update_username(a.user_id, "Lovelace")
        .await
        .unwrap();
    assert_err!(
        db.accounts().find_by_username("ada").await,
        Error::NotFound(Entity::Account)
    );
    assert_eq!(
        db.accounts().find_by_username("lovelace").await.unwrap(),
        Account {
            username: "Lovelace".into(),
            ..a.clone()
        }
    );
    db.accounts()
        .update_username(b.user_id, "Ada")
        .await
        .unwrap();
    assert_eq!(
        db.accounts().find_by_username("ada").await.unwrap().user_id,
        b.user_id
    );
    assert_err!(
        db.accounts().update_username(NOBODY, "zed").await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().update_username(NOBODY, "ada").await,
        Error::NotFound(Entity::Account)
    );
}

async fn account_delete_then_not_found(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    db.accounts().delete(a.user_id).await.unwrap();
    assert_err!(
        db.accounts().get(a.user_id).await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().find_by_email("ada@example.com").await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().find_by_username("ada").await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().delete(a.user_id).await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().update_last_login(a.user_id, T0).await,
        Error::NotFound(Entity::Account)
    );
    assert_eq!(db.accounts().get(b.user_id).await.unwrap(), b);
    // The email and username are free again; the id is not reused.
    let c = mk(db, "ADA@example.com", "Ada").await;
    assert!(c.user_id > b.user_id, "{c:?} after {b:?}");
}

async fn account_delete_cascades_every_table(db: &Db) {
    let a = populated_user(db, "ada@example.com", "ada", "ada-tok").await;
    let b = populated_user(db, "bob@example.com", "bob", "bob-tok").await;
    assert_eq!(counts(db).await, [2, 4, 2, 2, 4, 0]);
    db.accounts().delete(a.user_id).await.unwrap();
    for i in 0..2 {
        assert_err!(
            db.sessions()
                .find_by_token(&format!("{PAD}ada-tok-{i}"))
                .await,
            Error::NotFound(Entity::Session)
        );
    }
    assert_eq!(
        db.sessions().list_for_user(a.user_id).await.unwrap(),
        vec![]
    );
    assert_err!(
        db.loadouts().get(a.user_id).await,
        Error::NotFound(Entity::Loadout)
    );
    assert_err!(
        db.progression().get(a.user_id).await,
        Error::NotFound(Entity::Progression)
    );
    assert_eq!(db.unlocks().list(a.user_id).await.unwrap(), vec![]);
    assert!(!db.unlocks().has(a.user_id, 1).await.unwrap());
    // Nothing of the user remains in storage; the other user is intact.
    assert_eq!(counts(db).await, [1, 2, 1, 1, 2, 0]);
    assert_eq!(
        db.sessions().list_for_user(b.user_id).await.unwrap().len(),
        2
    );
    assert_eq!(
        db.sessions()
            .find_by_token("bearer-token-padding-bob-tok-1")
            .await
            .unwrap()
            .user_id,
        b.user_id
    );
    assert_eq!(
        db.loadouts().get(b.user_id).await.unwrap(),
        Loadout::empty(b.user_id, T0)
    );
    assert_eq!(
        db.progression().get(b.user_id).await.unwrap(),
        Progression {
            user_id: b.user_id,
            level: 3,
            xp: 300
        }
    );
    assert_eq!(
        db.unlocks().list(b.user_id).await.unwrap(),
        vec![
            Unlock {
                flag_id: 1,
                unlocked_at: T0
            },
            Unlock {
                flag_id: 2,
                unlocked_at: T0
            }
        ]
    );
    // Writes for the deleted user are now unknown-user errors.
    assert_err!(
        db.sessions()
            .create("bearer-token-padding-ada-tok-new", a.user_id, T0, T0 + 1)
            .await,
        Error::UnknownUser
    );
    db.accounts().delete(b.user_id).await.unwrap();
    assert_eq!(counts(db).await, [0, 0, 0, 0, 0, 0]);
}

async fn closed_handle_is_typed(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let other = db.clone();
    db.close().await;
    assert!(other.is_closed());
    assert_err!(other.accounts().get(a.user_id).await, Error::Closed);
    assert_err!(
        other.accounts().create(&acct("b@example.com", "b")).await,
        Error::Closed
    );
    assert_err!(
        other
            .sessions()
            .find_by_token("bearer-token-padding-tok")
            .await,
        Error::Closed
    );
    assert_err!(
        other.progression().add_xp(a.user_id, 1).await,
        Error::Closed
    );
    assert_err!(other.begin().await.map(|_| ()), Error::Closed);
}

// ---------------------------------------------------------------------------
// Input rules
// ---------------------------------------------------------------------------

async fn lookup_input_may_be_longer_than_the_stored_name(db: &Db) {
    // "ß"×17 fits the 32-character cap; its case-folded spelling "SS"×17
    // (34 characters) must still find it.
    let sharp = mk(db, "sharp@x.com", &"ß".repeat(17)).await;
    let found = db
        .accounts()
        .find_by_username(&"SS".repeat(17))
        .await
        .unwrap();
    assert_eq!(found.user_id, sharp.user_id);
    assert_eq!(found.username, "ß".repeat(17));
}

// The refusals are one table per rule group: each row is a call, the field
// it must name and the violation, run by one runner on both backends (see
// `refuses`). What each group accepts at its caps follows its table.

/// One repository call with its arguments, owned so tables can hold it.
#[derive(Debug, Clone)]
enum Call {
    CreateAccount {
        email: String,
        username: String,
        pass_hash: Vec<u8>,
        created_at: i64,
    },
    GetAccount(UserId),
    FindByEmail(String),
    FindByUsername(String),
    UpdateLastLogin(UserId, i64),
    UpdatePassHash(UserId, Vec<u8>),
    UpdateEmail(UserId, String),
    UpdateUsername(UserId, String),
    DeleteAccount(UserId),
    CreateSession {
        token: String,
        user: UserId,
        created_at: i64,
        expires_at: i64,
    },
    FindSession(String),
    DeleteSession(String),
    DeleteAllSessions(UserId),
    ListSessions(UserId),
    RevokeSession(UserId, SessionId),
    DeleteExpired {
        now: i64,
        batch_size: i64,
    },
    GetLoadout(UserId),
    SaveLoadout(Loadout),
    DeleteLoadout(UserId),
    GetProgression(UserId),
    SetProgression(Progression),
    AddXp(UserId, i64),
    Grant(UserId, i32, i64),
    GrantMany(UserId, Vec<i32>, i64),
    HasUnlock(UserId, i32),
    ListUnlocks(UserId),
    RevokeUnlock(UserId, i32),
}

impl Call {
    /// An account creation with the default hash and time.
    fn create(email: &str, username: &str) -> Call {
        Call::CreateAccount {
            email: email.to_string(),
            username: username.to_string(),
            pass_hash: HASH.to_vec(),
            created_at: T0,
        }
    }

    /// A session creation for `user`.
    fn session(token: &str, user: UserId, created_at: i64, expires_at: i64) -> Call {
        Call::CreateSession {
            token: token.to_string(),
            user,
            created_at,
            expires_at,
        }
    }

    async fn run(&self, db: &Db) -> persist::Result<()> {
        match self {
            Call::CreateAccount {
                email,
                username,
                pass_hash,
                created_at,
            } => db
                .accounts()
                .create(&NewAccount {
                    email,
                    username,
                    pass_hash,
                    created_at: *created_at,
                })
                .await
                .map(drop),
            Call::GetAccount(u) => db.accounts().get(*u).await.map(drop),
            Call::FindByEmail(e) => db.accounts().find_by_email(e).await.map(drop),
            Call::FindByUsername(n) => db.accounts().find_by_username(n).await.map(drop),
            Call::UpdateLastLogin(u, at) => db.accounts().update_last_login(*u, *at).await,
            Call::UpdatePassHash(u, h) => db.accounts().update_pass_hash(*u, h).await,
            Call::UpdateEmail(u, e) => db.accounts().update_email(*u, e).await,
            Call::UpdateUsername(u, n) => db.accounts().update_username(*u, n).await,
            Call::DeleteAccount(u) => db.accounts().delete(*u).await,
            Call::CreateSession {
                token,
                user,
                created_at,
                expires_at,
            } => db
                .sessions()
                .create(token, *user, *created_at, *expires_at)
                .await
                .map(drop),
            Call::FindSession(t) => db.sessions().find_by_token(t).await.map(drop),
            Call::DeleteSession(t) => db.sessions().delete(t).await,
            Call::DeleteAllSessions(u) => db.sessions().delete_all_for_user(*u).await.map(drop),
            Call::ListSessions(u) => db.sessions().list_for_user(*u).await.map(drop),
            Call::RevokeSession(u, id) => db.sessions().revoke(*u, *id).await,
            Call::DeleteExpired { now, batch_size } => db
                .sessions()
                .delete_expired(*now, *batch_size)
                .await
                .map(drop),
            Call::GetLoadout(u) => db.loadouts().get(*u).await.map(drop),
            Call::SaveLoadout(l) => db.loadouts().save(l).await,
            Call::DeleteLoadout(u) => db.loadouts().delete(*u).await,
            Call::GetProgression(u) => db.progression().get(*u).await.map(drop),
            Call::SetProgression(p) => db.progression().set(p).await,
            Call::AddXp(u, d) => db.progression().add_xp(*u, *d).await.map(drop),
            Call::Grant(u, f, at) => db.unlocks().grant(*u, *f, *at).await.map(drop),
            Call::GrantMany(u, fs, at) => db.unlocks().grant_many(*u, fs, *at).await.map(drop),
            Call::HasUnlock(u, f) => db.unlocks().has(*u, *f).await.map(drop),
            Call::ListUnlocks(u) => db.unlocks().list(*u).await.map(drop),
            Call::RevokeUnlock(u, f) => db.unlocks().revoke(*u, *f).await,
        }
    }

    /// The call for a failure message, long arguments shortened.
    fn label(&self) -> String {
        let s = format!("{self:?}");
        match s.char_indices().nth(160) {
            Some((i, _)) => format!("{}... ({} characters)", &s[..i], s.chars().count()),
            None => s,
        }
    }
}

/// A call that breaks an input rule, and the exact refusal it must get.
struct Refusal {
    call: Call,
    field: &'static str,
    violation: Violation,
}

fn refusal(call: Call, field: &'static str, violation: Violation) -> Refusal {
    Refusal {
        call,
        field,
        violation,
    }
}

/// Runs every row: each call must fail with exactly its
/// `InvalidInput { field, violation }` and leave every row of every table
/// as it was (read past the repositories after each call).
async fn refuses(db: &Db, table: &[Refusal]) {
    assert!(!table.is_empty(), "an empty table tests nothing");
    let raw = Raw::open(db).await;
    let before = snapshot_of(&raw).await;
    for r in table {
        match r.call.run(db).await {
            Err(Error::InvalidInput { field, violation })
                if field == r.field && violation == r.violation => {}
            other => panic!(
                "{}: expected InvalidInput {{ field: {:?}, violation: {:?} }}, got {other:?}",
                r.call.label(),
                r.field,
                r.violation
            ),
        }
        assert_eq!(
            snapshot_of(&raw).await,
            before,
            "{} changed the database",
            r.call.label()
        );
    }
}

const CONTROL_CHARACTERS: [&str; 8] = [
    "\n", "\r", "\t", "\u{7}", "\u{1b}", "\u{7f}", "\u{85}", "\u{9f}",
];

/// 255 characters: one over the email cap.
fn email_255() -> String {
    let e = format!("{}@example.com", "a".repeat(255 - 12));
    assert_eq!(e.chars().count(), 255);
    e
}

/// Email and username rules, for `a` (an existing account).
fn email_and_username_refusals(a: UserId) -> Vec<Refusal> {
    use Violation::{ControlCharacter, Empty, Nul, TooLong};
    let mut t = vec![
        // Empty; email checked before username.
        refusal(Call::create("", "x"), "email", Empty),
        refusal(Call::create("x@y.z", ""), "username", Empty),
        refusal(Call::create("", ""), "email", Empty),
        // NUL.
        refusal(Call::create("a\0@example.com", "x"), "email", Nul),
        refusal(Call::create("x@example.com", "ad\0a"), "username", Nul),
        refusal(Call::create("x@example.com", "\0"), "username", Nul),
    ];
    // Other control characters.
    for cc in CONTROL_CHARACTERS {
        t.push(refusal(
            Call::create(&format!("a{cc}@example.com"), "x"),
            "email",
            ControlCharacter,
        ));
        t.push(refusal(
            Call::create("x@example.com", &format!("x{cc}y")),
            "username",
            ControlCharacter,
        ));
    }
    let s = String::from;
    t.extend([
        // Over-long, counted in characters.
        refusal(
            Call::create(&email_255(), "x"),
            "email",
            TooLong { max: 254 },
        ),
        refusal(
            Call::create(&"\u{e9}".repeat(255), "x"),
            "email",
            TooLong { max: 254 },
        ),
        refusal(
            Call::create("x@example.com", &"a".repeat(33)),
            "username",
            TooLong { max: 32 },
        ),
        refusal(
            Call::create("x@example.com", &"\u{e9}".repeat(33)),
            "username",
            TooLong { max: 32 },
        ),
        // Lookups refuse the same inputs...
        refusal(Call::FindByEmail(s("")), "email", Empty),
        refusal(Call::FindByUsername(s("")), "username", Empty),
        refusal(Call::FindByEmail(s("ada@example.com\0")), "email", Nul),
        refusal(Call::FindByUsername(s("ada\0")), "username", Nul),
        refusal(Call::FindByUsername(s("\0ada")), "username", Nul),
        refusal(
            Call::FindByUsername(s("ad\na")),
            "username",
            ControlCharacter,
        ),
        // ...and cap input at the key length (what they accept beyond the
        // display caps is checked after the table).
        refusal(
            Call::FindByUsername("a".repeat(8193)),
            "username",
            TooLong { max: 8192 },
        ),
        refusal(
            Call::FindByEmail("a".repeat(8193)),
            "email",
            TooLong { max: 8192 },
        ),
        // Updates refuse them too.
        refusal(Call::UpdateEmail(a, s("")), "email", Empty),
        refusal(Call::UpdateEmail(a, s("ada@example.com\0")), "email", Nul),
        refusal(
            Call::UpdateEmail(a, email_255()),
            "email",
            TooLong { max: 254 },
        ),
        refusal(Call::UpdateUsername(a, s("")), "username", Empty),
        refusal(Call::UpdateUsername(a, s("a\0")), "username", Nul),
        refusal(
            Call::UpdateUsername(a, s("a\tb")),
            "username",
            ControlCharacter,
        ),
        refusal(
            Call::UpdateUsername(a, "\u{e9}".repeat(33)),
            "username",
            TooLong { max: 32 },
        ),
    ]);
    t
}

/// Password-hash rules, for `a` (an existing account).
fn pass_hash_refusals(a: UserId) -> Vec<Refusal> {
    let with_hash = |h: Vec<u8>| Call::CreateAccount {
        email: "b@example.com".into(),
        username: "b".into(),
        pass_hash: h,
        created_at: T0,
    };
    let too_long = Violation::TooLong { max: 512 };
    vec![
        refusal(with_hash(vec![]), "pass_hash", Violation::Empty),
        refusal(with_hash(vec![7; 513]), "pass_hash", too_long.clone()),
        refusal(
            Call::UpdatePassHash(a, vec![]),
            "pass_hash",
            Violation::Empty,
        ),
        refusal(Call::UpdatePassHash(a, vec![7; 513]), "pass_hash", too_long),
    ]
}

/// Every call taking a user id, with an id below 1.
fn user_id_refusals() -> Vec<Refusal> {
    let mut t = Vec::new();
    for bad in [UserId(0), UserId(-1), UserId(i64::MIN)] {
        for call in [
            Call::GetAccount(bad),
            Call::UpdateLastLogin(bad, T0),
            Call::UpdatePassHash(bad, HASH.to_vec()),
            Call::UpdateEmail(bad, "x@y.z".into()),
            Call::UpdateUsername(bad, "x".into()),
            Call::DeleteAccount(bad),
            Call::session("bearer-token-padding-tok-x", bad, T0, T0),
            Call::DeleteAllSessions(bad),
            Call::ListSessions(bad),
            Call::RevokeSession(bad, sid("ada-0")),
            Call::GetLoadout(bad),
            Call::SaveLoadout(Loadout::empty(bad, T0)),
            Call::DeleteLoadout(bad),
            Call::GetProgression(bad),
            Call::SetProgression(Progression {
                user_id: bad,
                level: 0,
                xp: 0,
            }),
            Call::AddXp(bad, 1),
            Call::Grant(bad, 1, T0),
            Call::GrantMany(bad, vec![1], T0),
            Call::GrantMany(bad, vec![], T0),
            Call::HasUnlock(bad, 1),
            Call::ListUnlocks(bad),
            Call::RevokeUnlock(bad, 1),
        ] {
            t.push(refusal(call, "user_id", UID_RANGE));
        }
    }
    t
}

/// Counters, flags and loadout slots below 0, for `u` (an existing user).
fn counter_refusals(u: UserId) -> Vec<Refusal> {
    use Violation::Negative;
    let prog = |level, xp| {
        Call::SetProgression(Progression {
            user_id: u,
            level,
            xp,
        })
    };
    let mut t = vec![
        refusal(prog(-1, 0), "level", Negative),
        refusal(prog(0, -1), "xp", Negative),
        refusal(prog(i32::MIN, i64::MIN), "level", Negative),
    ];
    for f in [-1, i32::MIN] {
        t.push(refusal(Call::Grant(u, f, T0), "flag_id", Negative));
        t.push(refusal(Call::HasUnlock(u, f), "flag_id", Negative));
        t.push(refusal(Call::RevokeUnlock(u, f), "flag_id", Negative));
        // One bad flag refuses the whole batch, valid ones included.
        t.push(refusal(
            Call::GrantMany(u, vec![7, 8, f], T0),
            "flag_id",
            Negative,
        ));
    }
    // Each loadout slot group names its field.
    let base = full_loadout(u, 1, T0);
    let with = |edit: &dyn Fn(&mut Loadout)| {
        let mut l = base;
        edit(&mut l);
        Call::SaveLoadout(l)
    };
    t.push(refusal(
        with(&|l| l.element_id = -1),
        "element_id",
        Negative,
    ));
    for i in 0..4 {
        t.push(refusal(
            with(&|l| l.army_abilities[i] = -1),
            "army_abilities",
            Negative,
        ));
        t.push(refusal(with(&|l| l.items[i] = i32::MIN), "items", Negative));
    }
    for i in 0..6 {
        let set_piece = |l: &mut Loadout| {
            let mut arr = l.piece_abilities.to_array();
            arr[i] = -1;
            l.piece_abilities = PieceAbilities::from_array(arr);
        };
        t.push(refusal(with(&set_piece), "piece_abilities", Negative));
    }
    t
}

/// Every timestamp argument outside 0..=TS_MAX, for `u` (an existing user).
fn timestamp_refusals(u: UserId) -> Vec<Refusal> {
    let mut t = Vec::new();
    for bad in [-1, i64::MIN, TS_MAX + 1, i64::MAX] {
        let late = |l: Loadout| Loadout {
            updated_at: bad,
            ..l
        };
        for (call, field) in [
            (
                Call::CreateAccount {
                    email: "b@example.com".into(),
                    username: "b".into(),
                    pass_hash: HASH.to_vec(),
                    created_at: bad,
                },
                "created_at",
            ),
            (Call::UpdateLastLogin(u, bad), "last_login_at"),
            (
                Call::session("bearer-token-padding-tok-new", u, bad, T0),
                "created_at",
            ),
            (
                Call::session("bearer-token-padding-tok-new", u, T0, bad),
                "expires_at",
            ),
            (
                Call::DeleteExpired {
                    now: bad,
                    batch_size: 10,
                },
                "now",
            ),
            (Call::SaveLoadout(late(Loadout::empty(u, T0))), "updated_at"),
            (Call::Grant(u, 9, bad), "unlocked_at"),
            (Call::GrantMany(u, vec![9], bad), "unlocked_at"),
        ] {
            t.push(refusal(call, field, TS_RANGE));
        }
    }
    t
}

/// Session rules, for `u` (an existing user).
fn session_refusals(u: UserId) -> Vec<Refusal> {
    let too_long = Violation::TooLong { max: 512 };
    let mut t = vec![refusal(
        Call::session("bearer-token-padding-tok", u, T0, T0 - 1),
        "expires_at",
        Violation::OutOfRange {
            min: T0,
            max: TS_MAX,
        },
    )];
    let long = "t".repeat(513);
    for token in [String::new(), long] {
        let want = if token.is_empty() {
            Violation::Empty
        } else {
            too_long.clone()
        };
        for call in [
            Call::session(&token, u, T0, T0),
            Call::FindSession(token.clone()),
            Call::DeleteSession(token.clone()),
        ] {
            t.push(refusal(call, "token", want.clone()));
        }
    }
    // 513 bytes in fewer characters is still too long: the cap is in bytes.
    t.push(refusal(
        Call::FindSession(format!("{}x", "\u{e9}".repeat(256))),
        "token",
        too_long,
    ));
    for batch_size in [0, -1, i64::MIN, 100_001, i64::MAX] {
        t.push(refusal(
            Call::DeleteExpired {
                now: T0 + 10_000,
                batch_size,
            },
            "batch_size",
            Violation::OutOfRange {
                min: 1,
                max: 100_000,
            },
        ));
    }
    t
}

async fn input_rules_email_and_username(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    refuses(db, &email_and_username_refusals(a.user_id)).await;

    // Lookups cap input at the key length, not the display length: case
    // folding can make a matching input longer than what was stored.
    let accounts = db.accounts();
    assert!(matches!(
        accounts.find_by_email(&email_255()).await,
        Err(Error::NotFound(Entity::Account))
    ));
    assert!(matches!(
        accounts.find_by_username(&"a".repeat(33)).await,
        Err(Error::NotFound(Entity::Account))
    ));

    // Exactly at the caps: accepted, and multi-byte characters count once.
    let email_254 = format!("{}@example.com", "b".repeat(254 - 12));
    let e1 = mk(db, &email_254, &"b".repeat(32)).await;
    assert_eq!(db.accounts().get(e1.user_id).await.unwrap(), e1);
    let email_254_e = "\u{e9}".repeat(254);
    let e2 = mk(db, &email_254_e, &"\u{e9}".repeat(32)).await;
    assert_eq!(e2.username.len(), 64);
    assert_eq!(
        db.accounts()
            .find_by_username(&"\u{c9}".repeat(32))
            .await
            .unwrap(),
        e2
    );
    assert_eq!(db.accounts().find_by_email(&email_254_e).await.unwrap(), e2);
    let e3 = mk(db, "crab@example.com", &"\u{1f980}".repeat(32)).await;
    assert_eq!(db.accounts().get(e3.user_id).await.unwrap(), e3);
    // Updates at the caps.
    db.accounts()
        .update_username(a.user_id, &"\u{e8}".repeat(32))
        .await
        .unwrap();
    db.accounts()
        .update_email(a.user_id, &"\u{e8}".repeat(254))
        .await
        .unwrap();
    let got = db.accounts().get(a.user_id).await.unwrap();
    assert_eq!(got.username, "\u{e8}".repeat(32));
    assert_eq!(got.email, "\u{e8}".repeat(254));
}

async fn input_rules_pass_hash(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    refuses(db, &pass_hash_refusals(a.user_id)).await;
    // At the cap: accepted.
    let big = vec![7u8; 512];
    let mut na = acct("b@example.com", "b");
    na.pass_hash = &big;
    let b = db.accounts().create(&na).await.unwrap();
    assert_eq!(
        db.accounts().get(b.user_id).await.unwrap().pass_hash,
        vec![7u8; 512]
    );
}

async fn input_rules_user_ids(db: &Db) {
    let a = populated_user(db, "ada@example.com", "ada", "ada").await;
    refuses(db, &user_id_refusals()).await;
    // The valid user is still whole.
    assert_eq!(db.accounts().get(a.user_id).await.unwrap(), a);
}

async fn input_rules_counters(db: &Db) {
    let a = populated_user(db, "ada@example.com", "ada", "ada").await;
    refuses(db, &counter_refusals(a.user_id)).await;
}

async fn input_rules_timestamps(db: &Db) {
    let a = populated_user(db, "ada@example.com", "ada", "ada").await;
    let u = a.user_id;
    refuses(db, &timestamp_refusals(u)).await;
    // The bounds themselves are accepted.
    let mut na = acct("b@example.com", "b");
    na.created_at = 0;
    let b = db.accounts().create(&na).await.unwrap();
    assert_eq!(db.accounts().get(b.user_id).await.unwrap().created_at, 0);
    let mut na = acct("c@example.com", "c");
    na.created_at = TS_MAX;
    let c = db.accounts().create(&na).await.unwrap();
    assert_eq!(
        db.accounts().get(c.user_id).await.unwrap().created_at,
        TS_MAX
    );
    let s = db
        .sessions()
        .create("bearer-token-padding-tok-max", u, 0, TS_MAX)
        .await
        .unwrap();
    assert_eq!(
        db.sessions()
            .find_by_token("bearer-token-padding-tok-max")
            .await
            .unwrap(),
        s
    );
    assert!(db.unlocks().grant(u, 9, TS_MAX).await.unwrap());
    assert_eq!(
        db.unlocks().grant_many(u, &[10], 0).await.unwrap(),
        vec![10]
    );
    let mut l = Loadout::empty(u, TS_MAX);
    l.element_id = 4;
    db.loadouts().save(&l).await.unwrap();
    assert_eq!(db.loadouts().get(u).await.unwrap(), l);
    assert_eq!(db.sessions().delete_expired(0, 10).await.unwrap(), 0);
}

async fn input_rules_sessions(db: &Db) {
    let a = populated_user(db, "ada@example.com", "ada", "ada").await;
    let u = a.user_id;
    refuses(db, &session_refusals(u)).await;
    // A malformed session id.
    assert_err!(
        "not-hex".parse::<SessionId>(),
        Error::InvalidInput {
            field: "session_id",
            violation: Violation::Malformed(_)
        }
    );
    assert_err!(
        "00".repeat(15).parse::<SessionId>(),
        Error::InvalidInput {
            field: "session_id",
            ..
        }
    );
    // At the caps: accepted.
    let long = "t".repeat(512);
    let s = db.sessions().create(&long, u, T0, T0).await.unwrap();
    assert_eq!(db.sessions().find_by_token(&long).await.unwrap(), s);
    assert_eq!(s.expires_at, s.created_at);
    assert_eq!(
        db.sessions().delete_expired(T0 - 1, 100_000).await.unwrap(),
        0
    );
}

// ---------------------------------------------------------------------------
// Injection payloads and Unicode round-trip byte-exact
// ---------------------------------------------------------------------------

async fn injection_payloads_round_trip(db: &Db) {
    let payloads: [(&str, &str); 6] = [
        (
            "x'); DROP TABLE accounts;--@example.com",
            "x'); DROP TABLE accounts;--",
        ),
        (
            "\"; DELETE FROM sessions; --@e.com",
            "\"; DELETE FROM sessions; --",
        ),
        ("a@b.c' OR '1'='1", "' OR '1'='1' --"),
        (
            "robert'); DROP TABLE progression;--@x.io",
            "Robert'); DROP TABLE x;--",
        ),
        ("%_\\@example.com", "%"),
        ("$1@example.com", "$1 ?1 :a @a"),
    ];
    let mut made = Vec::new();
    for (email, username) in payloads {
        let a = mk(db, email, username).await;
        assert_eq!(a.email.as_bytes(), email.as_bytes());
        let got = db.accounts().get(a.user_id).await.unwrap();
        assert_eq!(got.email.as_bytes(), email.as_bytes());
        assert_eq!(got.username.as_bytes(), username.as_bytes());
        assert_eq!(db.accounts().find_by_email(email).await.unwrap(), a);
        assert_eq!(db.accounts().find_by_username(username).await.unwrap(), a);
        made.push(a);
    }
    // LIKE wildcards are not patterns: "%" finds only itself.
    assert_err!(
        db.accounts().find_by_username("_").await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().find_by_email("%@example.com").await,
        Error::NotFound(Entity::Account)
    );
    // Payloads as tokens.
    let u = made[0].user_id;
    for tok in [
        "'; DROP TABLE sessions; -- padding",
        "\" OR 1=1 -- to the 22-character floor",
        "' OR ''=' padded to the floor",
    ] {
        let s = db.sessions().create(tok, u, T0, T0 + 10).await.unwrap();
        assert_eq!(db.sessions().find_by_token(tok).await.unwrap(), s);
    }
    assert_err!(
        db.sessions()
            .find_by_token("bearer-token-padding-anything")
            .await,
        Error::NotFound(Entity::Session)
    );
    // Every table still exists and holds what was written.
    assert_eq!(counts(db).await, [6, 3, 0, 0, 0, 0]);
    for a in &made {
        assert_eq!(&db.accounts().get(a.user_id).await.unwrap(), a);
    }
}

async fn unicode_round_trip(db: &Db) {
    let cases: [(&str, &str); 8] = [
        (
            "\u{1f980}\u{1f3ae}@example.com",
            "\u{1f980}\u{1f3ae}\u{1f451}",
        ),
        (
            "\u{645}\u{631}\u{62d}\u{628}\u{627}@example.com",
            "\u{645}\u{631}\u{62d}\u{628}\u{627}",
        ),
        (
            "\u{5e9}\u{5dc}\u{5d5}\u{5dd}@example.com",
            "\u{5e9}\u{5dc}\u{5d5}\u{5dd}",
        ),
        (
            "zalgo@example.com",
            "Z\u{351}\u{36b}\u{343}a\u{36a}l\u{302}g\u{300}o",
        ),
        (
            "family@example.com",
            "\u{1f469}\u{200d}\u{1f469}\u{200d}\u{1f467}",
        ),
        ("nfd@example.com", "Jose\u{301}"),
        ("bom@example.com", "bom\u{200c}b"),
        (
            "\u{540d}\u{524d}@\u{4f8b}\u{3048}.jp",
            "\u{540d}\u{524d}\u{540d}\u{524d}",
        ),
    ];
    for (email, username) in cases {
        let a = mk(db, email, username).await;
        let got = db.accounts().get(a.user_id).await.unwrap();
        // Stored as given, NFC-normalised.
        let nfc = |s: &str| s.nfc().collect::<String>();
        assert_eq!(got.email.as_bytes(), nfc(email).as_bytes(), "{email:?}");
        assert_eq!(
            got.username.as_bytes(),
            nfc(username).as_bytes(),
            "{username:?}"
        );
        assert_eq!(db.accounts().find_by_username(username).await.unwrap(), got);
        assert_eq!(db.accounts().find_by_email(email).await.unwrap(), got);
    }
    // NFD stored NFC; either form finds it.
    let got = db.accounts().find_by_username("Jose\u{301}").await.unwrap();
    assert_eq!(got.username.as_bytes(), "Jos\u{e9}".as_bytes());
    // Bidi controls and other invisible characters are refused (issue 12),
    // and change nothing.
    for name in [
        "\u{202e}\u{5e9}\u{5dc}\u{5d5}\u{5dd}\u{202c}",
        "\u{feff}bom",
    ] {
        assert_err!(
            db.accounts()
                .create(&acct("refused@example.com", name))
                .await,
            Error::InvalidInput {
                field: "username",
                violation: Violation::InvisibleCharacter
            }
        );
    }
    assert_eq!(counts(db).await[0], 8);
    // Unicode tokens.
    let u = db
        .accounts()
        .find_by_email("nfd@example.com")
        .await
        .unwrap()
        .user_id;
    let s = db
        .sessions()
        .create(
            "bearer-token-padding-\u{1f980}\u{200d}t\u{f6}k\u{e9}n",
            u,
            T0,
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        db.sessions()
            .find_by_token("bearer-token-padding-\u{1f980}\u{200d}t\u{f6}k\u{e9}n")
            .await
            .unwrap(),
        s
    );
    // Tokens are compared byte-exact, not canonically.
    assert_err!(
        db.sessions()
            .find_by_token("bearer-token-padding-\u{1f980}\u{200d}to\u{308}ke\u{301}n")
            .await,
        Error::NotFound(Entity::Session)
    );
}

async fn pass_hash_binary_round_trip(db: &Db) {
    let hash: Vec<u8> = vec![0x00, 0xff, 0x00, b'\'', b';', 0xfe, 0x80, 0x00, 0xff];
    let a = db
        .accounts()
        .create(&NewAccount {
            email: "bin@example.com",
            username: "bin",
            pass_hash: &hash,
            created_at: T0,
        })
        .await
        .unwrap();
    assert_eq!(db.accounts().get(a.user_id).await.unwrap().pass_hash, hash);
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    assert_eq!(all.len(), 512);
    db.accounts()
        .update_pass_hash(a.user_id, &all)
        .await
        .unwrap();
    assert_eq!(
        db.accounts()
            .find_by_username("BIN")
            .await
            .unwrap()
            .pass_hash,
        all
    );
    db.accounts()
        .update_pass_hash(a.user_id, &[0])
        .await
        .unwrap();
    assert_eq!(
        db.accounts().get(a.user_id).await.unwrap().pass_hash,
        vec![0]
    );
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

async fn session_create_and_find(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let token = "q9v1bH0w3hJ4sYk2x8RZcm5uTn7pLfDe0aWgQiVtKoE";
    let s = db
        .sessions()
        .create(token, a.user_id, T0, T0 + 3600)
        .await
        .unwrap();
    assert_eq!(s.user_id, a.user_id);
    assert_eq!(s.created_at, T0);
    assert_eq!(s.expires_at, T0 + 3600);
    assert_eq!(s.id.as_bytes()[..], sha256(token)[..16]);
    let text = s.id.to_string();
    assert_eq!(text.len(), 32);
    assert!(text
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(text, hex::encode(&sha256(token)[..16]));
    assert_eq!(text.parse::<SessionId>().unwrap(), s.id);
    assert_eq!(text.to_uppercase().parse::<SessionId>().unwrap(), s.id);
    let got = db.sessions().find_by_token(token).await.unwrap();
    assert_eq!(got, s);
    // A different token (even a prefix) is not found.
    assert_err!(
        db.sessions().find_by_token(&token[..42]).await,
        Error::NotFound(Entity::Session)
    );
    assert_err!(
        db.sessions()
            .find_by_token("bearer-token-padding-unknown")
            .await,
        Error::NotFound(Entity::Session)
    );
    assert_eq!(counts(db).await, [1, 1, 0, 0, 0, 0]);
}

async fn session_unknown_user(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let before = snapshot(db).await;
    assert_err!(
        db.sessions()
            .create("bearer-token-padding-tok", NOBODY, T0, T0 + 1)
            .await,
        Error::UnknownUser
    );
    assert_err!(
        db.sessions()
            .create(
                "bearer-token-padding-tok",
                UserId(a.user_id.0 + 1),
                T0,
                T0 + 1
            )
            .await,
        Error::UnknownUser
    );
    assert_eq!(snapshot(db).await, before);
    assert_err!(
        db.sessions()
            .find_by_token("bearer-token-padding-tok")
            .await,
        Error::NotFound(Entity::Session)
    );
}

async fn session_same_token_conflict(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    let s = db
        .sessions()
        .create("bearer-token-padding-tok", a.user_id, T0, T0 + 10)
        .await
        .unwrap();
    let before = snapshot(db).await;
    assert_err!(
        db.sessions()
            .create("bearer-token-padding-tok", a.user_id, T0 + 5, T0 + 20)
            .await,
        Error::Conflict(UniqueKey::SessionToken)
    );
    assert_err!(
        db.sessions()
            .create("bearer-token-padding-tok", b.user_id, T0, T0 + 10)
            .await,
        Error::Conflict(UniqueKey::SessionToken)
    );
    // A taken token wins over an unknown user (unique check before FK).
    assert_err!(
        db.sessions()
            .create("bearer-token-padding-tok", NOBODY, T0, T0 + 10)
            .await,
        Error::Conflict(UniqueKey::SessionToken)
    );
    assert_eq!(snapshot(db).await, before);
    assert_eq!(
        db.sessions()
            .find_by_token("bearer-token-padding-tok")
            .await
            .unwrap(),
        s
    );
    // After logout the token can be issued again.
    db.sessions()
        .delete("bearer-token-padding-tok")
        .await
        .unwrap();
    let s2 = db
        .sessions()
        .create("bearer-token-padding-tok", b.user_id, T0 + 1, T0 + 2)
        .await
        .unwrap();
    assert_eq!(s2.id, s.id);
    assert_eq!(
        db.sessions()
            .find_by_token("bearer-token-padding-tok")
            .await
            .unwrap()
            .user_id,
        b.user_id
    );
}

async fn session_delete_logout(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    db.sessions()
        .create("bearer-token-padding-tok-1", a.user_id, T0, T0 + 10)
        .await
        .unwrap();
    let s2 = db
        .sessions()
        .create("bearer-token-padding-tok-2", a.user_id, T0, T0 + 10)
        .await
        .unwrap();
    db.sessions()
        .delete("bearer-token-padding-tok-1")
        .await
        .unwrap();
    assert_err!(
        db.sessions()
            .find_by_token("bearer-token-padding-tok-1")
            .await,
        Error::NotFound(Entity::Session)
    );
    assert_err!(
        db.sessions().delete("bearer-token-padding-tok-1").await,
        Error::NotFound(Entity::Session)
    );
    assert_err!(
        db.sessions()
            .delete("bearer-token-padding-never-issued")
            .await,
        Error::NotFound(Entity::Session)
    );
    assert_eq!(
        db.sessions()
            .find_by_token("bearer-token-padding-tok-2")
            .await
            .unwrap(),
        s2
    );
    assert_eq!(
        db.sessions().list_for_user(a.user_id).await.unwrap(),
        vec![s2]
    );
}

async fn session_delete_all_for_user(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    for i in 0..5 {
        db.sessions()
            .create(&format!("{PAD}a{i}"), a.user_id, T0 + i, T0 + 100)
            .await
            .unwrap();
    }
    let mut bs = Vec::new();
    for i in 0..3 {
        bs.push(
            db.sessions()
                .create(&format!("{PAD}b{i}"), b.user_id, T0 + i, T0 + 100)
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        db.sessions().delete_all_for_user(a.user_id).await.unwrap(),
        5
    );
    assert_eq!(
        db.sessions().delete_all_for_user(a.user_id).await.unwrap(),
        0
    );
    assert_eq!(db.sessions().delete_all_for_user(NOBODY).await.unwrap(), 0);
    for i in 0..5 {
        assert_err!(
            db.sessions().find_by_token(&format!("{PAD}a{i}")).await,
            Error::NotFound(Entity::Session)
        );
    }
    assert_eq!(
        db.sessions().list_for_user(a.user_id).await.unwrap(),
        vec![]
    );
    assert_eq!(db.sessions().list_for_user(b.user_id).await.unwrap(), bs);
    // The account itself stays.
    assert_eq!(db.accounts().get(a.user_id).await.unwrap(), a);
    assert_eq!(counts(db).await, [2, 3, 0, 0, 0, 0]);
}

async fn session_list_and_revoke(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    assert_eq!(
        db.sessions().list_for_user(a.user_id).await.unwrap(),
        vec![]
    );
    assert_eq!(db.sessions().list_for_user(NOBODY).await.unwrap(), vec![]);
    // Created out of order.
    let spec = [
        ("t-late", 300),
        ("t-early", 100),
        ("t-mid", 200),
        ("t-latest", 400),
    ];
    for (tok, at) in spec {
        db.sessions()
            .create(&padded(tok), a.user_id, T0 + at, T0 + at + 50)
            .await
            .unwrap();
    }
    let list = db.sessions().list_for_user(a.user_id).await.unwrap();
    let want: Vec<(SessionId, i64, i64)> = ["t-early", "t-mid", "t-late", "t-latest"]
        .iter()
        .map(|t| {
            let at = spec.iter().find(|(s, _)| s == t).unwrap().1;
            (sid(t), T0 + at, T0 + at + 50)
        })
        .collect();
    let got: Vec<(SessionId, i64, i64)> = list
        .iter()
        .map(|s| {
            assert_eq!(s.user_id, a.user_id);
            (s.id, s.created_at, s.expires_at)
        })
        .collect();
    assert_eq!(got, want);
    // Revoke by id removes exactly that one.
    db.sessions().revoke(a.user_id, sid("t-mid")).await.unwrap();
    assert_err!(
        db.sessions()
            .find_by_token("bearer-token-padding-t-mid")
            .await,
        Error::NotFound(Entity::Session)
    );
    let ids: Vec<SessionId> = db
        .sessions()
        .list_for_user(a.user_id)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec![sid("t-early"), sid("t-late"), sid("t-latest")]);
    assert_err!(
        db.sessions().revoke(a.user_id, sid("t-mid")).await,
        Error::NotFound(Entity::Session)
    );
    assert_err!(
        db.sessions().revoke(a.user_id, sid("never")).await,
        Error::NotFound(Entity::Session)
    );
    // Same created_at: ordered by id, deterministic on both backends.
    let b = mk(db, "bob@example.com", "bob").await;
    let toks = ["s1", "s2", "s3", "s4", "s5", "s6"];
    for t in toks {
        db.sessions()
            .create(&padded(t), b.user_id, T0, T0)
            .await
            .unwrap();
    }
    let mut want: Vec<SessionId> = toks.iter().map(|t| sid(t)).collect();
    want.sort();
    let got: Vec<SessionId> = db
        .sessions()
        .list_for_user(b.user_id)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(got, want);
}

async fn session_revoke_other_users_id(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    let sa = db
        .sessions()
        .create("bearer-token-padding-ada-tok", a.user_id, T0, T0 + 10)
        .await
        .unwrap();
    let sb = db
        .sessions()
        .create("bearer-token-padding-bob-tok", b.user_id, T0, T0 + 10)
        .await
        .unwrap();
    assert_err!(
        db.sessions().revoke(b.user_id, sa.id).await,
        Error::NotFound(Entity::Session)
    );
    assert_err!(
        db.sessions().revoke(NOBODY, sa.id).await,
        Error::NotFound(Entity::Session)
    );
    assert_eq!(
        db.sessions()
            .find_by_token("bearer-token-padding-ada-tok")
            .await
            .unwrap(),
        sa
    );
    assert_eq!(
        db.sessions()
            .find_by_token("bearer-token-padding-bob-tok")
            .await
            .unwrap(),
        sb
    );
    db.sessions().revoke(b.user_id, sb.id).await.unwrap();
    assert_err!(
        db.sessions()
            .find_by_token("bearer-token-padding-bob-tok")
            .await,
        Error::NotFound(Entity::Session)
    );
    assert_eq!(
        db.sessions().list_for_user(a.user_id).await.unwrap(),
        vec![sa]
    );
}

async fn session_delete_expired_batches(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    let now = T0 + 1000;
    // 25 expired: expires_at from now-24 to now (== now counts as expired).
    for i in 0..25 {
        let u = if i % 2 == 0 { a.user_id } else { b.user_id };
        db.sessions()
            .create(&format!("{PAD}old-{i}"), u, T0, now - i)
            .await
            .unwrap();
    }
    let mut live = Vec::new();
    for i in 1..=5 {
        let u = if i % 2 == 0 { a.user_id } else { b.user_id };
        live.push(
            db.sessions()
                .create(&format!("{PAD}live-{i}"), u, T0, now + i)
                .await
                .unwrap(),
        );
    }
    assert_eq!(db.sessions().delete_expired(now, 7).await.unwrap(), 25);
    for i in 0..25 {
        assert_err!(
            db.sessions().find_by_token(&format!("{PAD}old-{i}")).await,
            Error::NotFound(Entity::Session)
        );
    }
    for (i, s) in live.iter().enumerate() {
        assert_eq!(
            &db.sessions()
                .find_by_token(&format!("{PAD}live-{}", i + 1))
                .await
                .unwrap(),
            s
        );
    }
    assert_eq!(counts(db).await[1], 5);
    assert_eq!(db.sessions().delete_expired(now, 7).await.unwrap(), 0);
    // A batch size that divides the count exactly.
    assert_eq!(db.sessions().delete_expired(now + 4, 2).await.unwrap(), 4);
    assert_eq!(counts(db).await[1], 1);
    assert_eq!(db.sessions().delete_expired(now + 5, 1).await.unwrap(), 1);
    assert_eq!(counts(db).await, [2, 0, 0, 0, 0, 0]);
}

async fn session_expired_still_found(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let s = db
        .sessions()
        .create("bearer-token-padding-tok", a.user_id, 100, 200)
        .await
        .unwrap();
    // Long past expiry: still returned; the caller checks expires_at.
    let got = db
        .sessions()
        .find_by_token("bearer-token-padding-tok")
        .await
        .unwrap();
    assert_eq!(got, s);
    assert_eq!(got.expires_at, 200);
    assert_eq!(db.sessions().delete_expired(199, 10).await.unwrap(), 0);
    assert_eq!(
        db.sessions()
            .find_by_token("bearer-token-padding-tok")
            .await
            .unwrap(),
        s
    );
    assert_eq!(db.sessions().delete_expired(200, 10).await.unwrap(), 1);
    assert_err!(
        db.sessions()
            .find_by_token("bearer-token-padding-tok")
            .await,
        Error::NotFound(Entity::Session)
    );
}

// ---------------------------------------------------------------------------
// Loadouts
// ---------------------------------------------------------------------------

/// The piece columns as stored, in canonical order, read raw.
async fn raw_loadout_row(db: &Db, user: UserId) -> Vec<i64> {
    let sql = "SELECT element_id, army_ability_1, army_ability_2, army_ability_3, army_ability_4, \
               ability_pawn, ability_knight, ability_bishop, ability_rook, ability_queen, \
               ability_king, item_1, item_2, item_3, item_4, updated_at \
               FROM army_loadouts WHERE user_id = ";
    match Raw::open(db).await {
        Raw::Sqlite(c) => c
            .query_row(&format!("{sql}?1"), [user.0], |r| {
                (0..16).map(|i| r.get::<_, i64>(i)).collect()
            })
            .unwrap(),
        Raw::Postgres(c) => {
            let r = c.query_one(&format!("{sql}$1"), &[&user.0]).await.unwrap();
            let mut v: Vec<i64> = (0..15).map(|i| i64::from(r.get::<_, i32>(i))).collect();
            v.push(r.get(15));
            v
        }
    }
}

async fn loadout_get_unknown(db: &Db) {
    assert_err!(
        db.loadouts().get(NOBODY).await,
        Error::NotFound(Entity::Loadout)
    );
    let a = mk(db, "ada@example.com", "ada").await;
    assert_err!(
        db.loadouts().get(a.user_id).await,
        Error::NotFound(Entity::Loadout)
    );
}

async fn loadout_save_get_replace(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    let l = full_loadout(a.user_id, 1, T0);
    db.loadouts().save(&l).await.unwrap();
    assert_eq!(db.loadouts().get(a.user_id).await.unwrap(), l);
    assert_eq!(l.piece_abilities.to_array(), [6, 7, 8, 9, 10, 11]);
    // Stored in the canonical columns.
    assert_eq!(
        raw_loadout_row(db, a.user_id).await,
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, T0]
    );
    // Saving again replaces everything, updated_at included.
    let l2 = Loadout {
        user_id: a.user_id,
        element_id: 4,
        army_abilities: [8, 0, 0, 1],
        piece_abilities: PieceAbilities {
            pawn: 0,
            knight: 2,
            bishop: 0,
            rook: 0,
            queen: 7,
            king: 0,
        },
        items: [0, 0, 3, 0],
        updated_at: T0 + 99,
    };
    db.loadouts().save(&l2).await.unwrap();
    assert_eq!(db.loadouts().get(a.user_id).await.unwrap(), l2);
    assert_eq!(
        raw_loadout_row(db, a.user_id).await,
        vec![4, 8, 0, 0, 1, 0, 2, 0, 0, 7, 0, 0, 0, 3, 0, T0 + 99]
    );
    // Back to all empty; large catalogue ids are not capped.
    db.loadouts()
        .save(&Loadout::empty(a.user_id, T0 + 100))
        .await
        .unwrap();
    assert_eq!(
        db.loadouts().get(a.user_id).await.unwrap(),
        Loadout::empty(a.user_id, T0 + 100)
    );
    let big = full_loadout(b.user_id, i32::MAX - 14, T0);
    db.loadouts().save(&big).await.unwrap();
    assert_eq!(db.loadouts().get(b.user_id).await.unwrap(), big);
    // Users do not share loadouts.
    assert_eq!(
        db.loadouts().get(a.user_id).await.unwrap(),
        Loadout::empty(a.user_id, T0 + 100)
    );
    assert_eq!(counts(db).await, [2, 0, 2, 0, 0, 0]);
}

async fn loadout_save_unknown_user(db: &Db) {
    let before = snapshot(db).await;
    assert_err!(
        db.loadouts().save(&full_loadout(NOBODY, 1, T0)).await,
        Error::UnknownUser
    );
    assert_eq!(snapshot(db).await, before);
    assert_err!(
        db.loadouts().get(NOBODY).await,
        Error::NotFound(Entity::Loadout)
    );
}

async fn loadout_delete(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    db.loadouts()
        .save(&full_loadout(a.user_id, 1, T0))
        .await
        .unwrap();
    let lb = full_loadout(b.user_id, 2, T0);
    db.loadouts().save(&lb).await.unwrap();
    db.loadouts().delete(a.user_id).await.unwrap();
    assert_err!(
        db.loadouts().get(a.user_id).await,
        Error::NotFound(Entity::Loadout)
    );
    assert_err!(
        db.loadouts().delete(a.user_id).await,
        Error::NotFound(Entity::Loadout)
    );
    assert_err!(
        db.loadouts().delete(NOBODY).await,
        Error::NotFound(Entity::Loadout)
    );
    assert_eq!(db.loadouts().get(b.user_id).await.unwrap(), lb);
    // The account is untouched; a new loadout can be saved.
    assert_eq!(db.accounts().get(a.user_id).await.unwrap(), a);
    db.loadouts()
        .save(&Loadout::empty(a.user_id, 5))
        .await
        .unwrap();
    assert_eq!(
        db.loadouts().get(a.user_id).await.unwrap(),
        Loadout::empty(a.user_id, 5)
    );
}

// ---------------------------------------------------------------------------
// Progression
// ---------------------------------------------------------------------------

fn prog(user: UserId, level: i32, xp: i64) -> Progression {
    Progression {
        user_id: user,
        level,
        xp,
    }
}

async fn progression_get_set_replace(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    assert_err!(
        db.progression().get(a.user_id).await,
        Error::NotFound(Entity::Progression)
    );
    db.progression().set(&prog(a.user_id, 1, 10)).await.unwrap();
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 1, 10)
    );
    db.progression().set(&prog(a.user_id, 5, 0)).await.unwrap();
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 5, 0)
    );
    db.progression()
        .set(&prog(b.user_id, i32::MAX, i64::MAX))
        .await
        .unwrap();
    assert_eq!(
        db.progression().get(b.user_id).await.unwrap(),
        prog(b.user_id, i32::MAX, i64::MAX)
    );
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 5, 0)
    );
    assert_eq!(counts(db).await, [2, 0, 0, 2, 0, 0]);
}

async fn progression_add_xp(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    db.progression()
        .set(&prog(a.user_id, 3, 100))
        .await
        .unwrap();
    assert_eq!(
        db.progression().add_xp(a.user_id, 25).await.unwrap(),
        prog(a.user_id, 3, 125)
    );
    assert_eq!(
        db.progression().add_xp(a.user_id, 0).await.unwrap(),
        prog(a.user_id, 3, 125)
    );
    assert_eq!(
        db.progression().add_xp(a.user_id, -100).await.unwrap(),
        prog(a.user_id, 3, 25)
    );
    // Down to exactly zero is allowed.
    assert_eq!(
        db.progression().add_xp(a.user_id, -25).await.unwrap(),
        prog(a.user_id, 3, 0)
    );
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 3, 0)
    );
    // Below zero: typed error, nothing changes.
    invalid(
        db.progression().add_xp(a.user_id, -1).await,
        "xp_delta",
        Violation::WouldBeNegative,
    );
    invalid(
        db.progression().add_xp(a.user_id, i64::MIN).await,
        "xp_delta",
        Violation::WouldBeNegative,
    );
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 3, 0)
    );
    db.progression().add_xp(a.user_id, 10).await.unwrap();
    invalid(
        db.progression().add_xp(a.user_id, -11).await,
        "xp_delta",
        Violation::WouldBeNegative,
    );
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 3, 10)
    );
}

async fn progression_add_xp_bounds(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    db.progression()
        .set(&prog(a.user_id, 7, i64::MAX - 5))
        .await
        .unwrap();
    let before = snapshot(db).await;
    invalid(
        db.progression().add_xp(a.user_id, 6).await,
        "xp_delta",
        Violation::Overflow,
    );
    invalid(
        db.progression().add_xp(a.user_id, i64::MAX).await,
        "xp_delta",
        Violation::Overflow,
    );
    assert_eq!(snapshot(db).await, before);
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 7, i64::MAX - 5)
    );
    // Exactly to the top is fine.
    assert_eq!(
        db.progression().add_xp(a.user_id, 5).await.unwrap(),
        prog(a.user_id, 7, i64::MAX)
    );
    invalid(
        db.progression().add_xp(a.user_id, 1).await,
        "xp_delta",
        Violation::Overflow,
    );
    // The largest subtraction from the top.
    invalid(
        db.progression().add_xp(a.user_id, i64::MIN).await,
        "xp_delta",
        Violation::WouldBeNegative,
    );
    assert_eq!(
        db.progression().add_xp(a.user_id, -i64::MAX).await.unwrap(),
        prog(a.user_id, 7, 0)
    );
    assert_eq!(
        db.progression().add_xp(a.user_id, i64::MAX).await.unwrap(),
        prog(a.user_id, 7, i64::MAX)
    );
    db.progression().set(&prog(a.user_id, 0, 0)).await.unwrap();
    invalid(
        db.progression().add_xp(a.user_id, i64::MIN).await,
        "xp_delta",
        Violation::WouldBeNegative,
    );
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 0, 0)
    );
}

async fn progression_unknown_user(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let before = snapshot(db).await;
    // No progression row: NotFound for every delta, even ones that would
    // overflow or go negative.
    for d in [1, 0, -1, i64::MAX, i64::MIN] {
        assert_err!(
            db.progression().add_xp(a.user_id, d).await,
            Error::NotFound(Entity::Progression)
        );
        assert_err!(
            db.progression().add_xp(NOBODY, d).await,
            Error::NotFound(Entity::Progression)
        );
    }
    assert_err!(
        db.progression().set(&prog(NOBODY, 1, 1)).await,
        Error::UnknownUser
    );
    assert_err!(
        db.progression().get(NOBODY).await,
        Error::NotFound(Entity::Progression)
    );
    assert_eq!(snapshot(db).await, before);
}

// ---------------------------------------------------------------------------
// Unlocks
// ---------------------------------------------------------------------------

fn ul(flag_id: i32, unlocked_at: i64) -> Unlock {
    Unlock {
        flag_id,
        unlocked_at,
    }
}

async fn unlock_grant(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    assert!(db.unlocks().grant(a.user_id, 3, T0).await.unwrap());
    assert!(!db.unlocks().grant(a.user_id, 3, T0 + 50).await.unwrap());
    // The first grant's time is kept.
    assert_eq!(db.unlocks().list(a.user_id).await.unwrap(), vec![ul(3, T0)]);
    // Per user.
    assert!(db.unlocks().grant(b.user_id, 3, T0 + 1).await.unwrap());
    assert!(db.unlocks().grant(a.user_id, 0, T0).await.unwrap());
    assert!(db.unlocks().grant(a.user_id, i32::MAX, T0).await.unwrap());
    let before = snapshot(db).await;
    assert_err!(db.unlocks().grant(NOBODY, 3, T0).await, Error::UnknownUser);
    assert_eq!(snapshot(db).await, before);
    assert_eq!(
        db.unlocks().list(a.user_id).await.unwrap(),
        vec![ul(0, T0), ul(3, T0), ul(i32::MAX, T0)]
    );
}

async fn unlock_grant_many(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    assert!(db.unlocks().grant(a.user_id, 3, T0).await.unwrap());
    // Duplicates in the input; 3 already held; result ascending.
    assert_eq!(
        db.unlocks()
            .grant_many(a.user_id, &[9, 5, 3, 1, 5, 9, 9], T0 + 1)
            .await
            .unwrap(),
        vec![1, 5, 9]
    );
    // All already held.
    assert_eq!(
        db.unlocks()
            .grant_many(a.user_id, &[1, 3, 5, 9], T0 + 2)
            .await
            .unwrap(),
        Vec::<i32>::new()
    );
    // Empty input.
    assert_eq!(
        db.unlocks().grant_many(a.user_id, &[], T0).await.unwrap(),
        Vec::<i32>::new()
    );
    assert_eq!(
        db.unlocks().list(a.user_id).await.unwrap(),
        vec![ul(1, T0 + 1), ul(3, T0), ul(5, T0 + 1), ul(9, T0 + 1)]
    );
    // Unknown user: nothing granted at all.
    let before = snapshot(db).await;
    assert_err!(
        db.unlocks().grant_many(NOBODY, &[1, 2, 3], T0).await,
        Error::UnknownUser
    );
    assert_eq!(snapshot(db).await, before);
    assert_eq!(db.unlocks().list(NOBODY).await.unwrap(), vec![]);
    // A large batch in one call.
    let many: Vec<i32> = (100..400).rev().collect();
    let got = db.unlocks().grant_many(a.user_id, &many, T0).await.unwrap();
    assert_eq!(got, (100..400).collect::<Vec<_>>());
    assert_eq!(db.unlocks().list(a.user_id).await.unwrap().len(), 304);
}

async fn unlock_has_list_revoke(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let b = mk(db, "bob@example.com", "bob").await;
    assert_eq!(db.unlocks().list(a.user_id).await.unwrap(), vec![]);
    assert!(!db.unlocks().has(a.user_id, 1).await.unwrap());
    assert!(!db.unlocks().has(NOBODY, 1).await.unwrap());
    for (f, at) in [(42, T0 + 3), (7, T0 + 1), (19, T0 + 2)] {
        assert!(db.unlocks().grant(a.user_id, f, at).await.unwrap());
    }
    assert!(db.unlocks().grant(b.user_id, 8, T0).await.unwrap());
    assert!(db.unlocks().has(a.user_id, 42).await.unwrap());
    assert!(!db.unlocks().has(a.user_id, 8).await.unwrap());
    assert!(db.unlocks().has(b.user_id, 8).await.unwrap());
    assert_eq!(
        db.unlocks().list(a.user_id).await.unwrap(),
        vec![ul(7, T0 + 1), ul(19, T0 + 2), ul(42, T0 + 3)]
    );
    db.unlocks().revoke(a.user_id, 19).await.unwrap();
    assert!(!db.unlocks().has(a.user_id, 19).await.unwrap());
    assert_err!(
        db.unlocks().revoke(a.user_id, 19).await,
        Error::NotFound(Entity::Unlock)
    );
    assert_err!(
        db.unlocks().revoke(a.user_id, 8).await,
        Error::NotFound(Entity::Unlock)
    );
    assert_err!(
        db.unlocks().revoke(NOBODY, 8).await,
        Error::NotFound(Entity::Unlock)
    );
    assert_eq!(
        db.unlocks().list(a.user_id).await.unwrap(),
        vec![ul(7, T0 + 1), ul(42, T0 + 3)]
    );
    assert_eq!(db.unlocks().list(b.user_id).await.unwrap(), vec![ul(8, T0)]);
    // Re-granting after a revoke is new again.
    assert!(db.unlocks().grant(a.user_id, 19, T0 + 9).await.unwrap());
    assert_eq!(
        db.unlocks().list(a.user_id).await.unwrap(),
        vec![ul(7, T0 + 1), ul(19, T0 + 9), ul(42, T0 + 3)]
    );
}

// ---------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------

/// The register flow inside `tx`: account + progression + default loadout +
/// a session.
async fn register_in(tx: &persist::Tx, email: &str, username: &str, token: &str) -> Account {
    let a = common::register_in(tx, &acct(email, username))
        .await
        .unwrap();
    tx.sessions()
        .create(&padded(token), a.user_id, T0, T0 + 3600)
        .await
        .unwrap();
    a
}

async fn assert_no_trace(db: &Db, id: UserId, email: &str, username: &str, token: &str) {
    assert_err!(
        db.accounts().get(id).await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().find_by_email(email).await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.accounts().find_by_username(username).await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.progression().get(id).await,
        Error::NotFound(Entity::Progression)
    );
    assert_err!(
        db.loadouts().get(id).await,
        Error::NotFound(Entity::Loadout)
    );
    assert_err!(
        db.sessions().find_by_token(&padded(token)).await,
        Error::NotFound(Entity::Session)
    );
    assert_eq!(db.unlocks().list(id).await.unwrap(), vec![]);
}

async fn tx_register_commit(db: &Db) {
    let tx = db.begin().await.unwrap();
    let a = register_in(&tx, "ada@example.com", "ada", "tok").await;
    tx.commit().await.unwrap();
    assert_eq!(
        db.accounts()
            .find_by_email("ADA@example.com")
            .await
            .unwrap(),
        a
    );
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 1, 0)
    );
    assert_eq!(
        db.loadouts().get(a.user_id).await.unwrap(),
        Loadout::empty(a.user_id, T0)
    );
    assert_eq!(
        db.sessions()
            .find_by_token("bearer-token-padding-tok")
            .await
            .unwrap()
            .user_id,
        a.user_id
    );
    assert_eq!(counts(db).await, [1, 1, 1, 1, 0, 0]);
}

async fn tx_register_rollback(db: &Db) {
    let before = snapshot(db).await;
    let tx = db.begin().await.unwrap();
    let a = register_in(&tx, "ada@example.com", "ada", "tok").await;
    tx.rollback().await.unwrap();
    assert_no_trace(db, a.user_id, "ada@example.com", "ada", "tok").await;
    assert_eq!(snapshot(db).await, before);
    // The names are free: registering again works.
    let tx = db.begin().await.unwrap();
    let b = register_in(&tx, "ada@example.com", "ada", "tok").await;
    tx.commit().await.unwrap();
    assert_eq!(db.accounts().find_by_username("ada").await.unwrap(), b);
}

async fn tx_drop_rolls_back(db: &Db) {
    let keep = mk(db, "keep@example.com", "keep").await;
    let before = snapshot(db).await;
    let id = {
        let tx = db.begin().await.unwrap();
        let a = register_in(&tx, "ada@example.com", "ada", "tok").await;
        tx.unlocks()
            .grant_many(a.user_id, &[1, 2], T0)
            .await
            .unwrap();
        tx.accounts().delete(keep.user_id).await.unwrap();
        a.user_id
        // dropped without commit
    };
    assert_no_trace(db, id, "ada@example.com", "ada", "tok").await;
    assert_eq!(db.accounts().get(keep.user_id).await.unwrap(), keep);
    assert_eq!(snapshot(db).await, before);
    // The names are free again (on PostgreSQL this waits for the rollback).
    let a = mk(db, "ADA@example.com", "Ada").await;
    assert_eq!(
        db.accounts()
            .find_by_email("ada@example.com")
            .await
            .unwrap(),
        a
    );
}

async fn tx_fails_midway(db: &Db) {
    let before = snapshot(db).await;
    let id = {
        let tx = db.begin().await.unwrap();
        let a = register_in(&tx, "ada@example.com", "ada", "tok").await;
        assert!(tx.unlocks().grant(a.user_id, 5, T0).await.unwrap());
        // A second account with the email just taken inside the unit.
        assert_err!(
            tx.accounts()
                .create(&acct("ADA@EXAMPLE.COM", "other"))
                .await,
            Error::Conflict(UniqueKey::Email)
        );
        a.user_id
    };
    assert_no_trace(db, id, "ada@example.com", "ada", "tok").await;
    assert_eq!(snapshot(db).await, before);

    // Failing on a foreign key midway, then an explicit rollback.
    let keep = mk(db, "keep@example.com", "keep").await;
    let before = snapshot(db).await;
    let tx = db.begin().await.unwrap();
    let a = register_in(&tx, "bob@example.com", "bob", "tok-b").await;
    assert_err!(
        tx.sessions()
            .create("bearer-token-padding-tok-c", NOBODY, T0, T0)
            .await,
        Error::UnknownUser
    );
    tx.rollback().await.unwrap();
    assert_no_trace(db, a.user_id, "bob@example.com", "bob", "tok-b").await;
    assert_eq!(snapshot(db).await, before);
    assert_eq!(db.accounts().get(keep.user_id).await.unwrap(), keep);

    // A failed statement aborts the unit on both backends: later calls and
    // commit report Aborted, and nothing of it is committed.
    let tx = db.begin().await.unwrap();
    let a = register_in(&tx, "cy@example.com", "cy", "tok-cy").await;
    assert_err!(
        tx.accounts().create(&acct("keep@example.com", "cy2")).await,
        Error::Conflict(UniqueKey::Email)
    );
    assert_err!(tx.progression().add_xp(a.user_id, 1).await, Error::Aborted);
    assert_err!(tx.accounts().get(a.user_id).await, Error::Aborted);
    assert_err!(tx.commit().await, Error::Aborted);
    assert_no_trace(db, a.user_id, "cy@example.com", "cy", "tok-cy").await;
    assert_eq!(snapshot(db).await, before);
    // NotFound and refused input are not failures of the unit.
    let tx = db.begin().await.unwrap();
    assert_err!(
        tx.accounts().get(NOBODY).await,
        Error::NotFound(Entity::Account)
    );
    invalid(
        tx.accounts().create(&acct("", "x")).await,
        "email",
        Violation::Empty,
    );
    let d = register_in(&tx, "dee@example.com", "dee", "tok-dee").await;
    tx.commit().await.unwrap();
    assert_eq!(db.accounts().get(d.user_id).await.unwrap(), d);
}

async fn tx_end_of_battle(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    db.progression().set(&prog(a.user_id, 2, 50)).await.unwrap();
    assert!(db.unlocks().grant(a.user_id, 1, T0).await.unwrap());

    let tx = db.begin().await.unwrap();
    assert_eq!(
        tx.progression().add_xp(a.user_id, 120).await.unwrap(),
        prog(a.user_id, 2, 170)
    );
    assert_eq!(
        tx.unlocks()
            .grant_many(a.user_id, &[1, 4, 2], T0 + 5)
            .await
            .unwrap(),
        vec![2, 4]
    );
    // Not visible outside before commit.
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 2, 50)
    );
    assert!(!db.unlocks().has(a.user_id, 4).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 2, 170)
    );
    assert_eq!(
        db.unlocks().list(a.user_id).await.unwrap(),
        vec![ul(1, T0), ul(2, T0 + 5), ul(4, T0 + 5)]
    );

    // The same battle result rolled back: nothing of it stays.
    let tx = db.begin().await.unwrap();
    tx.progression().add_xp(a.user_id, 1000).await.unwrap();
    assert_eq!(
        tx.unlocks()
            .grant_many(a.user_id, &[6, 7], T0 + 6)
            .await
            .unwrap(),
        vec![6, 7]
    );
    drop(tx);
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 2, 170)
    );
    assert!(!db.unlocks().has(a.user_id, 6).await.unwrap());

    // Typed errors inside a unit of work: nothing changes.
    let tx = db.begin().await.unwrap();
    invalid(
        tx.progression().add_xp(a.user_id, -171).await,
        "xp_delta",
        Violation::WouldBeNegative,
    );
    assert_eq!(
        tx.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 2, 170)
    );
    assert_err!(
        tx.progression().add_xp(NOBODY, 1).await,
        Error::NotFound(Entity::Progression)
    );
    tx.commit().await.unwrap();
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 2, 170)
    );
}

async fn tx_reads_see_own_writes(db: &Db) {
    let tx = db.begin().await.unwrap();
    let a = register_in(&tx, "ada@example.com", "ada", "tok").await;
    assert_eq!(tx.accounts().get(a.user_id).await.unwrap(), a);
    assert_eq!(
        tx.accounts()
            .find_by_email("ADA@EXAMPLE.COM")
            .await
            .unwrap(),
        a
    );
    assert_eq!(tx.accounts().find_by_username("Ada").await.unwrap(), a);
    assert_eq!(
        tx.progression().get(a.user_id).await.unwrap(),
        prog(a.user_id, 1, 0)
    );
    assert_eq!(
        tx.loadouts().get(a.user_id).await.unwrap(),
        Loadout::empty(a.user_id, T0)
    );
    let s = tx
        .sessions()
        .find_by_token("bearer-token-padding-tok")
        .await
        .unwrap();
    assert_eq!(s.user_id, a.user_id);
    assert_eq!(
        tx.sessions().list_for_user(a.user_id).await.unwrap(),
        vec![s]
    );
    assert!(tx.unlocks().grant(a.user_id, 3, T0).await.unwrap());
    assert!(tx.unlocks().has(a.user_id, 3).await.unwrap());
    assert_eq!(tx.unlocks().list(a.user_id).await.unwrap(), vec![ul(3, T0)]);
    tx.accounts()
        .update_last_login(a.user_id, T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        tx.accounts().get(a.user_id).await.unwrap().last_login_at,
        Some(T0 + 1)
    );
    // The pool sees none of it yet.
    assert_err!(
        db.accounts().find_by_email("ada@example.com").await,
        Error::NotFound(Entity::Account)
    );
    assert_err!(
        db.sessions()
            .find_by_token("bearer-token-padding-tok")
            .await,
        Error::NotFound(Entity::Session)
    );
    // A delete inside the unit cascades inside the unit.
    tx.accounts().delete(a.user_id).await.unwrap();
    assert_err!(
        tx.sessions()
            .find_by_token("bearer-token-padding-tok")
            .await,
        Error::NotFound(Entity::Session)
    );
    assert_eq!(tx.unlocks().list(a.user_id).await.unwrap(), vec![]);
    tx.commit().await.unwrap();
    assert_eq!(counts(db).await, [0, 0, 0, 0, 0, 0]);
}

async fn tx_session_sweep_and_logout_all(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    for i in 0..4 {
        db.sessions()
            .create(&format!("{PAD}t{i}"), a.user_id, T0, T0 + i)
            .await
            .unwrap();
    }
    let tx = db.begin().await.unwrap();
    assert_eq!(tx.sessions().delete_expired(T0 + 1, 1).await.unwrap(), 2);
    assert_eq!(
        tx.sessions().list_for_user(a.user_id).await.unwrap().len(),
        2
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        db.sessions().list_for_user(a.user_id).await.unwrap().len(),
        4
    );
    // Password change: new hash and logout everywhere, together.
    let tx = db.begin().await.unwrap();
    tx.accounts()
        .update_pass_hash(a.user_id, b"new")
        .await
        .unwrap();
    assert_eq!(
        tx.sessions().delete_all_for_user(a.user_id).await.unwrap(),
        4
    );
    tx.commit().await.unwrap();
    assert_eq!(
        db.sessions().list_for_user(a.user_id).await.unwrap(),
        vec![]
    );
    assert_eq!(
        db.accounts().get(a.user_id).await.unwrap().pass_hash,
        b"new"
    );
}

conformance!(
    lookup_input_may_be_longer_than_the_stored_name,
    account_create_returns_id_and_echoes_fields,
    account_get_and_find_not_found,
    account_lookup_is_case_and_unicode_insensitive,
    account_create_conflicts,
    account_update_last_login,
    account_update_pass_hash,
    account_update_email,
    account_update_username,
    account_delete_then_not_found,
    account_delete_cascades_every_table,
    closed_handle_is_typed,
    input_rules_email_and_username,
    input_rules_pass_hash,
    input_rules_user_ids,
    input_rules_counters,
    input_rules_timestamps,
    input_rules_sessions,
    injection_payloads_round_trip,
    unicode_round_trip,
    pass_hash_binary_round_trip,
    session_create_and_find,
    session_unknown_user,
    session_same_token_conflict,
    session_delete_logout,
    session_delete_all_for_user,
    session_list_and_revoke,
    session_revoke_other_users_id,
    session_delete_expired_batches,
    session_expired_still_found,
    loadout_get_unknown,
    loadout_save_get_replace,
    loadout_save_unknown_user,
    loadout_delete,
    progression_get_set_replace,
    progression_add_xp,
    progression_add_xp_bounds,
    progression_unknown_user,
    unlock_grant,
    unlock_grant_many,
    unlock_has_list_revoke,
    tx_register_commit,
    tx_register_rollback,
    tx_drop_rolls_back,
    tx_fails_midway,
    tx_end_of_battle,
    tx_reads_see_own_writes,
    tx_session_sweep_and_logout_all,
    sessions_dump_holds_no_bearer_token,
);

// ---------------------------------------------------------------------------
// Raw dump of the sessions table: no bearer token is stored
// ---------------------------------------------------------------------------

const DUMP_TOKENS: [&str; 4] = [
    "q9v1bH0w3hJ4sYk2x8RZcm5uTn7pLfDe0aWgQiVtKoE",
    "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5",
    "short-but-unique-token-1234",
    "t\u{f6}k\u{e9}n-\u{1f980}-unicode-bearer-token",
];

async fn create_dump_sessions(db: &Db) -> UserId {
    let a = mk(db, "ada@example.com", "ada").await;
    for (i, t) in DUMP_TOKENS.iter().enumerate() {
        db.sessions()
            .create(t, a.user_id, T0 + i as i64, T0 + 3600)
            .await
            .unwrap();
    }
    a.user_id
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Asserts no form of any token (raw bytes, hex, base64-decoded bytes) is in
/// `dump`.
fn assert_no_token_in(dump: &[u8], what: &str) {
    for t in DUMP_TOKENS {
        assert!(!contains(dump, t.as_bytes()), "{what} contains token {t:?}");
        assert!(
            !contains(dump, hex::encode(t.as_bytes()).as_bytes()),
            "{what} contains the hex of token {t:?}"
        );
        assert!(
            !contains(dump, hex::encode_upper(t.as_bytes()).as_bytes()),
            "{what} contains the HEX of token {t:?}"
        );
        // A distinctive infix, in case a column stored a part of it.
        let mid = &t.as_bytes()[4..20];
        assert!(!contains(dump, mid), "{what} contains part of token {t:?}");
    }
}

/// The sessions table, every text rendering of it and (SQLite) the database
/// files hold the digests only, never a bearer token in any form.
async fn sessions_dump_holds_no_bearer_token(db: &Db) {
    let user = create_dump_sessions(db).await;
    match Raw::open(db).await {
        Raw::Sqlite(_) => {
            let path = db.config().sqlite_path().unwrap().to_path_buf();
            {
                let c = rusqlite::Connection::open(&path).unwrap();
                let mut st = c
                    .prepare(
                        "SELECT token, user_id, expires_at, created_at FROM sessions ORDER BY created_at",
                    )
                    .unwrap();
                let rows: Vec<(Vec<u8>, i64, i64, i64)> = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                assert_eq!(rows.len(), DUMP_TOKENS.len());
                let mut dump = Vec::new();
                for (i, (token, uid, exp, created)) in rows.iter().enumerate() {
                    assert_eq!(token.as_slice(), sha256(DUMP_TOKENS[i]).as_slice());
                    assert_eq!((*uid, *exp, *created), (user.0, T0 + 3600, T0 + i as i64));
                    dump.extend_from_slice(token);
                    dump.extend_from_slice(format!("|{uid}|{exp}|{created}\n").as_bytes());
                }
                // The column is a BLOB (no text form of anything).
                let kinds: Vec<String> = c
                    .prepare("SELECT DISTINCT typeof(token) FROM sessions")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                assert_eq!(kinds, vec!["blob".to_string()]);
                // Every text rendering of the table.
                let text: Vec<String> = c
                    .prepare("SELECT quote(token) || ',' || user_id || ',' || expires_at || ',' || created_at FROM sessions")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                dump.extend_from_slice(text.join("\n").as_bytes());
                assert_no_token_in(&dump, "sessions table dump");
                // The session ids are the digests' first half.
                let ids: Vec<SessionId> = rows
                    .iter()
                    .map(|(tok, ..)| hex::encode(&tok[..16]).parse().unwrap())
                    .collect();
                let listed: Vec<SessionId> = db
                    .sessions()
                    .list_for_user(user)
                    .await
                    .unwrap()
                    .iter()
                    .map(|s| s.id)
                    .collect();
                assert_eq!(listed, ids);
            }
            // The raw database files (main file and WAL) hold no token either.
            let mut files = Vec::new();
            for suffix in ["", "-wal"] {
                let p = format!("{}{suffix}", path.display());
                if let Ok(bytes) = std::fs::read(&p) {
                    files.extend_from_slice(&bytes);
                }
            }
            assert!(!files.is_empty());
            assert!(
                contains(&files, &sha256(DUMP_TOKENS[0])),
                "the digest is stored somewhere in the files"
            );
            assert_no_token_in(&files, "database files");
        }
        Raw::Postgres(c) => {
            let rows = c
                .query(
                    "SELECT token, user_id, expires_at, created_at, sessions::text, \
                     encode(token, 'escape'), octet_length(token) \
                     FROM sessions ORDER BY created_at",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(rows.len(), DUMP_TOKENS.len());
            let mut dump = Vec::new();
            for (i, r) in rows.iter().enumerate() {
                let token: Vec<u8> = r.get(0);
                assert_eq!(token.as_slice(), sha256(DUMP_TOKENS[i]).as_slice());
                let (uid, exp, created): (i64, i64, i64) = (r.get(1), r.get(2), r.get(3));
                assert_eq!((uid, exp, created), (user.0, T0 + 3600, T0 + i as i64));
                assert_eq!(r.get::<_, i32>(6), 32);
                dump.extend_from_slice(&token);
                dump.extend_from_slice(r.get::<_, String>(4).as_bytes());
                dump.extend_from_slice(r.get::<_, String>(5).as_bytes());
            }
            // The whole table as COPY would write it.
            let copy_rows = c
                .simple_query("SELECT string_agg(s::text, E'\\n') FROM sessions s")
                .await
                .unwrap();
            for m in copy_rows {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    dump.extend_from_slice(r.get(0).unwrap_or("").as_bytes());
                }
            }
            assert_no_token_in(&dump, "sessions table dump");
        }
    }
}
