mod common;

// Concurrency on both backends: one named test per (backend, case), each on a
// fresh migrated database, on a multi-thread runtime, with `tokio::spawn`ed
// tasks sharing clones of one `Db`. Plus the SQLite regression that motivates
// `BEGIN IMMEDIATE`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use persist::{
    Account, Db, Entity, Error, Loadout, NewAccount, Progression, UniqueKey, UserId, Violation,
};

const HASH: &[u8] = b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
const T0: i64 = 1_700_000_000;
const TASKS: usize = 16;

async fn mk(db: &Db, email: &str, username: &str) -> Account {
    db.accounts()
        .create(&NewAccount {
            email,
            username,
            pass_hash: HASH,
            created_at: T0,
        })
        .await
        .unwrap()
}

/// 16 tasks x 100 `add_xp(user, k)` (k = task number + 1): the final xp is
/// exactly the sum and every returned value is distinct (each update saw the
/// previous one: none was lost).
async fn add_xp_never_loses_an_update(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let other = mk(db, "bob@example.com", "bob").await;
    db.progression()
        .set(&Progression {
            user_id: a.user_id,
            level: 4,
            xp: 0,
        })
        .await
        .unwrap();
    db.progression()
        .set(&Progression {
            user_id: other.user_id,
            level: 1,
            xp: 7,
        })
        .await
        .unwrap();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        let user = a.user_id;
        handles.push(tokio::spawn(async move {
            let k = t as i64 + 1;
            let mut seen = Vec::with_capacity(100);
            for _ in 0..100 {
                let p = db.progression().add_xp(user, k).await.unwrap();
                assert_eq!(p.level, 4);
                assert_eq!(p.user_id, user);
                seen.push(p.xp);
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let seen = h.await.unwrap();
        // Each task's own results increase strictly.
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        all.extend(seen);
    }
    let sum: i64 = (1..=TASKS as i64).map(|k| k * 100).sum();
    assert_eq!(sum, 13_600);
    assert_eq!(all.len(), TASKS * 100);
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), TASKS * 100, "some add_xp results repeat");
    assert_eq!(*distinct.iter().max().unwrap(), sum);
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap(),
        Progression {
            user_id: a.user_id,
            level: 4,
            xp: sum
        }
    );
    // The other user's row was not touched.
    assert_eq!(db.progression().get(other.user_id).await.unwrap().xp, 7);
}

