//! `persist copy`, run as a user would: the real binary between real SQLite
//! files and real PostgreSQL databases. SQLite -> PostgreSQL -> SQLite
//! round-trips to identical content (library checksum and per-user reads
//! through the public API), new accounts get fresh ids on both, a non-empty
//! target is refused unless `--force`, and the printed counts are right.

mod common;

use common::{assert_exit, stderr, stdout};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use common::PgDatabase;
use persist::{
    Account, Config, ContentChecksum, Db, Loadout, NewAccount, PieceAbilities, Progression,
    Session, Unlock, UserId,
};

/// The copied tables, in the order `copy` and `content_checksum` use.
const COPY_TABLES: [&str; 6] = [
    "accounts",
    "sessions",
    "army_loadouts",
    "progression",
    "user_unlocks",
    "battle_results",
];

const BIN: &str = env!("CARGO_BIN_EXE_persist");

fn persist(args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run persist")
}

fn copy(from: &str, to: &str, extra: &[&str]) -> Output {
    let mut args = vec!["copy", "--from", from, "--to", to];
    args.extend_from_slice(extra);
    persist(&args)
}

/// Stderr is exactly one `error:` line; returns it.
fn one_error_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    assert!(!err.contains("panicked"), "{err:?}");
    lines[0].to_string()
}

/// The per-table lines a successful copy prints: table -> (source rows,
/// target rows, source sha256, target sha256), plus the `total` line.
fn printed_table(o: &Output) -> BTreeMap<String, (u64, u64, String, String)> {
    let out = stdout(o);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TABLE",
            "SOURCE_ROWS",
            "TARGET_ROWS",
            "SOURCE_SHA256",
            "TARGET_SHA256"
        ]
    );
    let mut map = BTreeMap::new();
    let mut order = Vec::new();
    for line in lines.by_ref().take(COPY_TABLES.len() + 1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 5, "{line:?}");
        order.push(f[0].to_string());
        map.insert(
            f[0].to_string(),
            (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].to_string(),
                f[4].to_string(),
            ),
        );
    }
    let mut want: Vec<String> = COPY_TABLES.iter().map(|s| s.to_string()).collect();
    want.push("total".into());
    assert_eq!(order, want, "{out}");
    let last: Vec<&str> = lines.collect();
    assert_eq!(last.len(), 1, "{out}");
    assert!(last[0].starts_with("ok: copied "), "{out}");
    map
}

/// The printed counts and checksums agree on both sides and with `expected`.
fn assert_printed(o: &Output, expected: &ContentChecksum) {
    let printed = printed_table(o);
    for t in &expected.tables {
        let (src, dst, src_sha, dst_sha) = &printed[t.table];
        assert_eq!((*src, *dst), (t.rows, t.rows), "{}", t.table);
        assert_eq!((src_sha, dst_sha), (&t.sha256, &t.sha256), "{}", t.table);
    }
    let (src, dst, src_sha, dst_sha) = &printed["total"];
    assert_eq!((*src, *dst), (expected.rows(), expected.rows()));
    assert_eq!((src_sha, dst_sha), (&expected.sha256, &expected.sha256));
}

