//! Read-your-writes on real standbys, model-based: random interleavings of
//! writes and reads for many players, every read checked against an
//! in-memory model of what was acknowledged, on a standby whose replay is
//! paused (it keeps answering with an ever older state) and on a live one;
//! then the same across handles (another process) with a carried
//! [`persist::Position`], and a login seen by another handle without one.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::replicas::{register_player, token_of, wait_all_healthy, Rng, Topology};
use persist::{Db, Error, Loadout, UserId};

/// What the model holds for one player.
#[derive(Default, Clone)]
struct Player {
    element: i32,
    xp: i64,
    flags: BTreeSet<i32>,
    /// Live extra sessions (their token numbers).
    sessions: BTreeSet<usize>,
}

fn extra_token(player: usize, n: usize) -> String {
    token_of(10_000 + player * 1_000 + n)
}

struct Model {
    users: Vec<UserId>,
    players: Vec<Player>,
    next_session: usize,
}

/// `steps` random operations on `writer`, each read made through
/// `reader(step)` (the writer itself, or another handle carrying the
/// writer's position), checked against the model.
async fn run_model(
    writer: &Db,
    reader: impl Fn(&Db) -> Db,
    m: &mut Model,
    rng: &mut Rng,
    steps: usize,
) -> u64 {
    let mut reads = 0;
    for _ in 0..steps {
        let i = rng.below(m.users.len() as u64) as usize;
        let user = m.users[i];
        match rng.below(10) {
            0 => {
                let element = rng.below(5) as i32;
                let mut l = Loadout::empty(user, 1_700_000_100);
                l.element_id = element;
                writer.loadouts().save(&l).await.unwrap();
                m.players[i].element = element;
            }
            1 => {
                let d = 1 + rng.below(50) as i64;
                writer.progression().add_xp(user, d).await.unwrap();
                m.players[i].xp += d;
            }
            2 => {
                let flag = rng.below(20) as i32;
                writer
                    .unlocks()
                    .grant(user, flag, 1_700_000_100)
                    .await
                    .unwrap();
                m.players[i].flags.insert(flag);
            }
            3 => {
                let n = m.next_session;
                m.next_session += 1;
                writer
                    .sessions()
                    .create(&extra_token(i, n), user, 1_700_000_000, 1_900_000_000)
                    .await
                    .unwrap();
                m.players[i].sessions.insert(n);
            }
            4 => {
                if let Some(&n) = m.players[i].sessions.iter().next() {
                    writer.sessions().delete(&extra_token(i, n)).await.unwrap();
                    m.players[i].sessions.remove(&n);
                }
            }
            _ => {
                reads += check_reads(&reader(writer), m, i, rng).await;
            }
        }
    }
    reads
}

/// Reads of player `i` that must show the model's state exactly.
async fn check_reads(db: &Db, m: &Model, i: usize, rng: &mut Rng) -> u64 {
    let user = m.users[i];
    let want = &m.players[i];
    let l = db.loadouts().get(user).await.unwrap();
    assert_eq!(l.element_id, want.element, "loadout of player {i}");
    let p = db.progression().get(user).await.unwrap();
    assert_eq!(p.xp, want.xp, "xp of player {i}");
    let flags: BTreeSet<i32> = db
        .unlocks()
        .list(user)
        .await
        .unwrap()
        .iter()
        .map(|u| u.flag_id)
        .collect();
    assert_eq!(flags, want.flags, "unlocks of player {i}");
    // A session: one that exists (just created or not), or one deleted.
    let n = rng.below(m.next_session.max(1) as u64) as usize;
    let found = db.sessions().find_by_token(&extra_token(i, n)).await;
    if want.sessions.contains(&n) {
        assert_eq!(found.unwrap().user_id, user, "session {n} of player {i}");
    } else {
        assert!(
            matches!(found, Err(Error::NotFound(_))),
            "session {n} of player {i} must be gone: {found:?}"
        );
    }
    let s = db.sessions().find_by_token(&token_of(i)).await.unwrap();
    assert_eq!(s.user_id, user);
    5
}