/// Concurrent add_xp that would go below zero: exactly the ones that fit
/// succeed, the rest get the typed error, and xp ends at exactly 0.
async fn concurrent_add_xp_never_goes_negative(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    db.progression()
        .set(&Progression {
            user_id: a.user_id,
            level: 0,
            xp: 50,
        })
        .await
        .unwrap();
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let db = db.clone();
        let user = a.user_id;
        handles.push(tokio::spawn(async move {
            let mut ok = 0;
            let mut refused = 0;
            for _ in 0..10 {
                match db.progression().add_xp(user, -1).await {
                    Ok(p) => {
                        assert!(p.xp >= 0);
                        ok += 1;
                    }
                    Err(Error::InvalidInput {
                        field: "xp_delta",
                        violation: Violation::WouldBeNegative,
                    }) => refused += 1,
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for h in handles {
        let (o, r) = h.await.unwrap();
        ok += o;
        refused += r;
    }
    assert_eq!(ok, 50);
    assert_eq!(refused, TASKS * 10 - 50);
    assert_eq!(db.progression().get(a.user_id).await.unwrap().xp, 0);
}

/// 16 tasks registering the same email (in varying case) at once: exactly one
/// succeeds, 15 get `Conflict(Email)`.
async fn same_email_registers_once(db: &Db) {
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let email = if t % 2 == 0 {
                "race@example.com".to_string()
            } else {
                "RACE@Example.COM".to_string()
            };
            let username = format!("racer{t}");
            let r = db
                .accounts()
                .create(&NewAccount {
                    email: &email,
                    username: &username,
                    pass_hash: HASH,
                    created_at: T0,
                })
                .await;
            (t, r)
        }));
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for h in handles {
        match h.await.unwrap() {
            (t, Ok(a)) => winners.push((t, a)),
            (_, Err(Error::Conflict(UniqueKey::Email))) => conflicts += 1,
            (t, Err(e)) => panic!("task {t}: unexpected error {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one registration succeeds");
    assert_eq!(conflicts, TASKS - 1);
    let (t, a) = &winners[0];
    assert_eq!(a.username, format!("racer{t}"));
    assert_eq!(
        &db.accounts()
            .find_by_email("race@example.com")
            .await
            .unwrap(),
        a
    );
    // The losers left nothing behind.
    for l in (0..TASKS).filter(|l| l != t) {
        assert!(matches!(
            db.accounts().find_by_username(&format!("racer{l}")).await,
            Err(Error::NotFound(Entity::Account))
        ));
    }
}

/// The same username, different emails: one winner, 15 `Conflict(Username)`.
async fn same_username_registers_once(db: &Db) {
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let email = format!("u{t}@example.com");
            let username = if t % 2 == 0 { "Racer" } else { "rACER" };
            db.accounts()
                .create(&NewAccount {
                    email: &email,
                    username,
                    pass_hash: HASH,
                    created_at: T0,
                })
                .await
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::Conflict(UniqueKey::Username)) => conflicts += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!((ok, conflicts), (1, TASKS - 1));
}

/// 16 tasks granting the same flag: exactly one reports it new.
async fn same_flag_granted_new_once(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        let user = a.user_id;
        handles.push(tokio::spawn(async move {
            db.unlocks().grant(user, 77, T0 + t as i64).await.unwrap()
        }));
    }
    let mut new = 0;
    for h in handles {
        if h.await.unwrap() {
            new += 1;
        }
    }
    assert_eq!(new, 1);
    let list = db.unlocks().list(a.user_id).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].flag_id, 77);

    // grant_many over overlapping sets: every flag is reported new exactly once.
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        let user = a.user_id;
        handles.push(tokio::spawn(async move {
            let flags: Vec<i32> = (0..8).map(|i| ((t as i32) + i) % 20).collect();
            db.unlocks().grant_many(user, &flags, T0).await.unwrap()
        }));
    }
    let mut reported = Vec::new();
    for h in handles {
        reported.extend(h.await.unwrap());
    }
    reported.sort_unstable();
    assert_eq!(reported, (0..20).collect::<Vec<i32>>());
}

