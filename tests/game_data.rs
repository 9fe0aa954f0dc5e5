mod common;

// Issue 18: exactly-once battle ends, conflict-checked saves, keyset pages.
// Every case runs on both backends (`sqlite::case`, `postgres::case`).

use common::raw::Raw;
use persist::{
    BattleEnd, Db, Entity, Error, Loadout, NewAccount, Progression, SessionCursor, UniqueKey,
    UserId, Violation, MAX_PAGE_SIZE,
};

const T0: i64 = 1_700_000_000;
const HASH: &[u8] = b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
/// Tasks racing in the concurrency cases.
const RACERS: usize = 32;

async fn player(db: &Db, name: &str, xp: i64) -> UserId {
    let a = db
        .accounts()
        .create(&NewAccount {
            email: &format!("{name}@example.com"),
            username: name,
            pass_hash: HASH,
            created_at: T0,
        })
        .await
        .unwrap();
    db.progression()
        .set(&Progression {
            user_id: a.user_id,
            level: 1,
            xp,
        })
        .await
        .unwrap();
    a.user_id
}

fn end<'a>(user: UserId, battle: &'a str, xp: i64, flags: &'a [i32]) -> BattleEnd<'a> {
    BattleEnd {
        user_id: user,
        battle_id: battle,
        xp,
        flags,
        at: T0 + 60,
    }
}

async fn battle_rows(db: &Db) -> i64 {
    Raw::open(db).await.counts().await[5]
}

// ---------------------------------------------------------------------------
// Exactly-once battle ends
// ---------------------------------------------------------------------------

async fn battle_end_applies_once_and_repeats_answer_the_same(db: &Db) {
    let u = player(db, "ada", 40).await;
    db.unlocks().grant(u, 2, T0).await.unwrap();
    let first = db
        .battles()
        .apply(&end(u, "match-1", 25, &[3, 2, 3]))
        .await
        .unwrap();
    assert_eq!(first.progression.xp, 65);
    assert_eq!(first.progression.level, 1);
    assert_eq!(first.granted, [3], "2 was held already");
    assert!(!first.replayed);
    // The same report again, flags in another order: nothing applied, the
    // same answer.
    for flags in [&[2, 3][..], &[3, 2, 2]] {
        let again = db
            .battles()
            .apply(&end(u, "match-1", 25, flags))
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(
            (again.progression, &again.granted),
            (first.progression, &first.granted)
        );
    }
    assert_eq!(db.progression().get(u).await.unwrap().xp, 65);
    let held: Vec<i32> = db
        .unlocks()
        .list(u)
        .await
        .unwrap()
        .iter()
        .map(|x| x.flag_id)
        .collect();
    assert_eq!(held, [2, 3]);
    // Another battle applies; its answer reflects the first.
    let second = db
        .battles()
        .apply(&end(u, "match-2", 5, &[]))
        .await
        .unwrap();
    assert_eq!((second.progression.xp, second.granted.len()), (70, 0));
    assert_eq!(battle_rows(db).await, 2);
}

async fn battle_id_with_other_content_is_a_conflict(db: &Db) {
    let u = player(db, "bob", 0).await;
    db.battles().apply(&end(u, "m-7", 10, &[1])).await.unwrap();
    let changed = [
        end(u, "m-7", 11, &[1]),
        end(u, "m-7", 10, &[1, 2]),
        end(u, "m-7", 10, &[]),
        BattleEnd {
            at: T0 + 61,
            ..end(u, "m-7", 10, &[1])
        },
    ];
    for c in &changed {
        let err = db.battles().apply(c).await.unwrap_err();
        assert!(
            matches!(err, Error::Conflict(UniqueKey::BattleId)),
            "{c:?}: {err:?}"
        );
    }
    assert_eq!(db.progression().get(u).await.unwrap().xp, 10);
    assert!(!db.unlocks().has(u, 2).await.unwrap());
    // The same id for another player is another battle record.
    let v = player(db, "cy", 0).await;
    let r = db.battles().apply(&end(v, "m-7", 3, &[])).await.unwrap();
    assert_eq!((r.progression.xp, r.replayed), (3, false));
}

