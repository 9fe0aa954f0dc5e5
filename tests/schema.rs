//! The canonical schema (migration 0001) on both dialects: parity by catalog
//! introspection, `user_id` never reused, case- and Unicode-insensitive
//! uniqueness, session tokens stored as SHA-256 digests, CHECK constraints and
//! cascading foreign keys.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Backend, TestDb};
use persist::{canonical_key, Error, NewAccount, TypeClass, UniqueKey, UserId};
use sha2::{Digest, Sha256};

both_backends! {
    test_db user_id_is_never_reused,
    test_db uniqueness_is_case_and_unicode_insensitive,
    test_db sessions_store_the_token_digest_never_the_token,
    test_db check_constraints_reject_bad_rows,
    test_db deleting_an_account_cascades_to_every_child_table,
}

// ---------------------------------------------------------------------------
// Catalog introspection: the library's (`persist::read_schema`), reduced to
// what the two dialects share.

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    class: TypeClass,
    nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ForeignKey {
    columns: Vec<String>,
    references: String,
    ref_columns: Vec<String>,
    on_delete: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Table {
    /// In declaration order.
    columns: Vec<Column>,
    primary_key: Vec<String>,
    /// Unique constraints and unique indexes other than the primary key.
    unique: BTreeSet<Vec<String>>,
    foreign_keys: BTreeSet<ForeignKey>,
    /// Non-unique indexes.
    indexes: BTreeSet<Vec<String>>,
    /// How many CHECK constraints (their texts are dialect-specific).
    checks: usize,
}

type Schema = BTreeMap<String, Table>;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The dialect-neutral part of a schema the library read.
fn neutral(s: &persist::Schema) -> Schema {
    assert!(s.views.is_empty(), "{:?}", s.views);
    assert!(s.triggers.is_empty(), "{:?}", s.triggers);
    s.tables
        .iter()
        .map(|(name, t)| {
            let mut unique = t.unique.clone();
            let mut indexes = BTreeSet::new();
            for (index, i) in &t.indexes {
                assert_eq!(i.predicate, None, "partial index {index} on {name}");
                if i.unique {
                    unique.insert(i.columns.clone());
                } else {
                    indexes.insert(i.columns.clone());
                }
            }
            let columns = t
                .columns
                .iter()
                .map(|c| {
                    assert!(
                        matches!(
                            c.class,
                            TypeClass::Integer | TypeClass::Text | TypeClass::Bytes
                        ),
                        "unexpected column type {name}.{}: {}",
                        c.name,
                        c.declared_type
                    );
                    Column {
                        name: c.name.clone(),
                        class: c.class,
                        nullable: c.nullable,
                    }
                })
                .collect();
            let foreign_keys = t
                .foreign_keys
                .iter()
                .map(|f| {
                    assert_eq!(f.on_update, "NO ACTION", "{name}");
                    ForeignKey {
                        columns: f.columns.clone(),
                        references: f.references.clone(),
                        ref_columns: f.ref_columns.clone(),
                        on_delete: f.on_delete.clone(),
                    }
                })
                .collect();
            let table = Table {
                columns,
                primary_key: t.primary_key.clone(),
                unique,
                foreign_keys,
                indexes,
                checks: t.checks.len(),
            };
            (name.clone(), table)
        })
        .collect()
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("catalog connection");
    tokio::spawn(conn);
    client
}

fn sqlite_path(url: &str) -> std::path::PathBuf {
    persist::Config::from_url(url)
        .unwrap()
        .sqlite_path()
        .expect("file database")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_parity_by_catalog_introspection() {
    let lite = common::sqlite().await;
    let pg = common::postgres().await;

    let raw = rusqlite::Connection::open(sqlite_path(&lite.url)).unwrap();
    let lite_schema = neutral(&persist::read_schema(&lite.db).await.unwrap());
    let client = pg_connect(&pg.url).await;
    let pg_schema = neutral(&persist::read_schema(&pg.db).await.unwrap());
    // Cross-check with pg_indexes: every index was accounted for.
    let n_indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let counted: usize = pg_schema
        .values()
        .map(|t| usize::from(!t.primary_key.is_empty()) + t.unique.len() + t.indexes.len())
        .sum();
    assert_eq!(n_indexes, counted as i64, "pg_indexes disagrees");

    // Not vacuous: the canonical tables, columns and keys are there.
    let names: Vec<&str> = lite_schema.keys().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "accounts",
            "army_loadouts",
            "battle_results",
            "progression",
            "schema_migrations",
            "sessions",
            "user_unlocks"
        ]
    );
    let col_names = |t: &str| -> Vec<&str> {
        lite_schema[t]
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    };
    assert_eq!(
        col_names("accounts"),
        [
            "user_id",
            "email",
            "email_key",
            "username",
            "username_key",
            "pass_hash",
            "created_at",
            "last_login_at"
        ]
    );
    assert_eq!(
        col_names("sessions"),
        ["token", "user_id", "expires_at", "created_at"]
    );
    assert_eq!(
        col_names("army_loadouts"),
        [
            "user_id",
            "element_id",
            "army_ability_1",
            "army_ability_2",
            "army_ability_3",
            "army_ability_4",
            "ability_pawn",
            "ability_knight",
            "ability_bishop",
            "ability_rook",
            "ability_queen",
            "ability_king",
            "item_1",
            "item_2",
            "item_3",
            "item_4",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(
        col_names("progression"),
        ["user_id", "level", "xp", "version"]
    );
    assert_eq!(
        col_names("battle_results"),
        [
            "user_id",
            "battle_id",
            "xp_delta",
            "flags",
            "ended_at",
            "level",
            "xp",
            "granted"
        ]
    );
    assert_eq!(
        lite_schema["battle_results"].primary_key,
        ["user_id", "battle_id"]
    );
    assert_eq!(
        lite_schema["battle_results"].indexes,
        BTreeSet::from([strings(&["ended_at"])])
    );
    assert_eq!(
        col_names("user_unlocks"),
        ["user_id", "flag_id", "unlocked_at"]
    );
    assert_eq!(
        col_names("schema_migrations"),
        ["version", "name", "checksum", "applied_at", "execution_ms"]
    );
    let accounts = &lite_schema["accounts"];
    let nullable: Vec<&str> = accounts
        .columns
        .iter()
        .filter(|c| c.nullable)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(nullable, ["last_login_at"]);
    assert_eq!(accounts.primary_key, ["user_id"]);
    assert_eq!(
        accounts.unique,
        BTreeSet::from([strings(&["email_key"]), strings(&["username_key"])])
    );
    let token = &lite_schema["sessions"].columns[0];
    assert_eq!((token.class, token.nullable), (TypeClass::Bytes, false));
    assert_eq!(lite_schema["sessions"].primary_key, ["token"]);
    assert_eq!(
        lite_schema["sessions"].indexes,
        BTreeSet::from([
            strings(&["user_id", "created_at", "token"]),
            strings(&["expires_at"])
        ])
    );
    assert_eq!(
        lite_schema["user_unlocks"].primary_key,
        ["user_id", "flag_id"]
    );
    let cascade = ForeignKey {
        columns: strings(&["user_id"]),
        references: "accounts".into(),
        ref_columns: strings(&["user_id"]),
        on_delete: "CASCADE".into(),
    };
    for child in [
        "sessions",
        "army_loadouts",
        "progression",
        "user_unlocks",
        "battle_results",
    ] {
        assert_eq!(
            lite_schema[child].foreign_keys,
            BTreeSet::from([cascade.clone()]),
            "{child}"
        );
    }

    // Every CHECK constraint, on both (their texts are dialect-specific;
    // the parity below compares the counts).
    let checks: Vec<(&str, usize)> = lite_schema
        .iter()
        .map(|(n, t)| (n.as_str(), t.checks))
        .collect();
    assert_eq!(
        checks,
        [
            ("accounts", 7),
            ("army_loadouts", 17),
            ("battle_results", 6),
            ("progression", 3),
            ("schema_migrations", 0),
            ("sessions", 3),
            ("user_unlocks", 2)
        ]
    );

    // The parity itself.
    assert_eq!(lite_schema, pg_schema);

    // BackendKind specifics: SQLite tables are STRICT; PostgreSQL uses 64-bit
    // integers for ids and times, and an identity for user_id.
    let strict: Vec<(String, i64)> = raw
        .prepare(
            "SELECT name, strict FROM pragma_table_list \
             WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(strict.len(), 7);
    assert!(strict.iter().all(|(_, s)| *s == 1), "{strict:?}");
    let accounts_sql: String = raw
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'accounts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(accounts_sql.contains("AUTOINCREMENT"), "{accounts_sql}");

    let not_bigint: Vec<String> = client
        .query(
            "SELECT table_name || '.' || column_name FROM information_schema.columns \
             WHERE table_schema = 'public' AND data_type <> 'bigint' \
               AND (column_name IN ('user_id', 'xp', 'version', 'execution_ms') \
                    OR column_name LIKE '%\\_at')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(not_bigint.is_empty(), "not BIGINT: {not_bigint:?}");
    let identity: String = client
        .query_one(
            "SELECT is_identity::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'accounts' AND column_name = 'user_id'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(identity, "YES");

    // Both dialects stand at the same schema version with the same history,
    // 0003 (the key recompute, no schema change) included.
    const HISTORY: &str = "SELECT version, name FROM schema_migrations ORDER BY version";
    let lite_history: Vec<(i64, String)> = raw
        .prepare(HISTORY)
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let pg_history: Vec<(i64, String)> = client
        .query(HISTORY, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(lite_history, pg_history);
    assert!(
        lite_history
            .iter()
            .any(|(v, n)| *v == 3 && n == "fold_default_ignorables"),
        "{lite_history:?}"
    );

    drop(raw);
    lite.close().await;
    pg.close().await;
}

// ---------------------------------------------------------------------------
// Behaviour of the schema through the API.

fn account<'a>(email: &'a str, username: &'a str) -> NewAccount<'a> {
    NewAccount {
        email,
        username,
        pass_hash: b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        created_at: 1_700_000_000,
    }
}

async fn user_id_is_never_reused(t: &TestDb) {
    let db = &t.db;
    let a = db
        .accounts()
        .create(&account("a@example.com", "a"))
        .await
        .unwrap();
    let b = db
        .accounts()
        .create(&account("b@example.com", "b"))
        .await
        .unwrap();
    assert!(b.user_id > a.user_id);
    // Delete the newest account: its id must not come back.
    db.accounts().delete(b.user_id).await.unwrap();
    let c = db
        .accounts()
        .create(&account("c@example.com", "c"))
        .await
        .unwrap();
    assert!(
        c.user_id > b.user_id,
        "{:?} reused after {:?}",
        c.user_id,
        b.user_id
    );
    // Not even when every account is gone, nor through a new handle.
    db.accounts().delete(a.user_id).await.unwrap();
    db.accounts().delete(c.user_id).await.unwrap();
    let db2 = common::open_migrated(&t.url).await;
    let d = db2
        .accounts()
        .create(&account("d@example.com", "d"))
        .await
        .unwrap();
    assert!(
        d.user_id > c.user_id,
        "{:?} reused after {:?}",
        d.user_id,
        c.user_id
    );
    assert!(matches!(
        db2.accounts().get(b.user_id).await,
        Err(Error::NotFound(persist::Entity::Account))
    ));
    db2.close().await;
}

/// The stored (display, key) pairs of an account, read with a plain connection.
async fn stored_names(t: &TestDb, kind: Backend, id: UserId) -> (String, String, String, String) {
    const SQL: &str =
        "SELECT email, email_key, username, username_key FROM accounts WHERE user_id = ";
    match kind {
        Backend::Sqlite => {
            let c = rusqlite::Connection::open(sqlite_path(&t.url)).unwrap();
            c.query_row(&format!("{SQL}{}", id.0), [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap()
        }
        Backend::Postgres => {
            let c = pg_connect(&t.url).await;
            let r = c.query_one(&format!("{SQL}{}", id.0), &[]).await.unwrap();
            (r.get(0), r.get(1), r.get(2), r.get(3))
        }
    }
}

async fn uniqueness_is_case_and_unicode_insensitive(t: &TestDb) {
    let kind = t.backend();
    let db = &t.db;
    let bob = db
        .accounts()
        .create(&account("bob1@example.com", "Bob"))
        .await
        .unwrap();
    let err = db
        .accounts()
        .create(&account("bob2@example.com", "bob"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict(UniqueKey::Username)),
        "{err:?}"
    );

    let foo_x = db
        .accounts()
        .create(&account("Foo@X.com", "foo1"))
        .await
        .unwrap();
    let err = db
        .accounts()
        .create(&account("foo@x.com", "foo2"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(UniqueKey::Email)), "{err:?}");

    // NFC and NFD forms of "José".
    let nfc = "Jos\u{e9}";
    let nfd = "Jose\u{301}";
    assert_ne!(nfc, nfd);
    let jose = db
        .accounts()
        .create(&account("jose1@example.com", nfc))
        .await
        .unwrap();
    let err = db
        .accounts()
        .create(&account("jose2@example.com", nfd))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict(UniqueKey::Username)),
        "{err:?}"
    );
    let err = db
        .accounts()
        .create(&account("JOSE1@EXAMPLE.COM", "jose-other"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(UniqueKey::Email)), "{err:?}");

    // Display forms are stored and returned as given.
    let got = db.accounts().get(bob.user_id).await.unwrap();
    assert_eq!(
        (got.username.as_str(), got.email.as_str()),
        ("Bob", "bob1@example.com")
    );
    let got = db.accounts().get(foo_x.user_id).await.unwrap();
    assert_eq!(got.email, "Foo@X.com");
    let got = db.accounts().get(jose.user_id).await.unwrap();
    assert_eq!(got.username, nfc);
    // Lookups fold the same way.
    assert_eq!(
        db.accounts().find_by_username("BOB").await.unwrap().user_id,
        bob.user_id
    );
    assert_eq!(
        db.accounts().find_by_username(nfd).await.unwrap().user_id,
        jose.user_id
    );
    assert_eq!(
        db.accounts()
            .find_by_email("fOO@x.COM")
            .await
            .unwrap()
            .user_id,
        foo_x.user_id
    );
    // In the database: display form as given, key as computed by the crate.
    assert_eq!(
        stored_names(t, kind, bob.user_id).await,
        (
            "bob1@example.com".to_string(),
            canonical_key("bob1@example.com"),
            "Bob".to_string(),
            canonical_key("Bob")
        )
    );
    let (_, _, username, username_key) = stored_names(t, kind, jose.user_id).await;
    assert_eq!(username, nfc);
    assert_eq!(username_key, canonical_key(nfd));
    // The failed creates left nothing behind.
    assert!(matches!(
        db.accounts().find_by_email("bob2@example.com").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        db.accounts().find_by_username("foo2").await,
        Err(Error::NotFound(_))
    ));
}

async fn sessions_store_the_token_digest_never_the_token(t: &TestDb) {
    let kind = t.backend();
    let db = &t.db;
    let user = db
        .accounts()
        .create(&account("s@example.com", "s"))
        .await
        .unwrap();
    let token = "tok_Qm9yZWRBdExpdmVTZXNzaW9uVG9rZW4xMjM0NTY3";
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let session = db
        .sessions()
        .create(token, user.user_id, 1_700_000_000, 1_700_086_400)
        .await
        .unwrap();
    assert_eq!(session.id.as_bytes(), &digest[..16]);

    match kind {
        Backend::Sqlite => {
            let path = sqlite_path(&t.url);
            {
                let c = rusqlite::Connection::open(&path).unwrap();
                let stored: Vec<Vec<u8>> = c
                    .prepare("SELECT token FROM sessions")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                assert_eq!(stored, vec![digest.to_vec()]);
                let typ: String = c
                    .query_row("SELECT typeof(token) FROM sessions", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(typ, "blob");
            }
            // What a copy of the files (a backup, a leaked dump) holds: the
            // digest, never the token.
            let mut bytes = std::fs::read(&path).unwrap();
            let wal = path.with_extension("db-wal");
            if wal.exists() {
                bytes.extend(std::fs::read(&wal).unwrap());
            }
            let contains =
                |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
            assert!(contains(&bytes, &digest), "the digest is stored");
            assert!(!contains(&bytes, token.as_bytes()), "the token is stored");
        }
        Backend::Postgres => {
            let c = pg_connect(&t.url).await;
            let rows = c
                .query(
                    "SELECT token, s::text, position($1::bytea IN token) FROM sessions s",
                    &[&token.as_bytes()],
                )
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
            let stored: Vec<u8> = rows[0].get(0);
            assert_eq!(stored, digest.to_vec());
            let row_text: String = rows[0].get(1);
            assert!(!row_text.contains(token), "{row_text}");
            assert!(!row_text.contains(&hex::encode(token)), "{row_text}");
            assert!(row_text.contains(&hex::encode(digest)), "{row_text}");
            assert_eq!(rows[0].get::<_, i32>(2), 0);
        }
    }
    // And the token still finds its session.
    assert_eq!(db.sessions().find_by_token(token).await.unwrap(), session);
}

/// How a raw statement ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    CheckViolation,
    Other(String),
}

async fn raw_exec(t: &TestDb, kind: Backend, sql: &str) -> Outcome {
    match kind {
        Backend::Sqlite => {
            let c = rusqlite::Connection::open(sqlite_path(&t.url)).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            match c.execute_batch(sql) {
                Ok(()) => Outcome::Ok,
                Err(e) => match e.sqlite_error() {
                    Some(f) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => {
                        Outcome::CheckViolation
                    }
                    _ => Outcome::Other(e.to_string()),
                },
            }
        }
        Backend::Postgres => {
            let c = pg_connect(&t.url).await;
            match c.batch_execute(sql).await {
                Ok(()) => Outcome::Ok,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) => {
                    Outcome::CheckViolation
                }
                Err(e) => Outcome::Other(format!("{e:?}")),
            }
        }
    }
}

async fn check_constraints_reject_bad_rows(t: &TestDb) {
    let kind = t.backend();
    let user =
        t.db.accounts()
            .create(&account("c@example.com", "c"))
            .await
            .unwrap()
            .user_id
            .0;
    // A blob literal of `n` bytes, each `byte` (two hex digits).
    let blob_of = |n: usize, byte: &str| match kind {
        Backend::Sqlite => format!("X'{}'", byte.repeat(n)),
        Backend::Postgres => format!("'\\x{}'::bytea", byte.repeat(n)),
    };
    let blob = |n: usize| blob_of(n, "ab");
    let account_row = |email: &str, username: &str, hash: usize, created: i64, login: i64| {
        format!(
            "INSERT INTO accounts (email, email_key, username, username_key, pass_hash, \
             created_at, last_login_at) VALUES ('{email}', '{email}', '{username}', \
             '{username}', {}, {created}, {login})",
            blob(hash)
        )
    };
    // (bad statement, the same statement with good values)
    let cases: Vec<(String, String)> = vec![
        (
            format!("INSERT INTO progression (user_id, level, xp) VALUES ({user}, -1, 0)"),
            format!("INSERT INTO progression (user_id, level, xp) VALUES ({user}, 0, 0)"),
        ),
        (
            format!("UPDATE progression SET xp = -1 WHERE user_id = {user}"),
            format!("UPDATE progression SET xp = 1 WHERE user_id = {user}"),
        ),
        (
            format!(
                "INSERT INTO army_loadouts (user_id, item_1, updated_at) VALUES ({user}, -1, 0)"
            ),
            format!(
                "INSERT INTO army_loadouts (user_id, item_1, updated_at) VALUES ({user}, 0, 0)"
            ),
        ),
        (
            format!("UPDATE army_loadouts SET element_id = -1 WHERE user_id = {user}"),
            format!("UPDATE army_loadouts SET element_id = 4 WHERE user_id = {user}"),
        ),
        (
            format!("UPDATE army_loadouts SET ability_king = -1 WHERE user_id = {user}"),
            format!("UPDATE army_loadouts SET ability_king = 8 WHERE user_id = {user}"),
        ),
        (
            format!(
                "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) VALUES ({user}, -1, 0)"
            ),
            format!(
                "INSERT INTO user_unlocks (user_id, flag_id, unlocked_at) VALUES ({user}, 0, 0)"
            ),
        ),
        (
            format!(
                "INSERT INTO sessions (token, user_id, expires_at, created_at) \
                 VALUES ({}, {user}, 10, 0)",
                blob(31)
            ),
            format!(
                "INSERT INTO sessions (token, user_id, expires_at, created_at) \
                 VALUES ({}, {user}, 10, 0)",
                blob(32)
            ),
        ),
        (
            format!(
                "INSERT INTO sessions (token, user_id, expires_at, created_at) \
                 VALUES ({}, {user}, 5, 10)",
                blob_of(32, "cd")
            ),
            String::new(),
        ),
        (
            account_row("x@example.com", &"u".repeat(33), 10, 0, 0),
            account_row("x@example.com", &"u".repeat(32), 10, 0, 0),
        ),
        (account_row("y@example.com", "", 10, 0, 0), String::new()),
        (
            // 255 characters, then 254.
            account_row(&format!("{}@x", "e".repeat(253)), "y", 10, 0, 0),
            account_row(&format!("{}@x", "e".repeat(252)), "y", 10, 0, 0),
        ),
        (
            account_row("z@example.com", "z", 513, 0, 0),
            account_row("z@example.com", "z", 512, 0, 0),
        ),
        (account_row("w@example.com", "w", 10, -1, 0), String::new()),
        (account_row("v@example.com", "v", 10, 0, -1), String::new()),
    ];
    for (bad, good) in &cases {
        assert_eq!(
            raw_exec(t, kind, bad).await,
            Outcome::CheckViolation,
            "{bad}"
        );
        if !good.is_empty() {
            assert_eq!(raw_exec(t, kind, good).await, Outcome::Ok, "{good}");
        }
    }
}

async fn deleting_an_account_cascades_to_every_child_table(t: &TestDb) {
    let kind = t.backend();
    let db = &t.db;
    let keep = db
        .accounts()
        .create(&account("keep@example.com", "keep"))
        .await
        .unwrap();
    let gone = db
        .accounts()
        .create(&account("gone@example.com", "gone"))
        .await
        .unwrap();
    for u in [keep.user_id, gone.user_id] {
        db.sessions()
            .create(&format!("bearer-token-of-user-{}", u.0), u, 1, 2)
            .await
            .unwrap();
        db.loadouts()
            .save(&persist::Loadout::empty(u, 1))
            .await
            .unwrap();
        db.progression()
            .set(&persist::Progression {
                user_id: u,
                level: 1,
                xp: 10,
            })
            .await
            .unwrap();
        db.unlocks().grant(u, 7, 1).await.unwrap();
        db.battles()
            .apply(&persist::BattleEnd {
                user_id: u,
                battle_id: "match-1",
                xp: 5,
                flags: &[],
                at: 1,
            })
            .await
            .unwrap();
    }
    // Foreign keys are enforced.
    let err = db
        .sessions()
        .create(
            "orphan-bearer-token-0001",
            UserId(gone.user_id.0 + 1000),
            1,
            2,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownUser), "{err:?}");

    db.accounts().delete(gone.user_id).await.unwrap();

    let count = |table: &'static str, user: UserId| {
        let sql = format!("SELECT count(*) FROM {table} WHERE user_id = {}", user.0);
        async move {
            match kind {
                Backend::Sqlite => rusqlite::Connection::open(sqlite_path(&t.url))
                    .unwrap()
                    .query_row(&sql, [], |r| r.get::<_, i64>(0))
                    .unwrap(),
                Backend::Postgres => pg_connect(&t.url)
                    .await
                    .query_one(&sql, &[])
                    .await
                    .unwrap()
                    .get::<_, i64>(0),
            }
        }
    };
    for table in [
        "accounts",
        "sessions",
        "army_loadouts",
        "progression",
        "user_unlocks",
        "battle_results",
    ] {
        assert_eq!(
            count(table, gone.user_id).await,
            0,
            "{table} keeps rows of a deleted user"
        );
        assert_eq!(
            count(table, keep.user_id).await,
            1,
            "{table} lost rows of another user"
        );
    }
    assert!(matches!(
        db.sessions()
            .find_by_token(&format!("bearer-token-of-user-{}", gone.user_id.0))
            .await,
        Err(Error::NotFound(persist::Entity::Session))
    ));
}