/// A multi-repository unit of work that fails midway, in a spawned task,
/// leaves nothing behind; concurrently, other units of work commit.
async fn failing_unit_of_work_leaves_nothing(db: &Db) {
    let keep = mk(db, "keep@example.com", "keep").await;
    let mut handles = Vec::new();
    for t in 0..8 {
        let db1 = db.clone();
        handles.push(tokio::spawn(async move {
            let db = db1;
            let tx = db.begin().await.unwrap();
            let email = format!("fail{t}@example.com");
            let username = format!("fail{t}");
            let a = common::register_in(
                &tx,
                &NewAccount {
                    email: &email,
                    username: &username,
                    pass_hash: HASH,
                    created_at: T0,
                },
            )
            .await
            .unwrap();
            tx.sessions()
                .create(
                    &format!("failing-unit-bearer-token-{t}"),
                    a.user_id,
                    T0,
                    T0 + 60,
                )
                .await
                .unwrap();
            assert!(tx.unlocks().grant(a.user_id, 1, T0).await.unwrap());
            // Midway failure: the email is already taken (by `keep`).
            let e = tx
                .accounts()
                .create(&NewAccount {
                    email: "KEEP@example.com",
                    username: &format!("dup{t}"),
                    pass_hash: HASH,
                    created_at: T0,
                })
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Conflict(UniqueKey::Email)), "{e:?}");
            // The task ends here: `tx` is dropped without commit.
            a.user_id
        }));
        // Interleave committing units of work.
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let tx = db.begin().await.unwrap();
            let email = format!("ok{t}@example.com");
            let username = format!("ok{t}");
            let a = common::register_in(
                &tx,
                &NewAccount {
                    email: &email,
                    username: &username,
                    pass_hash: HASH,
                    created_at: T0,
                },
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            UserId(-a.user_id.0)
        }));
    }
    let mut failed_ids = Vec::new();
    let mut ok_ids = Vec::new();
    for h in handles {
        let id = h.await.unwrap();
        if id.0 > 0 {
            failed_ids.push(id);
        } else {
            ok_ids.push(UserId(-id.0));
        }
    }
    assert_eq!((failed_ids.len(), ok_ids.len()), (8, 8));
    // SQLite may hand a rolled-back id to a later committed account (the
    // AUTOINCREMENT counter rolls back too); PostgreSQL never does. Check the
    // ids no committed account owns.
    for id in failed_ids.iter().filter(|id| !ok_ids.contains(id)) {
        assert!(matches!(
            db.accounts().get(*id).await,
            Err(Error::NotFound(Entity::Account))
        ));
        assert!(matches!(
            db.progression().get(*id).await,
            Err(Error::NotFound(Entity::Progression))
        ));
        assert!(matches!(
            db.loadouts().get(*id).await,
            Err(Error::NotFound(Entity::Loadout))
        ));
    }
    for id in failed_ids.iter().chain(&ok_ids) {
        assert_eq!(db.unlocks().list(*id).await.unwrap(), vec![]);
        assert_eq!(db.sessions().list_for_user(*id).await.unwrap(), vec![]);
    }
    for t in 0..8 {
        assert!(matches!(
            db.sessions()
                .find_by_token(&format!("failing-unit-bearer-token-{t}"))
                .await,
            Err(Error::NotFound(Entity::Session))
        ));
    }
    assert_eq!(counts(db).await, [9, 0, 8, 8, 0, 0]);
    for t in 0..8 {
        assert!(matches!(
            db.accounts()
                .find_by_email(&format!("fail{t}@example.com"))
                .await,
            Err(Error::NotFound(Entity::Account))
        ));
        assert!(matches!(
            db.accounts().find_by_username(&format!("dup{t}")).await,
            Err(Error::NotFound(Entity::Account))
        ));
    }
    for id in &ok_ids {
        assert_eq!(db.progression().get(*id).await.unwrap().level, 1);
        assert_eq!(
            db.loadouts().get(*id).await.unwrap(),
            Loadout::empty(*id, T0)
        );
    }
    assert_eq!(db.accounts().get(keep.user_id).await.unwrap(), keep);
    // The failed names are free (on PostgreSQL this also waits out any
    // rollback still in flight).
    for t in 0..8 {
        mk(db, &format!("FAIL{t}@example.com"), &format!("Fail{t}")).await;
    }
}