async fn failed_battle_ends_change_nothing(db: &Db) {
    let u = player(db, "dee", 5).await;
    // Would make xp negative: refused, and not recorded (a corrected report
    // under the same id applies).
    let err = db
        .battles()
        .apply(&end(u, "m-1", -6, &[4]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput {
                field: "xp_delta",
                violation: Violation::WouldBeNegative
            }
        ),
        "{err:?}"
    );
    let err = db
        .battles()
        .apply(&end(u, "m-2", i64::MAX, &[4]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput {
                field: "xp_delta",
                violation: Violation::Overflow
            }
        ),
        "{err:?}"
    );
    assert_eq!(battle_rows(db).await, 0);
    assert!(!db.unlocks().has(u, 4).await.unwrap());
    assert_eq!(db.progression().get(u).await.unwrap().xp, 5);
    let ok = db.battles().apply(&end(u, "m-1", -5, &[4])).await.unwrap();
    assert_eq!((ok.progression.xp, ok.granted), (0, vec![4]));

    // No progression row; unknown user; bad input.
    let a = db
        .accounts()
        .create(&NewAccount {
            email: "np@example.com",
            username: "np",
            pass_hash: HASH,
            created_at: T0,
        })
        .await
        .unwrap();
    let err = db
        .battles()
        .apply(&end(a.user_id, "m-1", 1, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound(Entity::Progression)),
        "{err:?}"
    );
    let err = db
        .battles()
        .apply(&end(UserId(987_654), "m-1", 1, &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownUser), "{err:?}");
    let long = "x".repeat(129);
    for (bad, field) in [
        (end(u, "", 1, &[]), "battle_id"),
        (end(u, &long, 1, &[]), "battle_id"),
        (end(u, "a\nb", 1, &[]), "battle_id"),
        (end(u, "m-9", 1, &[-1]), "flag_id"),
        (
            BattleEnd {
                at: -1,
                ..end(u, "m-9", 1, &[])
            },
            "at",
        ),
        (end(UserId(0), "m-9", 1, &[]), "user_id"),
    ] {
        match db.battles().apply(&bad).await {
            Err(Error::InvalidInput { field: f, .. }) if f == field => {}
            other => panic!("{bad:?}: expected invalid {field}, got {other:?}"),
        }
    }
    assert_eq!(battle_rows(db).await, 1);
}

async fn concurrent_repeats_of_one_battle_apply_once(db: &Db) {
    let u = player(db, "eve", 100).await;
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.battles().apply(&end(u, "final-4", 7, &[10, 11])).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().unwrap());
    }
    let applied = answers.iter().filter(|a| !a.replayed).count();
    assert_eq!(applied, 1, "exactly one call applies");
    for a in &answers {
        assert_eq!(
            (a.progression.xp, &a.granted),
            (107, &vec![10, 11]),
            "every call answers the same"
        );
    }
    assert_eq!(db.progression().get(u).await.unwrap().xp, 107);
    assert_eq!(db.unlocks().list(u).await.unwrap().len(), 2);
    assert_eq!(battle_rows(db).await, 1);
}

