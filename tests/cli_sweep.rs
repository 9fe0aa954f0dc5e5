//! `persist sweep-sessions`, run as a user would against a real SQLite file
//! and a real PostgreSQL database: it deletes exactly the expired sessions
//! (a session expiring at `--now` included), in batches, prints the count,
//! and refuses bad arguments.

mod common;

use common::{assert_exit, stderr, stdout};

use std::process::{Command, Output};

use common::TestDb;
use persist::{Db, NewAccount, UserId};

const BIN: &str = env!("CARGO_BIN_EXE_persist");

fn persist() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("DATABASE_URL").env_remove("RUST_LOG");
    c
}

fn sweep(url: &str, args: &[&str]) -> Output {
    persist()
        .args(["--database-url", url, "sweep-sessions"])
        .args(args)
        .output()
        .expect("run persist")
}

/// The count in `deleted N expired sessions (...)`, the only stdout line.
fn deleted_count(o: &Output, now: &str, batch: u32) -> u64 {
    let out = stdout(o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let rest = lines[0]
        .strip_prefix("deleted ")
        .unwrap_or_else(|| panic!("{out}"));
    let (n, tail) = rest.split_once(' ').unwrap();
    let expected = format!("expired sessions (expires_at <= {now}, batches of {batch}) in ");
    assert!(tail.starts_with(&expected), "{tail:?} vs {expected:?}");
    assert!(tail.ends_with(" s"), "{tail}");
    n.parse().unwrap()
}

async fn user(db: &Db, n: u32) -> UserId {
    db.accounts()
        .create(&NewAccount {
            email: &format!("sweep{n}@example.com"),
            username: &format!("sweep{n}"),
            pass_hash: b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            created_at: 10,
        })
        .await
        .unwrap()
        .user_id
}

fn token(n: u32) -> String {
    format!("sweep-token-{n:03}-0123456789abcdefghijklmnopq")
}

/// Sessions expiring at these times; the sweep at `NOW` must remove the
/// first `EXPIRED` of them (the one at exactly `NOW` included).
const EXPIRIES: [i64; 9] = [20, 100, 500, 999, 1000, 1001, 5000, 86_400, 4_000_000_000];
const NOW: i64 = 1000;
const EXPIRED: usize = 5;

async fn sweeps_exactly_the_expired_sessions(t: &TestDb) {
    let db = &t.db;
    let (a, b) = (user(db, 1).await, user(db, 2).await);
    for (i, exp) in EXPIRIES.iter().enumerate() {
        let owner = if i % 2 == 0 { a } else { b };
        db.sessions()
            .create(&token(i as u32), owner, 10, *exp)
            .await
            .unwrap();
    }

    // Batches of 2: several full batches, then a short one.
    let now = NOW.to_string();
    let o = sweep(&t.url, &["--now", &now, "--batch-size", "2"]);
    assert_exit(&o, 0, "sweep-sessions --now 1000");
    assert_eq!(deleted_count(&o, &now, 2), EXPIRED as u64);
    assert_eq!(
        stderr(&o),
        "sweeping sessions with expires_at <= 1000 in batches of 2\n"
    );
    for (i, exp) in EXPIRIES.iter().enumerate() {
        let found = db.sessions().find_by_token(&token(i as u32)).await;
        if i < EXPIRED {
            assert!(
                found.unwrap_err().is_not_found(),
                "session expiring at {exp} must be gone"
            );
        } else {
            assert_eq!(found.unwrap().expires_at, *exp);
        }
    }
    // Accounts are untouched.
    db.accounts().get(a).await.unwrap();
    db.accounts().get(b).await.unwrap();

    // Nothing left to delete at that time.
    let o = sweep(&t.url, &["--now", &now, "--batch-size", "2"]);
    assert_exit(&o, 0, "second sweep");
    assert_eq!(deleted_count(&o, &now, 2), 0);

    // Default time: the current one (everything but the 2096 session), in
    // the default batches of 1000.
    let o = sweep(&t.url, &[]);
    assert_exit(&o, 0, "sweep at the current time");
    let out = stdout(&o);
    let now = out
        .split("expires_at <= ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .to_string();
    let now_secs: i64 = now.parse().unwrap();
    assert!((1_700_000_000..4_000_000_000).contains(&now_secs), "{out}");
    assert_eq!(deleted_count(&o, &now, 1000), 3);
    let left = db.sessions().list_for_user(a).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].expires_at, 4_000_000_000);
    assert!(db.sessions().list_for_user(b).await.unwrap().is_empty());
}

both_backends! {
    test_db sweeps_exactly_the_expired_sessions,
}

// sweep-sessions through PgBouncer (both pool modes).
through_poolers! {
    test_db sweeps_exactly_the_expired_sessions,
}

/// Every session the demo leaves behind has expired by the wall clock (its
/// simulated clock starts in 2023): a sweep at the current time removes
/// exactly those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_after_demo_removes_every_session_it_left() {
    let (url, _dir) = common::sqlite_url();
    let o = persist()
        .args([
            "--database-url",
            &url,
            "demo",
            "--players",
            "20",
            "--seed",
            "5",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0, "demo");
    let db = common::open_migrated(&url).await;
    let mut left = 0u64;
    for i in 0..20 {
        let name = common::demo::player_username(5, i);
        if let Ok(a) = db.accounts().find_by_username(&name).await {
            left += db.sessions().list_for_user(a.user_id).await.unwrap().len() as u64;
        }
    }
    assert!(left > 0, "the demo leaves sessions behind");
    let o = sweep(&url, &["--batch-size", "7"]);
    assert_exit(&o, 0, "sweep after demo");
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("deleted {left} expired sessions (")),
        "{out}"
    );
    for i in 0..20 {
        let name = common::demo::player_username(5, i);
        if let Ok(a) = db.accounts().find_by_username(&name).await {
            assert!(db
                .sessions()
                .list_for_user(a.user_id)
                .await
                .unwrap()
                .is_empty());
        }
    }
    db.close().await;
}

#[test]
fn bad_arguments_are_refused() {
    let (url, _dir) = common::sqlite_url();
    // Usage errors (clap): exit 2, nothing done.
    for args in [
        &["--batch-size", "0"][..],
        &["--batch-size", "100001"],
        &["--now", "soon"],
        &["--now", "-1"],
        &["--now", "-5"],
    ] {
        let o = sweep(&url, args);
        assert_exit(&o, 2, &format!("sweep-sessions {args:?}"));
        assert!(stdout(&o).is_empty());
        assert!(
            stderr(&o).contains(&format!("'{}", args[0])),
            "{}",
            stderr(&o)
        );
    }
    // A time past the library's range is its InvalidInput: one error line.
    let o = sweep(&url, &["--now", "253402300800"]);
    assert_exit(&o, 1, "sweep-sessions --now 253402300800");
    assert!(stdout(&o).is_empty());
    let err = stderr(&o);
    let last = err.lines().last().unwrap();
    assert_eq!(
        last, "error: invalid now: must be between 0 and 253402300799",
        "{err}"
    );
}