/// Concurrent end-of-battle units of work (add_xp + grant_many) on the same
/// user all commit; none sees a busy/timeout error.
async fn concurrent_units_of_work_all_commit(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    db.progression()
        .set(&Progression {
            user_id: a.user_id,
            level: 2,
            xp: 0,
        })
        .await
        .unwrap();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        let user = a.user_id;
        handles.push(tokio::spawn(async move {
            for round in 0..5 {
                let tx = db.begin().await.unwrap();
                // Read, then write, in one unit of work.
                let before = tx.progression().get(user).await.unwrap();
                let after = tx.progression().add_xp(user, 10).await.unwrap();
                assert!(after.xp >= before.xp + 10, "{before:?} -> {after:?}");
                let f = (t * 5 + round) as i32;
                let new = tx
                    .unlocks()
                    .grant_many(user, &[f, 1000 + f, 5000], T0)
                    .await
                    .unwrap();
                assert!(new.contains(&f) && new.contains(&(1000 + f)), "{new:?}");
                tx.commit().await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let p = db.progression().get(a.user_id).await.unwrap();
    assert_eq!(p.xp, (TASKS * 5 * 10) as i64);
    assert_eq!(p.level, 2);
    let flags: Vec<i32> = db
        .unlocks()
        .list(a.user_id)
        .await
        .unwrap()
        .iter()
        .map(|u| u.flag_id)
        .collect();
    let mut want: Vec<i32> = (0..(TASKS * 5) as i32)
        .flat_map(|f| [f, 1000 + f])
        .collect();
    want.push(5000);
    want.sort_unstable();
    assert_eq!(flags, want);
}

/// Readers run while units of work write: every read sees a committed state
/// (xp a multiple of the per-unit step), never a half-applied one.
async fn readers_see_only_committed_states(db: &Db) {
    let a = mk(db, "ada@example.com", "ada").await;
    db.progression()
        .set(&Progression {
            user_id: a.user_id,
            level: 0,
            xp: 0,
        })
        .await
        .unwrap();
    let mut writers = Vec::new();
    for _ in 0..4 {
        let db = db.clone();
        let user = a.user_id;
        writers.push(tokio::spawn(async move {
            for _ in 0..20 {
                let tx = db.begin().await.unwrap();
                tx.progression().add_xp(user, 1).await.unwrap();
                tokio::task::yield_now().await;
                tx.progression().add_xp(user, 2).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..4 {
        let db = db.clone();
        let user = a.user_id;
        readers.push(tokio::spawn(async move {
            for _ in 0..50 {
                let xp = db.progression().get(user).await.unwrap().xp;
                assert_eq!(xp % 3, 0, "saw a half-applied unit of work: xp {xp}");
                tokio::task::yield_now().await;
            }
        }));
    }
    for h in writers.into_iter().chain(readers) {
        h.await.unwrap();
    }
    assert_eq!(
        db.progression().get(a.user_id).await.unwrap().xp,
        4 * 20 * 3
    );
}

/// Row counts of the six tables, read through a raw connection.
async fn counts(db: &Db) -> [i64; 6] {
    common::raw::Raw::open(db).await.counts().await
}

conformance!(
    add_xp_never_loses_an_update,
    concurrent_add_xp_never_goes_negative,
    same_email_registers_once,
    same_username_registers_once,
    same_flag_granted_new_once,
    failing_unit_of_work_leaves_nothing,
    concurrent_units_of_work_all_commit,
    readers_see_only_committed_states,
);

// ---------------------------------------------------------------------------
// SQLite regression: why units of work begin with BEGIN IMMEDIATE
// ---------------------------------------------------------------------------

static BUSY_CALLS: AtomicUsize = AtomicUsize::new(0);

/// A busy handler that counts its calls and waits up to ~2 s (200 x 10 ms),
/// like a 2 s busy timeout.
fn counting_busy_handler(n: i32) -> bool {
    BUSY_CALLS.fetch_add(1, Ordering::SeqCst);
    if n >= 200 {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_millis(10));
    true
}

fn busy_code(e: &rusqlite::Error) -> Option<(rusqlite::ErrorCode, i32)> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some((f.code, f.extended_code)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_deferred_begin_read_then_write_is_busy_at_once() {
    let t = common::sqlite().await;
    let a = mk(&t.db, "ada@example.com", "ada").await;
    t.db.progression()
        .set(&Progression {
            user_id: a.user_id,
            level: 0,
            xp: 0,
        })
        .await
        .unwrap();
    let path = t.db.config().sqlite_path().unwrap().to_path_buf();
    let c1 = rusqlite::Connection::open(&path).unwrap();
    let c2 = rusqlite::Connection::open(&path).unwrap();
    for c in [&c1, &c2] {
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        c.busy_handler(Some(counting_busy_handler)).unwrap();
    }
    // Both: deferred BEGIN, then a read (each now holds a read snapshot).
    let read = |c: &rusqlite::Connection| -> i64 {
        c.query_row(
            "SELECT xp FROM progression WHERE user_id = ?1",
            [a.user_id.0],
            |r| r.get(0),
        )
        .unwrap()
    };
    c1.execute_batch("BEGIN").unwrap();
    c2.execute_batch("BEGIN").unwrap();
    assert_eq!(read(&c1), 0);
    assert_eq!(read(&c2), 0);
    // The first writer upgrades to a write transaction.
    c1.execute(
        "UPDATE progression SET xp = ?2 WHERE user_id = ?1",
        [a.user_id.0, 10],
    )
    .unwrap();
    // The second writer fails at once: SQLITE_BUSY, and the busy handler is
    // never invoked (waiting could not help: its snapshot is stale).
    BUSY_CALLS.store(0, Ordering::SeqCst);
    let e = c2
        .execute(
            "UPDATE progression SET xp = ?2 WHERE user_id = ?1",
            [a.user_id.0, 20],
        )
        .unwrap_err();
    let (code, extended) = busy_code(&e).unwrap_or_else(|| panic!("not a SQLite failure: {e:?}"));
    assert_eq!(code, rusqlite::ErrorCode::DatabaseBusy, "{e:?}");
    assert_eq!(extended & 0xff, rusqlite::ffi::SQLITE_BUSY);
    assert_eq!(
        BUSY_CALLS.load(Ordering::SeqCst),
        0,
        "busy handler was invoked"
    );
    c1.execute_batch("COMMIT").unwrap();
    // Even after the first commits, the stale read transaction cannot write.
    let e = c2
        .execute(
            "UPDATE progression SET xp = ?2 WHERE user_id = ?1",
            [a.user_id.0, 20],
        )
        .unwrap_err();
    let (code, extended) = busy_code(&e).unwrap_or_else(|| panic!("not a SQLite failure: {e:?}"));
    assert_eq!(code, rusqlite::ErrorCode::DatabaseBusy, "{e:?}");
    assert_eq!(extended, rusqlite::ffi::SQLITE_BUSY_SNAPSHOT);
    assert_eq!(
        BUSY_CALLS.load(Ordering::SeqCst),
        0,
        "busy handler was invoked"
    );
    c2.execute_batch("ROLLBACK").unwrap();
    assert_eq!(read(&c2), 10);
    drop((c1, c2));

    // Through persist: two concurrent units of work, each read-then-write,
    // both succeed and neither update is lost.
    let mut handles = Vec::new();
    for _ in 0..2 {
        let db = t.db.clone();
        let user = a.user_id;
        handles.push(tokio::spawn(async move {
            let tx = db.begin().await.unwrap();
            let p = tx.progression().get(user).await.unwrap();
            tokio::task::yield_now().await;
            tx.progression()
                .set(&Progression { xp: p.xp + 5, ..p })
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(t.db.progression().get(a.user_id).await.unwrap().xp, 20);
    t.close().await;
}

/// Two `Db` handles on one file (as two server processes would have): their
/// units of work, each read-then-write, both succeed because the second
/// `BEGIN IMMEDIATE` waits (busy timeout) for the first to commit instead of
/// failing at once. Each handle runs on its own thread and runtime, like a
/// separate process.
#[test]
fn sqlite_two_handles_read_then_write_units_both_commit() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (t, user) = rt.block_on(async {
        let t = common::sqlite().await;
        let a = mk(&t.db, "ada@example.com", "ada").await;
        t.db.progression()
            .set(&Progression {
                user_id: a.user_id,
                level: 0,
                xp: 0,
            })
            .await
            .unwrap();
        (t, a.user_id)
    });
    let url = t.url.clone();
    let (first_in_tx_tx, first_in_tx_rx) = std::sync::mpsc::channel::<()>();
    let url1 = url.clone();
    let first = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let db = common::open_migrated(&url1).await;
            let tx = db.begin().await.unwrap();
            let p = tx.progression().get(user).await.unwrap();
            first_in_tx_tx.send(()).unwrap();
            // Hold the unit of work open while the other handle begins.
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            tx.progression()
                .set(&Progression { xp: p.xp + 1, ..p })
                .await
                .unwrap();
            tx.commit().await.unwrap();
            db.close().await;
        });
    });
    let second = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let db = common::open_migrated(&url).await;
            first_in_tx_rx.recv().unwrap();
            let tx = db.begin().await.unwrap();
            let p = tx.progression().get(user).await.unwrap();
            tx.progression()
                .set(&Progression { xp: p.xp + 2, ..p })
                .await
                .unwrap();
            tx.commit().await.unwrap();
            db.close().await;
        });
    });
    first.join().unwrap();
    second.join().unwrap();
    rt.block_on(async {
        assert_eq!(
            t.db.progression().get(user).await.unwrap(),
            Progression {
                user_id: user,
                level: 0,
                xp: 3
            }
        );
        t.close().await;
    });
}