async fn battle_records_are_swept_and_go_with_the_account(db: &Db) {
    let u = player(db, "fay", 0).await;
    let v = player(db, "gus", 0).await;
    for (i, at) in [T0, T0 + 10, T0 + 20].into_iter().enumerate() {
        for w in [u, v] {
            db.battles()
                .apply(&BattleEnd {
                    at,
                    ..end(w, &format!("b{i}"), 1, &[])
                })
                .await
                .unwrap();
        }
    }
    assert_eq!(battle_rows(db).await, 6);
    // Strictly before the cutoff, in batches of one.
    assert_eq!(
        db.battles().delete_ended_before(T0 + 10, 1).await.unwrap(),
        2
    );
    assert_eq!(battle_rows(db).await, 4);
    // A swept record no longer tells a retry: it applies again.
    let again = db
        .battles()
        .apply(&BattleEnd {
            at: T0,
            ..end(u, "b0", 1, &[])
        })
        .await
        .unwrap();
    assert!(!again.replayed);
    assert_eq!(again.progression.xp, 4);
    db.accounts().delete(u).await.unwrap();
    assert_eq!(battle_rows(db).await, 2);
    match db.battles().delete_ended_before(T0, 0).await {
        Err(Error::InvalidInput {
            field: "batch_size",
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

async fn battle_end_inside_a_unit_of_work_commits_or_rolls_back_with_it(db: &Db) {
    let u = player(db, "hal", 0).await;
    let tx = db.begin().await.unwrap();
    let r = tx.battles().apply(&end(u, "t-1", 9, &[1])).await.unwrap();
    assert_eq!(r.progression.xp, 9);
    tx.rollback().await.unwrap();
    assert_eq!(battle_rows(db).await, 0);
    assert_eq!(db.progression().get(u).await.unwrap().xp, 0);
    let tx = db.begin().await.unwrap();
    tx.battles().apply(&end(u, "t-1", 9, &[1])).await.unwrap();
    tx.commit().await.unwrap();
    let r = db.battles().apply(&end(u, "t-1", 9, &[1])).await.unwrap();
    assert!(r.replayed);
    assert_eq!(db.progression().get(u).await.unwrap().xp, 9);
}

// ---------------------------------------------------------------------------
// Conflict-checked saves
// ---------------------------------------------------------------------------

fn loadout(user: UserId, element: i32, at: i64) -> Loadout {
    Loadout {
        element_id: element,
        ..Loadout::empty(user, at)
    }
}

async fn loadout_saves_check_the_version(db: &Db) {
    let u = player(db, "ivy", 0).await;
    assert!(matches!(
        db.loadouts().get_versioned(u).await,
        Err(Error::NotFound(Entity::Loadout))
    ));
    // 0: only when there is none yet.
    let v1 = db
        .loadouts()
        .save_if_version(&loadout(u, 1, T0), 0)
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let err = db
        .loadouts()
        .save_if_version(&loadout(u, 9, T0), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(UniqueKey::LoadoutVersion)));
    let read = db.loadouts().get_versioned(u).await.unwrap();
    assert_eq!((read.value, read.version), (loadout(u, 1, T0), 1));
    // A plain save in between: the checked save expecting 1 loses.
    db.loadouts().save(&loadout(u, 2, T0 + 1)).await.unwrap();
    let err = db
        .loadouts()
        .save_if_version(&loadout(u, 3, T0 + 2), read.version)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(UniqueKey::LoadoutVersion)));
    assert_eq!(db.loadouts().get(u).await.unwrap(), loadout(u, 2, T0 + 1));
    let now = db.loadouts().get_versioned(u).await.unwrap();
    assert_eq!(now.version, 2);
    let v3 = db
        .loadouts()
        .save_if_version(&loadout(u, 3, T0 + 2), now.version)
        .await
        .unwrap();
    assert_eq!(v3, 3);
    assert_eq!(db.loadouts().get(u).await.unwrap(), loadout(u, 3, T0 + 2));
    // Deleted in between: a conflict too. Bad input changes nothing.
    db.loadouts().delete(u).await.unwrap();
    assert!(matches!(
        db.loadouts().save_if_version(&loadout(u, 4, T0), 3).await,
        Err(Error::Conflict(UniqueKey::LoadoutVersion))
    ));
    assert!(matches!(
        db.loadouts().save_if_version(&loadout(u, 4, T0), -1).await,
        Err(Error::InvalidInput {
            field: "expected_version",
            violation: Violation::Negative
        })
    ));
    assert!(matches!(
        db.loadouts()
            .save_if_version(&loadout(UserId(987_654), 4, T0), 0)
            .await,
        Err(Error::UnknownUser)
    ));
}

async fn progression_sets_check_the_version(db: &Db) {
    let u = player(db, "jo", 10).await;
    let read = db.progression().get_versioned(u).await.unwrap();
    assert_eq!(read.value.xp, 10);
    let p = |xp| Progression {
        user_id: u,
        level: 2,
        xp,
    };
    // add_xp (a battle end) in between makes the read stale.
    db.progression().add_xp(u, 5).await.unwrap();
    let err = db
        .progression()
        .set_if_version(&p(100), read.version)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Conflict(UniqueKey::ProgressionVersion)
    ));
    assert_eq!(db.progression().get(u).await.unwrap().xp, 15);
    let now = db.progression().get_versioned(u).await.unwrap();
    assert_eq!(now.version, read.version + 1);
    let next = db
        .progression()
        .set_if_version(&p(100), now.version)
        .await
        .unwrap();
    assert_eq!(next, now.version + 1);
    assert_eq!(db.progression().get(u).await.unwrap(), p(100));
    assert!(matches!(
        db.progression().set_if_version(&p(1), 0).await,
        Err(Error::Conflict(UniqueKey::ProgressionVersion))
    ));
}