async fn open(url: &str) -> Db {
    persist::open(&Config::from_url(url).unwrap())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

async fn checksum(url: &str) -> ContentChecksum {
    let db = open(url).await;
    let sum = persist::content_checksum(&db).await.unwrap();
    db.close().await;
    sum
}

fn rows_of(sum: &ContentChecksum) -> Vec<(&'static str, u64)> {
    sum.tables.iter().map(|t| (t.table, t.rows)).collect()
}

// ---------------------------------------------------------------------------
// Test data, written through the public API.

/// Everything a user has, read through the public API.
#[derive(Debug, PartialEq)]
struct UserView {
    account: Account,
    sessions: Vec<Session>,
    loadout: Option<Loadout>,
    progression: Option<Progression>,
    unlocks: Vec<Unlock>,
}

async fn view(db: &Db, id: UserId) -> UserView {
    let account = db.accounts().get(id).await.unwrap();
    let mut sessions = db.sessions().list_for_user(id).await.unwrap();
    sessions.sort_by_key(|s| s.id);
    let loadout = match db.loadouts().get(id).await {
        Ok(l) => Some(l),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("{e}"),
    };
    let progression = match db.progression().get(id).await {
        Ok(p) => Some(p),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("{e}"),
    };
    UserView {
        account,
        sessions,
        loadout,
        progression,
        unlocks: db.unlocks().list(id).await.unwrap(),
    }
}

/// What [`fill`] wrote.
struct Filled {
    /// The accounts that remain, with their views and session tokens.
    users: Vec<(UserId, UserView, Vec<String>)>,
    /// Deleted accounts (one in the middle, the newest).
    deleted: Vec<UserId>,
    /// The highest id the database ever issued (a deleted one).
    highest_issued: UserId,
    /// Expected rows per table, in copy order.
    rows: Vec<(&'static str, u64)>,
}

const NAMES: [(&str, &str); 9] = [
    ("ada@example.com", "Ada"),
    ("zoë@example.org", "Zoë"),
    ("tokyo@example.jp", "東京ユーザー"),
    ("gone@example.com", "gone-in-the-middle"),
    ("dragon@example.com", "🐉 Drache"),
    ("Mixed.Case@Example.COM", "ŠtefanŽ"),
    ("quote@example.com", "O'Brien \"q\" \\ %_"),
    ("jose@example.com", "Jose\u{301}"),
    ("newest@example.com", "newest-then-gone"),
];

/// Varied data for [`NAMES`]; accounts 3 and 8 are deleted afterwards.
async fn fill(db: &Db) -> Filled {
    let mut ids = Vec::new();
    // (sessions, loadout, progression, unlocks) per account.
    let mut per_user: Vec<(u64, u64, u64, u64)> = Vec::new();
    let mut tokens: Vec<Vec<String>> = Vec::new();
    for (i, (email, username)) in NAMES.iter().enumerate() {
        let n = i as i64;
        // Hashes cover every byte value, NUL and 0xFF included; one is the
        // maximum 512 bytes.
        let hash: Vec<u8> = match i {
            0 => vec![0, 255, 1, 254, 0],
            1 => (0..=255u8).chain(0..=255u8).collect(),
            _ => format!("$argon2id$v=19$m=19456,t=2,p=1${i}").into_bytes(),
        };
        let account = db
            .accounts()
            .create(&NewAccount {
                email,
                username,
                pass_hash: &hash,
                created_at: 1_700_000_000 + n * 1_000,
            })
            .await
            .unwrap();
        let id = account.user_id;
        if i % 2 == 0 {
            db.accounts()
                .update_last_login(id, 1_700_100_000 + n)
                .await
                .unwrap();
        }
        let mut my_tokens = Vec::new();
        for j in 0..(i % 4) {
            let token = format!("tok_{i}_{j}_Qm9yZWRBdExpdmVTZXNzaW9uVG9rZW4xMjM0NTY3");
            let created = 1_700_000_000 + n;
            db.sessions()
                .create(&token, id, created, created + 3_600 * (j as i64))
                .await
                .unwrap();
            my_tokens.push(token);
        }
        let has_loadout = i % 3 != 1;
        if has_loadout {
            db.loadouts()
                .save(&Loadout {
                    user_id: id,
                    element_id: (i % 5) as i32,
                    army_abilities: [1, 0, 8, i as i32],
                    piece_abilities: PieceAbilities::from_array([1, 2, 3, 4, 5, i32::MAX]),
                    items: [7, 0, 0, 1 + i as i32],
                    updated_at: 1_700_200_000 + n,
                })
                .await
                .unwrap();
        }
        let has_progression = i != 5;
        if has_progression {
            db.progression()
                .set(&Progression {
                    user_id: id,
                    level: i as i32 * 7,
                    xp: match i {
                        2 => i64::MAX,
                        4 => 0,
                        _ => 1_000_003 * n,
                    },
                })
                .await
                .unwrap();
            if i == 6 {
                db.progression()
                    .add_xp(id, 4_000_000_000_000)
                    .await
                    .unwrap();
            }
        }
        let flags: Vec<i32> = match i % 3 {
            0 => vec![0, 1, 7, i32::MAX, 42 + i as i32],
            1 => vec![3],
            _ => Vec::new(),
        };
        let granted = db
            .unlocks()
            .grant_many(id, &flags, 1_700_300_000 + n)
            .await
            .unwrap();
        assert_eq!(granted.len(), flags.len());
        if has_progression {
            // A battle record per player with progression (text key, with a
            // non-ASCII battle id, and a flag list).
            db.battles()
                .apply(&persist::BattleEnd {
                    user_id: id,
                    battle_id: &format!("match-{i}-\u{e9}t\u{e9}"),
                    // 0: one player holds the largest xp already.
                    xp: 0,
                    flags: &flags,
                    at: 1_700_300_000 + n,
                })
                .await
                .unwrap();
        }
        ids.push(id);
        per_user.push((
            (i % 4) as u64,
            u64::from(has_loadout),
            u64::from(has_progression),
            flags.len() as u64,
        ));
        tokens.push(my_tokens);
    }
    let highest_issued = *ids.last().unwrap();
    let deleted = vec![ids[3], ids[8]];
    for id in &deleted {
        db.accounts().delete(*id).await.unwrap();
    }
    let mut users = Vec::new();
    let mut rows = [0u64; 6];
    for (i, id) in ids.iter().enumerate() {
        if deleted.contains(id) {
            continue;
        }
        let (s, l, p, u) = per_user[i];
        for (k, n) in [1, s, l, p, u, p].into_iter().enumerate() {
            rows[k] += n;
        }
        users.push((*id, view(db, *id).await, tokens[i].clone()));
    }
    Filled {
        users,
        deleted,
        highest_issued,
        rows: COPY_TABLES.iter().copied().zip(rows).collect(),
    }
}

/// A migrated SQLite file filled with [`fill`]; returns its URL, its
/// directory guard, what was written and its checksum.
async fn filled_sqlite() -> (String, tempfile::TempDir, Filled, ContentChecksum) {
    let t = common::sqlite().await;
    let filled = fill(&t.db).await;
    let sum = persist::content_checksum(&t.db).await.unwrap();
    assert_eq!(rows_of(&sum), filled.rows);
    t.db.close().await;
    let common::Place::Sqlite(dir) = t.place else {
        unreachable!("a SQLite test database")
    };
    (t.url, dir, filled, sum)
}

/// Every user reads back identically through the public API, every token
/// still finds its session, deleted users stay deleted.
async fn assert_same_users(url: &str, filled: &Filled) {
    let db = open(url).await;
    for (id, want, tokens) in &filled.users {
        assert_eq!(&view(&db, *id).await, want, "user {id} in {url}");
        for token in tokens {
            let s = db.sessions().find_by_token(token).await.unwrap();
            assert_eq!(s.user_id, *id);
        }
    }
    for id in &filled.deleted {
        assert!(db.accounts().get(*id).await.unwrap_err().is_not_found());
    }
    db.close().await;
}

/// Creates an account and returns its id.
async fn new_account(url: &str, email: &str) -> UserId {
    let db = open(url).await;
    let a = db
        .accounts()
        .create(&NewAccount {
            email,
            username: email,
            pass_hash: b"h",
            created_at: 1_800_000_000,
        })
        .await
        .unwrap();
    db.close().await;
    a.user_id
}

fn sqlite_file(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(name).display())
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_to_sqlite_round_trips_to_identical_content() {
    let (src, dir, filled, original) = filled_sqlite().await;
    assert_eq!(
        filled.rows,
        [
            ("accounts", 7),
            ("sessions", 9),
            ("army_loadouts", 4),
            ("progression", 6),
            ("user_unlocks", 13),
            ("battle_results", 6)
        ]
    );
    let pg = PgDatabase::create().await;

    // SQLite -> PostgreSQL (fresh, unmigrated), in batches of 2.
    let o = copy(&src, &pg.url, &["--batch-size", "2"]);
    assert_exit(&o, 0, "copy sqlite -> postgres");
    assert_printed(&o, &original);
    let err = stderr(&o);
    let shipped = persist::Migrations::embedded(persist::BackendKind::Postgres).unwrap();
    let names: Vec<String> = shipped
        .iter()
        .map(|m| format!("{:04}_{}", m.version(), m.name()))
        .collect();
    assert!(
        err.contains(&format!(
            "copy: migrated the target to version {} ({})\n",
            shipped.latest_version(),
            names.join(", ")
        )),
        "{err}"
    );
    for (table, n) in &filled.rows {
        assert!(
            err.contains(&format!("copy: {table}: {n} row(s)\n")),
            "{err}"
        );
        assert!(err.contains(&format!("copy: {table}: {n}/{n}\n")), "{err}");
    }
    // Batches of 2: accounts (7 rows) took 4 batches.
    for k in [2, 4, 6, 7] {
        assert!(err.contains(&format!("copy: accounts: {k}/7\n")), "{err}");
    }
    assert!(err.contains(&format!(
        "copy: user id counter set to {}; new accounts get larger ids\n",
        filled.highest_issued
    )));
    assert!(
        stdout(&o).contains(&format!(
            "new accounts get ids above {}",
            filled.highest_issued
        )),
        "{}",
        stdout(&o)
    );
    assert_eq!(checksum(&pg.url).await, original);
    assert_same_users(&pg.url, &filled).await;

    // PostgreSQL -> SQLite (a file that does not exist yet).
    let back = sqlite_file(dir.path(), "back.db");
    let o = copy(&pg.url, &back, &[]);
    assert_exit(&o, 0, "copy postgres -> sqlite");
    assert_printed(&o, &original);
    assert_eq!(checksum(&back).await, original);
    assert_same_users(&back, &filled).await;

    // New accounts get fresh ids: above every copied id and above the
    // newest id the original issued (that account was deleted), on both.
    let max_copied = filled.users.iter().map(|(id, ..)| *id).max().unwrap();
    assert!(filled.highest_issued > max_copied);
    let pg_new = new_account(&pg.url, "after-copy@example.com").await;
    assert_eq!(pg_new.0, filled.highest_issued.0 + 1);
    let lite_new = new_account(&back, "after-copy@example.com").await;
    assert_eq!(lite_new.0, filled.highest_issued.0 + 1);

    // A target holding data is refused without --force and left unchanged.
    let before = checksum(&pg.url).await;
    assert_eq!(before.tables[0].rows, 8);
    let o = copy(&src, &pg.url, &[]);
    assert_exit(&o, 1, "copy into a non-empty target");
    assert_eq!(
        one_error_line(&o),
        "error: copy refused: the target already holds data (in accounts, sessions, \
         army_loadouts, progression, user_unlocks, battle_results); copy with force (--force) to \
         delete it first"
    );
    assert!(stdout(&o).is_empty());
    assert_eq!(checksum(&pg.url).await, before);

    // With --force it is emptied and copied; the target's own counter is
    // kept, so the id it issued after the first copy is not issued again.
    let o = copy(&src, &pg.url, &["--force"]);
    assert_exit(&o, 0, "copy --force");
    assert!(
        stderr(&o).contains(
            "copy: --force: deleted the target's rows (accounts, sessions, army_loadouts, \
             progression, user_unlocks, battle_results)\n"
        ),
        "{}",
        stderr(&o)
    );
    assert_printed(&o, &original);
    assert_eq!(checksum(&pg.url).await, original);
    assert_same_users(&pg.url, &filled).await;
    let pg_newer = new_account(&pg.url, "after-force@example.com").await;
    assert_eq!(pg_newer.0, pg_new.0 + 1);

    // Same on a SQLite target.
    let o = copy(&pg.url, &back, &[]);
    assert_exit(&o, 1, "copy into a non-empty SQLite target");
    let o = copy(&src, &back, &["--force", "--batch-size", "3"]);
    assert_exit(&o, 0, "copy --force into SQLite");
    assert_printed(&o, &original);
    assert_eq!(checksum(&back).await, original);
    let lite_newer = new_account(&back, "after-force@example.com").await;
    assert_eq!(lite_newer.0, lite_new.0 + 1);

    // The source was never written to.
    assert_eq!(checksum(&src).await, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_dialect_copies_are_identical() {
    let (src, dir, filled, original) = filled_sqlite().await;
    let lite = sqlite_file(dir.path(), "copy.db");
    let o = copy(&src, &lite, &["--batch-size", "1"]);
    assert_exit(&o, 0, "copy sqlite -> sqlite");
    assert_printed(&o, &original);
    assert_same_users(&lite, &filled).await;
    assert_eq!(
        new_account(&lite, "n@example.com").await.0,
        filled.highest_issued.0 + 1
    );

    let pg1 = PgDatabase::create().await;
    let pg2 = PgDatabase::create().await;
    assert_exit(&copy(&src, &pg1.url, &[]), 0, "copy sqlite -> postgres");
    // The second PostgreSQL target is migrated beforehand: no migration then.
    common::open_migrated(&pg2.url).await.close().await;
    let o = copy(&pg1.url, &pg2.url, &["--batch-size", "4"]);
    assert_exit(&o, 0, "copy postgres -> postgres");
    assert!(
        !stderr(&o).contains("migrated the target"),
        "{}",
        stderr(&o)
    );
    assert_printed(&o, &original);
    assert_same_users(&pg2.url, &filled).await;
    assert_eq!(
        new_account(&pg2.url, "n@example.com").await.0,
        filled.highest_issued.0 + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_source_copies_nothing_and_ids_start_at_one() {
    let t = common::sqlite().await;
    t.db.close().await;
    let pg = PgDatabase::create().await;
    let o = copy(&t.url, &pg.url, &[]);
    assert_exit(&o, 0, "copy an empty database");
    let printed = printed_table(&o);
    assert!(printed.values().all(|(s, d, ..)| (*s, *d) == (0, 0)));
    assert_eq!(new_account(&pg.url, "first@example.com").await, UserId(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_usage_errors_change_nothing() {
    let (src, dir, _filled, original) = filled_sqlite().await;

    // The same database, also spelled differently.
    let o = copy(&src, &src, &["--force"]);
    assert_exit(&o, 1, "copy onto itself");
    assert_eq!(
        one_error_line(&o),
        "error: copy refused: source and target are the same database"
    );
    assert!(src.ends_with("/test.db"), "{src}");
    let other_spelling = format!("sqlite:{}/./test.db", dir.path().display());
    assert_exit(
        &copy(&src, &other_spelling, &["--force"]),
        1,
        "copy onto itself, other spelling",
    );
    assert_eq!(checksum(&src).await, original);

    // PostgreSQL onto itself.
    let pg = PgDatabase::create().await;
    assert_exit(&copy(&src, &pg.url, &[]), 0, "copy sqlite -> postgres");
    let o = copy(&pg.url, &pg.url, &["--force"]);
    assert_exit(&o, 1, "postgres onto itself");
    assert_eq!(checksum(&pg.url).await, original);

    // A source that is not migrated.
    let bare = sqlite_file(dir.path(), "bare.db");
    common::create_private_file(Path::new(bare.strip_prefix("sqlite://").unwrap()));
    let target = sqlite_file(dir.path(), "target.db");
    let o = copy(&bare, &target, &[]);
    assert_exit(&o, 1, "copy from an unmigrated source");
    let pending: Vec<String> = persist::Migrations::embedded(persist::BackendKind::Sqlite)
        .unwrap()
        .iter()
        .map(|m| format!("{:04}_{} pending", m.version(), m.name()))
        .collect();
    assert_eq!(
        one_error_line(&o),
        format!(
            "error: copy refused: the source is not at this binary's schema version \
             ({}); migrate it first",
            pending.join(", ")
        )
    );

    // A source file that does not exist is not created.
    let missing = dir.path().join("missing.db");
    let o = copy(&format!("sqlite://{}", missing.display()), &target, &[]);
    assert_exit(&o, 1, "copy from a missing file");
    assert!(one_error_line(&o).contains("does not exist"));
    assert!(!missing.exists());

    // Usage errors: clap's exit code 2.
    for bad in ["0", "100001", "-1", "x"] {
        let o = copy(&src, &target, &["--batch-size", bad]);
        assert_exit(&o, 2, &format!("--batch-size {bad}"));
    }
    assert_exit(&persist(&["copy", "--from", &src]), 2, "no --to");
    assert_eq!(checksum(&src).await, original);
}
