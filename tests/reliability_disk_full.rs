//! Promise 2 (issue 5): disk full is an error, not corruption (SQLite).
//!
//! The database is capped with `Config::with_sqlite_max_size` (applied as
//! `PRAGMA max_page_count`), then written until a write fails. Checked, for
//! several caps and row sizes:
//! - the failing write is `Error::StorageFull` (typed; no panic, no generic
//!   error), and so is a retry and a one-statement `grant_many` at the cap,
//!   which leaves nothing of itself behind;
//! - earlier data is intact: `PRAGMA integrity_check` is `ok` and every
//!   earlier row reads back, through the same handle, which keeps serving
//!   reads (and `ping`);
//! - a unit of work that hits the cap rolls back entirely: the failing call
//!   is `StorageFull`, later calls and `commit()` are `Error::Aborted`, and
//!   none of its rows is visible;
//! - writes succeed again once space is freed: after deletes (free pages are
//!   reused under the same cap) and after reopening with a larger cap.
//!
//! Short setting (CI): 3 rounds; `PERSIST_RELIABILITY_LONG=1`: 30.

mod common;
#[path = "reliability_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use persist::{Config, Db, Error, NewAccount, UserId};
use support::{integrity_check, scale, Bound, Rng};

const T0: i64 = 1_700_000_000;
const PAGE: u64 = 4096;
/// Safety bound on any fill loop (a cap that never bites is a failure).
const FILL_MAX: usize = 200_000;

#[derive(Default)]
struct Figures {
    rounds: usize,
    rows_before_full: usize,
    storage_full_errors: usize,
    statement_rollbacks: usize,
    tx_rolled_back: usize,
    tx_rows_rolled_back: usize,
    rows_read_back: usize,
    writes_after_free: usize,
    writes_after_raise: usize,
}

/// An account this test created: its id, username and hash.
type Rows = BTreeMap<i64, (String, Vec<u8>)>;

fn hash(len: usize, salt: u64) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i as u64 + salt) % 26) as u8)
        .collect()
}

async fn create(db: &Db, name: &str, h: &[u8]) -> persist::Result<i64> {
    let email = format!("{name}@full.invalid");
    Ok(db
        .accounts()
        .create(&NewAccount {
            email: &email,
            username: name,
            pass_hash: h,
            created_at: T0,
        })
        .await?
        .user_id
        .0)
}

fn is_storage_full(r: &persist::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(Error::StorageFull { .. }))
}

/// Every row in `rows` reads back unchanged through `db`; returns how many.
async fn read_back(db: &Db, rows: &Rows, violations: &mut Vec<String>) -> usize {
    for (id, (name, h)) in rows {
        match db.accounts().get(UserId(*id)).await {
            Ok(a) if a.username == *name && a.pass_hash == *h => {}
            Ok(a) => violations.push(format!("account {id} changed: {a:?}")),
            Err(e) => violations.push(format!("account {id} unreadable: {e:?}")),
        }
    }
    rows.len()
}

#[derive(Debug, Clone, Copy)]
enum UnitKind {
    /// `accounts.create` (`INSERT ... RETURNING`).
    Accounts,
    /// `sessions.create` (a plain one-row `INSERT`).
    Sessions,
    /// `unlocks.grant` (`INSERT ... ON CONFLICT DO NOTHING`).
    Grants,
}