async fn racing_checked_saves_have_exactly_one_winner(db: &Db) {
    let u = player(db, "kit", 0).await;
    db.loadouts().save(&loadout(u, 0, T0)).await.unwrap();
    let base = db.loadouts().get_versioned(u).await.unwrap().version;
    let pbase = db.progression().get_versioned(u).await.unwrap().version;
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let l = db
                .loadouts()
                .save_if_version(&loadout(u, i as i32 + 1, T0 + 1), base)
                .await;
            let p = db
                .progression()
                .set_if_version(
                    &Progression {
                        user_id: u,
                        level: 1,
                        xp: i as i64 + 1,
                    },
                    pbase,
                )
                .await;
            (i, l, p)
        }));
    }
    let (mut l_won, mut p_won) = (Vec::new(), Vec::new());
    for t in tasks {
        let (i, l, p) = t.await.unwrap();
        match l {
            Ok(v) => {
                assert_eq!(v, base + 1);
                l_won.push(i);
            }
            Err(Error::Conflict(UniqueKey::LoadoutVersion)) => {}
            Err(e) => panic!("loadout save {i}: {e:?}"),
        }
        match p {
            Ok(v) => {
                assert_eq!(v, pbase + 1);
                p_won.push(i);
            }
            Err(Error::Conflict(UniqueKey::ProgressionVersion)) => {}
            Err(e) => panic!("progression set {i}: {e:?}"),
        }
    }
    assert_eq!(l_won.len(), 1, "{l_won:?}");
    assert_eq!(p_won.len(), 1, "{p_won:?}");
    let stored = db.loadouts().get_versioned(u).await.unwrap();
    assert_eq!(stored.version, base + 1);
    assert_eq!(
        stored.value.element_id,
        l_won[0] as i32 + 1,
        "the winner's save"
    );
    assert_eq!(
        db.progression().get(u).await.unwrap().xp,
        p_won[0] as i64 + 1
    );
}

// ---------------------------------------------------------------------------
// Keyset pages
// ---------------------------------------------------------------------------