async fn set_up(db: &Db, players: usize) -> Model {
    let mut users = Vec::new();
    for i in 0..players {
        users.push(register_player(db, i).await.user_id);
    }
    Model {
        users,
        players: vec![Player::default(); players],
        next_session: 0,
    }
}

/// One standby paused, one live; three handles: reading from the paused one
/// only, from the live one only, from both. Every read of every handle shows
/// exactly what the model says, and the paused standby still answers the
/// reads whose state it has (those written before the pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_writes_never_see_an_older_state() {
    let t = Topology::start(2).await;
    let (paused, live) = (&t.standbys[0], &t.standbys[1]);
    let lag_ok = Duration::from_secs(3600);
    let open = |c: persist::Config| async move {
        let db = persist::open(&c.with_replica_max_lag(lag_ok))
            .await
            .unwrap();
        wait_all_healthy(&db).await;
        db
    };
    let on_paused = open(t.config_with(&[paused])).await;
    let on_live = open(t.config_with(&[live])).await;
    let on_both = open(t.config()).await;
    let players = 24;
    let mut model = set_up(&on_both, players).await;
    t.caught_up().await;
    // Before the pause: the setup's state is on both standbys.
    for db in [&on_paused, &on_live] {
        let s = db.sessions().find_by_token(&token_of(0)).await.unwrap();
        assert_eq!(s.user_id, model.users[0]);
    }
    paused.pause_replay().await;
    let seed = 0x5EED_0016_u64;
    let mut rng = Rng(seed);
    let mut reads = 0;
    for round in 0..3 {
        for db in [&on_paused, &on_live, &on_both] {
            // Its own writes are covered by its own position; the other
            // handles' earlier writes by theirs, carried as a caller would.
            let others = [&on_paused, &on_live, &on_both]
                .iter()
                .map(|h| h.position())
                .fold(persist::Position::ZERO, persist::Position::max);
            let reader = move |w: &Db| w.reading_after(others);
            reads += run_model(db, reader, &mut model, &mut rng, 300).await;
            // Another handle (another process) reading after this one's
            // position sees all of its writes too.
            let pos = db.position();
            assert!(pos > persist::Position::ZERO);
            let carried: persist::Position = pos.to_string().parse().unwrap();
            for other in [&on_paused, &on_live, &on_both] {
                let after = other.reading_after(carried);
                for i in 0..players {
                    reads += check_reads(&after, &model, i, &mut rng).await;
                }
            }
        }
        assert!(reads > 0, "round {round}");
    }
    // The paused standby answered nothing written after the pause, but it
    // did answer reads (the ones it could: before the pause, unchanged rows
    // are not enough, the fence is per handle; the checks above prove that).
    let paused_stats = on_paused.replica_stats();
    assert!(paused_stats.primary_reads > 0, "{paused_stats:?}");
    assert!(paused_stats.fallback_behind > 0, "{paused_stats:?}");
    paused.resume_replay().await;
    on_paused.close().await;
    on_live.close().await;
    on_both.close().await;
}

/// A login on one handle, the first request on another (another server
/// process) with no position: the session is found (a replica's miss is
/// checked again on the primary), even on a standby whose replay is paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_seen_by_another_handle_even_from_a_paused_standby() {
    let t = Topology::start(1).await;
    let writer = persist::open(&t.config()).await.unwrap();
    let reader = persist::open(&t.config().with_replica_max_lag(Duration::from_secs(3600)))
        .await
        .unwrap();
    wait_all_healthy(&reader).await;
    t.standbys[0].pause_replay().await;
    let mut users: HashMap<usize, UserId> = HashMap::new();
    for i in 0..20 {
        users.insert(i, register_player(&writer, i).await.user_id);
        let s = reader.sessions().find_by_token(&token_of(i)).await.unwrap();
        assert_eq!(s.user_id, users[&i]);
    }
    let stats = reader.replica_stats();
    assert_eq!(stats.not_found_rechecks, 20, "{stats:?}");
    assert_eq!(stats.primary_reads, 20, "{stats:?}");
    t.standbys[0].resume_replay().await;
    writer.close().await;
    reader.close().await;
}