/// Row counts of every table and the progression of `user`: what a
/// rolled-back unit of work must leave unchanged.
fn snapshot(path: &std::path::Path, user: i64) -> (Vec<i64>, Option<(i64, i64)>) {
    let c = rusqlite::Connection::open(path).unwrap();
    let counts = [
        "accounts",
        "sessions",
        "army_loadouts",
        "progression",
        "user_unlocks",
    ]
    .iter()
    .map(|t| {
        c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    })
    .collect();
    let p = c
        .query_row(
            "SELECT level, xp FROM progression WHERE user_id = ?1",
            [user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    (counts, p)
}

/// Begins a unit of work that first sets `user`'s progression, then writes
/// rows of `kind` until the cap stops it; checks that the failing call is
/// `StorageFull`, later calls and the commit are `Aborted` (an explicit
/// rollback is `Ok`), and nothing of the unit is visible.
async fn unit_at_cap(
    db: &Db,
    path: &std::path::Path,
    (kind, commit): (UnitKind, bool),
    user: i64,
    hash_len: usize,
    f: &mut Figures,
    violations: &mut Vec<String>,
) {
    let round = f.rounds;
    let end = if commit { "commit" } else { "rollback" };
    let mut v = |what: String| violations.push(format!("round {round} {kind:?} {end}: {what}"));
    let before = snapshot(path, user);
    let tx = db.begin().await.unwrap();
    if let Err(e) = tx
        .progression()
        .set(&persist::Progression {
            user_id: UserId(user),
            level: 7,
            xp: 12_345,
        })
        .await
    {
        v(format!("first write of the unit: {e:?}"));
    }
    let mut written = 0usize;
    let mut err = None;
    for i in 0..FILL_MAX {
        let res = match kind {
            UnitKind::Accounts => {
                let name = format!("t{i}");
                let email = format!("{name}@full.invalid");
                let h = hash(hash_len, 7 + i as u64);
                tx.accounts()
                    .create(&NewAccount {
                        email: &email,
                        username: &name,
                        pass_hash: &h,
                        created_at: T0,
                    })
                    .await
                    .map(drop)
            }
            UnitKind::Sessions => tx
                .sessions()
                .create(
                    &format!("disk-full-bearer-token-{i}"),
                    UserId(user),
                    T0,
                    T0 + 60,
                )
                .await
                .map(drop),
            UnitKind::Grants => tx
                .unlocks()
                .grant(UserId(user), 1000 + i as i32, T0)
                .await
                .map(drop),
        };
        match res {
            Ok(()) => written += 1,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    match err {
        Some(Error::StorageFull { .. }) => f.storage_full_errors += 1,
        other => v(format!("the unit of work at the cap failed with {other:?}")),
    }
    if written == 0 {
        v("the freed space took no row inside the unit of work".into());
    }
    match tx.progression().get(UserId(user)).await {
        Err(Error::Aborted) => {}
        other => v(format!("a call after StorageFull in the unit: {other:?}")),
    }
    if commit {
        match tx.commit().await {
            Err(Error::Aborted) => f.tx_rolled_back += 1,
            other => v(format!("commit after StorageFull: {other:?}")),
        }
    } else {
        match tx.rollback().await {
            Ok(()) => f.tx_rolled_back += 1,
            other => v(format!("rollback after StorageFull: {other:?}")),
        }
    }
    f.tx_rows_rolled_back += written + 1;
    let after = snapshot(path, user);
    if after != before {
        v(format!(
            "the rolled-back unit left changes: before {before:?}, after {after:?}"
        ));
    }
    // The handle's writer is usable after the failed unit.
    if let Err(e) = db.ping().await {
        v(format!("ping after the failed unit: {e:?}"));
    }
}

async fn round(rng: &mut Rng, f: &mut Figures, violations: &mut Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    // Both durability levels (the fsync per commit of FULL makes the fill
    // slow, so FULL gets the first round, NORMAL the rest).
    let sync = if f.rounds == 1 { "full" } else { "normal" };
    let url = format!("sqlite://{}?synchronous={sync}", path.display());
    let cap_pages = rng.range(40, 120);
    let cap = cap_pages * PAGE;
    let hash_len = rng.range(32, 512) as usize;
    let config = Config::from_url(&url)
        .unwrap()
        .with_sqlite_max_size(Some(cap));
    let db = persist::open(&config).await.unwrap();
    db.migrate().await.unwrap();
    let mut v = |what: String| violations.push(format!("round {}: {what}", f.rounds));

    // 1. Fill with single writes until one fails.
    let mut rows = Rows::new();
    let mut failing = None;
    for i in 0..FILL_MAX {
        let name = format!("u{i}");
        let h = hash(hash_len, i as u64);
        match create(&db, &name, &h).await {
            Ok(id) => {
                rows.insert(id, (name, h));
            }
            Err(e) => {
                failing = Some((name, h, e));
                break;
            }
        }
    }
    let Some((failed_name, failed_hash, err)) = failing else {
        panic!("{FILL_MAX} writes under a {cap}-byte cap never failed: the cap is not applied");
    };
    f.rows_before_full += rows.len();
    if matches!(err, Error::StorageFull { .. }) {
        f.storage_full_errors += 1;
    } else {
        v(format!(
            "the write at the cap failed with {err:?}, not StorageFull"
        ));
    }
    assert!(!rows.is_empty(), "the cap left no room for a single row");
    let file_len = std::fs::metadata(&path).unwrap().len();
    if file_len > cap {
        v(format!(
            "database file is {file_len} bytes, over the {cap}-byte cap"
        ));
    }

    // 2. Earlier data intact, the same handle keeps serving reads.
    let ic = integrity_check(&path);
    if ic != ["ok"] {
        v(format!("integrity_check after the failed write: {ic:?}"));
    }
    f.rows_read_back += read_back(&db, &rows, violations).await;
    let mut v = |what: String| violations.push(format!("round {}: {what}", f.rounds));
    if let Err(e) = db.ping().await {
        v(format!("ping after storage full: {e:?}"));
    }
    match db.accounts().find_by_username(&failed_name).await {
        Err(Error::NotFound(_)) => {}
        other => v(format!("the failed write left something: {other:?}")),
    }
    // Still full: the retry is the same typed error.
    let retry = create(&db, &failed_name, &failed_hash).await;
    if is_storage_full(&retry) {
        f.storage_full_errors += 1;
    } else {
        v(format!("retry at the cap: {retry:?}"));
    }
    // One statement writing many rows at the cap: all or nothing.
    let (&some_user, _) = rows.iter().next().unwrap();
    let flags: Vec<i32> = (0..4000).collect();
    let many = db.unlocks().grant_many(UserId(some_user), &flags, T0).await;
    if is_storage_full(&many) {
        f.storage_full_errors += 1;
        f.statement_rollbacks += 1;
    } else {
        v(format!("grant_many of 4000 flags at the cap: {many:?}"));
    }
    match db.unlocks().list(UserId(some_user)).await {
        Ok(l) if l.is_empty() => {}
        other => v(format!("a failed grant_many left flags: {other:?}")),
    }

    // 3. Free space: delete the older half of the accounts (whole pages go
    // to the free list, where new rows can use them).
    let ids: Vec<i64> = rows.keys().copied().collect();
    for id in &ids[..ids.len() / 2] {
        if let Err(e) = db.accounts().delete(UserId(*id)).await {
            v(format!("delete at the cap failed: {e:?}"));
        }
        rows.remove(id);
    }
    // 4. A unit of work that hits the cap rolls back entirely, whichever
    // statement hits it (SQLite rolls back just the statement for some,
    // the whole transaction for others: the caller sees the same).
    let kept_user = *rows.keys().next().unwrap();
    for unit in [
        (UnitKind::Accounts, true),
        (UnitKind::Sessions, true),
        (UnitKind::Grants, true),
        (UnitKind::Sessions, false),
    ] {
        unit_at_cap(&db, &path, unit, kept_user, hash_len, f, violations).await;
    }
    let mut v = |what: String| violations.push(format!("round {}: {what}", f.rounds));

    // 5. Space was freed: single writes and a unit of work succeed again,
    // under the same cap.
    for i in 0..3 {
        let name = format!("after{i}");
        let h = hash(hash_len, 99 + i);
        match create(&db, &name, &h).await {
            Ok(id) => {
                rows.insert(id, (name, h));
                f.writes_after_free += 1;
            }
            Err(e) => v(format!("write after freeing space: {e:?}")),
        }
    }
    let tx = db.begin().await.unwrap();
    let unit = async {
        let name = "unit-after-free";
        let email = format!("{name}@full.invalid");
        let h = hash(hash_len, 5);
        let a = tx
            .accounts()
            .create(&NewAccount {
                email: &email,
                username: name,
                pass_hash: &h,
                created_at: T0,
            })
            .await?;
        tx.unlocks().grant_many(a.user_id, &[1, 2, 3], T0).await?;
        Ok::<_, Error>((a.user_id.0, name.to_string(), h))
    }
    .await;
    match unit {
        Ok((id, name, h)) => match tx.commit().await {
            Ok(()) => {
                rows.insert(id, (name, h));
                f.writes_after_free += 1;
            }
            Err(e) => v(format!("commit after freeing space: {e:?}")),
        },
        Err(e) => {
            v(format!("unit of work after freeing space: {e:?}"));
            drop(tx);
        }
    }
    f.rows_read_back += read_back(&db, &rows, violations).await;
    db.close().await;

    // 6. A larger cap (a new handle): the database grows again.
    let bigger = Config::from_url(&url)
        .unwrap()
        .with_sqlite_max_size(Some(cap * 2));
    let db = persist::open(&bigger).await.unwrap();
    let mut grown = 0;
    let mut i = 0u64;
    loop {
        let name = format!("big{i}");
        let h = hash(hash_len, 1000 + i);
        match create(&db, &name, &h).await {
            Ok(id) => {
                rows.insert(id, (name, h));
                grown += 1;
            }
            Err(Error::StorageFull { .. }) => break,
            Err(e) => {
                violations.push(format!(
                    "round {}: write under the raised cap: {e:?}",
                    f.rounds
                ));
                break;
            }
        }
        i += 1;
        assert!(i < FILL_MAX as u64, "the raised cap never bit");
    }
    f.writes_after_raise += grown;
    if grown <= f.writes_after_free {
        violations.push(format!(
            "round {}: doubling the cap made room for only {grown} rows",
            f.rounds
        ));
    }
    let file_len = std::fs::metadata(&path).unwrap().len();
    if file_len > cap * 2 {
        violations.push(format!(
            "round {}: file {file_len} bytes over the raised cap {}",
            f.rounds,
            cap * 2
        ));
    }
    f.rows_read_back += read_back(&db, &rows, violations).await;
    db.close().await;
    let ic = integrity_check(&path);
    if ic != ["ok"] {
        violations.push(format!(
            "round {}: integrity_check at the end: {ic:?}",
            f.rounds
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_is_a_typed_error_not_corruption() {
    let seed = Rng::seed_from_clock();
    let mut rng = Rng::new(seed);
    let mut bound = Bound::new(
        scale(3, 30),
        scale(Duration::from_secs(20), Duration::from_secs(240)),
    );
    let mut f = Figures::default();
    let mut violations = Vec::new();
    while bound.next() {
        f.rounds += 1;
        round(&mut rng, &mut f, &mut violations).await;
    }
    eprintln!(
        "reliability disk_full rounds={} rows_before_full={} storage_full_errors={} \
         statement_rollbacks={} tx_rolled_back={} tx_rows_rolled_back={} rows_read_back={} \
         writes_after_free={} writes_after_raise={} elapsed_s={:.1} seed={seed} violations={}",
        f.rounds,
        f.rows_before_full,
        f.storage_full_errors,
        f.statement_rollbacks,
        f.tx_rolled_back,
        f.tx_rows_rolled_back,
        f.rows_read_back,
        f.writes_after_free,
        f.writes_after_raise,
        bound.elapsed().as_secs_f64(),
        violations.len()
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert_eq!(f.tx_rolled_back, 4 * f.rounds);
}

/// A cap below the current size does not truncate anything: the open
/// succeeds, the data reads back, and the database is held at its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_below_the_current_size_holds_the_database_at_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.db");
    let url = format!("sqlite://{}", path.display());
    let db = persist::open(&Config::from_url(&url).unwrap())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let mut rows = Rows::new();
    for i in 0..300 {
        let name = format!("u{i}");
        let h = hash(400, i);
        rows.insert(create(&db, &name, &h).await.unwrap(), (name, h));
    }
    db.close().await;
    let pages_before: u64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    assert!(pages_before > 8, "{pages_before}");

    let config = Config::from_url(&url)
        .unwrap()
        .with_sqlite_max_size(Some(4 * PAGE));
    let db = persist::open(&config).await.unwrap();
    let mut violations = Vec::new();
    read_back(&db, &rows, &mut violations).await;
    assert!(violations.is_empty(), "{violations:?}");
    // Growing fails, typed; the data stays.
    let mut full = 0;
    for i in 0..2000 {
        match create(&db, &format!("more{i}"), &hash(400, i)).await {
            Ok(_) => {}
            Err(Error::StorageFull { .. }) => {
                full += 1;
                break;
            }
            Err(e) => panic!("growing past a held size: {e:?}"),
        }
    }
    assert_eq!(full, 1, "the held size never bit");
    db.close().await;
    let pages_after: u64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let ic = integrity_check(&path);
    eprintln!(
        "reliability disk_full case=cap_below_size cap_pages=4 pages_before={pages_before} \
         pages_after={pages_after} rows_read_back={} storage_full_errors={full} \
         integrity_check={ic:?}",
        rows.len()
    );
    assert_eq!(pages_after, pages_before);
    assert_eq!(ic, ["ok"]);
}