async fn session_pages_walk_every_session_once_in_order(db: &Db) {
    let u = player(db, "lou", 0).await;
    // Several sessions share a creation time: the order breaks ties by id.
    for i in 0..23 {
        db.sessions()
            .create(
                &format!("bearer-token-page-{i:04}-xx"),
                u,
                T0 + i / 4,
                T0 + 99,
            )
            .await
            .unwrap();
    }
    let all = db.sessions().list_for_user(u).await.unwrap();
    assert_eq!(all.len(), 23);
    for limit in [1u32, 4, 5, 23, 24] {
        let mut walked = Vec::new();
        let mut after: Option<SessionCursor> = None;
        let mut pages = 0;
        loop {
            let page = db
                .sessions()
                .list_for_user_page(u, after, limit)
                .await
                .unwrap();
            assert!(page.items.len() <= limit as usize);
            walked.extend(page.items);
            pages += 1;
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert_eq!(walked, all, "limit {limit}");
        assert_eq!(pages, all.len().div_ceil(limit as usize), "limit {limit}");
    }
    // A session deleted between pages neither repeats nor skips another.
    let first = db.sessions().list_for_user_page(u, None, 10).await.unwrap();
    db.sessions().revoke(u, first.items[0].id).await.unwrap();
    let second = db
        .sessions()
        .list_for_user_page(u, first.next, 10)
        .await
        .unwrap();
    assert_eq!(second.items, all[10..20]);
    for bad in [0, MAX_PAGE_SIZE + 1] {
        match db.sessions().list_for_user_page(u, None, bad).await {
            Err(Error::InvalidInput { field: "limit", .. }) => {}
            other => panic!("limit {bad}: {other:?}"),
        }
    }
}

async fn unlock_pages_walk_every_flag_once_in_order(db: &Db) {
    let u = player(db, "max", 0).await;
    let flags: Vec<i32> = (0..30).map(|i| i * 3).collect();
    db.unlocks().grant_many(u, &flags, T0).await.unwrap();
    let all = db.unlocks().list(u).await.unwrap();
    for limit in [1u32, 7, 30, MAX_PAGE_SIZE] {
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = db.unlocks().list_page(u, after, limit).await.unwrap();
            assert!(page.items.len() <= limit as usize);
            walked.extend(page.items);
            match page.next {
                Some(f) => after = Some(f),
                None => break,
            }
        }
        assert_eq!(walked, all, "limit {limit}");
    }
    let page = db.unlocks().list_page(u, Some(40), 3).await.unwrap();
    let got: Vec<i32> = page.items.iter().map(|x| x.flag_id).collect();
    assert_eq!(got, [42, 45, 48]);
    assert_eq!(page.next, Some(48));
    assert!(matches!(
        db.unlocks().list_page(u, Some(-1), 3).await,
        Err(Error::InvalidInput { field: "after", .. })
    ));
    assert!(matches!(
        db.unlocks().list_page(u, None, 0).await,
        Err(Error::InvalidInput { field: "limit", .. })
    ));
}

// ---------------------------------------------------------------------------
// `persist sweep-battles`
// ---------------------------------------------------------------------------

async fn sweep_battles_command_deletes_records_before_the_cutoff(t: &common::TestDb) {
    let db = &t.db;
    let u = player(db, "ned", 0).await;
    for (i, at) in [T0, T0 + 5, T0 + 9].into_iter().enumerate() {
        db.battles()
            .apply(&BattleEnd {
                at,
                ..end(u, &format!("s{i}"), 1, &[])
            })
            .await
            .unwrap();
    }
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_persist"))
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .args(["--database-url", &t.url, "sweep-battles"])
            .args(args)
            .output()
            .expect("run persist")
    };
    let cutoff = (T0 + 9).to_string();
    let o = run(&["--before", &cutoff, "--batch-size", "1"]);
    common::assert_exit(&o, 0, "sweep-battles");
    let out = common::stdout(&o);
    assert!(
        out.starts_with(&format!(
            "deleted 2 battle records (ended_at < {cutoff}, batches of 1) in "
        )),
        "{out}"
    );
    assert_eq!(battle_rows(db).await, 1);
    // The default cutoff (seven days before now) keeps nothing this old.
    let o = run(&[]);
    common::assert_exit(&o, 0, "sweep-battles with the default cutoff");
    assert!(common::stdout(&o).starts_with("deleted 1 battle records"));
    assert_eq!(battle_rows(db).await, 0);
    let o = run(&["--batch-size", "0"]);
    common::assert_exit(&o, 2, "sweep-battles --batch-size 0");
}

both_backends!(
    db battle_end_applies_once_and_repeats_answer_the_same,
    db battle_id_with_other_content_is_a_conflict,
    db failed_battle_ends_change_nothing,
    db concurrent_repeats_of_one_battle_apply_once,
    db battle_records_are_swept_and_go_with_the_account,
    db battle_end_inside_a_unit_of_work_commits_or_rolls_back_with_it,
    db loadout_saves_check_the_version,
    db progression_sets_check_the_version,
    db racing_checked_saves_have_exactly_one_winner,
    db session_pages_walk_every_session_once_in_order,
    db unlock_pages_walk_every_flag_once_in_order,
    test_db sweep_battles_command_deletes_records_before_the_cutoff,
);
