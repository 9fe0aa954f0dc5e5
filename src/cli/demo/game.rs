//! The game-data flows of a player's script: the loadout screen (with two
//! devices that sometimes save at once), battle ends applied exactly once
//! (some reports sent twice), and the paged lists.

use std::time::Instant;

use persist::{
    BattleEnd, BattleResult, Db, Error, Loadout, PieceAbilities, Progression, Result,
    SessionCursor, UniqueKey,
};

use super::super::retry::{again, once};
use super::super::workload::OpKind;
use super::Player;

/// Page size of the demo's list screens (small, so lists span pages).
const PAGE: u32 = 2;

impl Player<'_> {
    /// A loadout the player composes on the loadout screen.
    fn compose_loadout(&mut self) -> Loadout {
        let mut army = [0i32; 4];
        for slot in &mut army {
            *slot = self.below_i32(9); // 0 = empty, abilities 1..=8
        }
        let mut pieces = [0i32; 6];
        for slot in &mut pieces {
            *slot = self.below_i32(9);
        }
        let mut items = [0i32; 4];
        for slot in &mut items {
            *slot = self.below_i32(8); // 0 = empty, items 1..=7
        }
        Loadout {
            user_id: self.user,
            element_id: self.below_i32(5),
            army_abilities: army,
            piece_abilities: PieceAbilities::from_array(pieces),
            items,
            updated_at: self.now,
        }
    }

    /// The loadout screen: read, edit, save with the version read. About one
    /// time in three the player has the screen open on two devices, which
    /// save at once from two tasks: exactly one save must win and the other
    /// get `Conflict`; the player then re-applies the second device's edit
    /// on the new version, so the final loadout is that edit whoever won.
    pub(super) async fn loadout_screen(&mut self) -> Result<()> {
        let loadout = self.compose_loadout();
        let two_devices = self.below(3) == 0;
        let other = two_devices.then(|| self.compose_loadout());
        let started = Instant::now();
        let (db, user) = (self.db, self.user);
        let current = again(&mut self.tally.retries, move || async move {
            db.loadouts().get_versioned(user).await
        })
        .await?;
        self.check(
            Some(current.value) == self.loadout,
            "loadout read back differs from the last save",
        );
        let Some(second) = other else {
            let v = save_checked(db, &mut self.tally.retries, &loadout, current.version).await?;
            self.check(v == Some(current.version + 1), "saved loadout version");
            self.record(OpKind::LoadoutSave, started, 2);
            self.loadout = Some(loadout);
            return Ok(());
        };
        let race = |l: Loadout| {
            let db = self.db.clone();
            let expected = current.version;
            tokio::spawn(async move {
                let mut retries = 0;
                let out = save_checked(&db, &mut retries, &l, expected).await;
                (out, retries)
            })
        };
        let (a, b) = (race(loadout), race(second));
        let (mut won, mut lost) = (0, 0);
        for task in [a, b] {
            // A save task that panicked: counted as a failed check below.
            if let Ok((out, retries)) = task.await {
                self.tally.retries += retries;
                match out? {
                    Some(_) => won += 1,
                    None => lost += 1,
                }
            }
        }
        self.check(
            won == 1 && lost == 1,
            "racing loadout saves: not one winner",
        );
        // The second device reloads and saves its edit again.
        let now = again(&mut self.tally.retries, move || async move {
            db.loadouts().get_versioned(user).await
        })
        .await?;
        self.check(
            now.version == current.version + 1,
            "racing loadout saves: version moved by more than the winner",
        );
        let v = save_checked(db, &mut self.tally.retries, &second, now.version).await?;
        self.check(v == Some(current.version + 2), "re-applied loadout version");
        self.record(OpKind::LoadoutSave, started, 5);
        self.loadout = Some(second);
        Ok(())
    }

    /// One battle end, through the exactly-once path under a battle id of
    /// the player's own, in a unit of work with the level-up the caller's
    /// level curve asks for. One report in four is sent again afterwards,
    /// as a match server retrying would: it must apply nothing and answer
    /// the same.
    pub(super) async fn battle(&mut self) -> Result<()> {
        let delta = 10 + i64::try_from(self.below(191)).unwrap_or(0);
        let mut grant = Vec::new();
        for _ in 0..1 + self.below(3) {
            grant.push(1 + self.below_i32(24));
        }
        let resend = self.below(4) == 0;
        self.battles += 1;
        let battle_id = format!("demo-{:x}-{}-{}", self.seed, self.index, self.battles);
        let expected_xp = self.xp + delta;
        let level = (1 + expected_xp / 1_000).min(i64::from(i32::MAX));
        let new_level = i32::try_from(level).unwrap_or(i32::MAX).max(self.level);
        let mut expected_new: Vec<i32> = grant
            .iter()
            .copied()
            .filter(|f| !self.flags.contains(f))
            .collect();
        expected_new.sort_unstable();
        expected_new.dedup();
        let end = BattleEnd {
            user_id: self.user,
            battle_id: &battle_id,
            xp: delta,
            flags: &grant,
            at: self.now,
        };

        let started = Instant::now();
        let (db, user, level_up) = (self.db, self.user, new_level > self.level);
        let calls = 1 + u64::from(level_up) + u64::from(resend);
        // One unit of work. In doubt, the xp tells whether it committed;
        // if so, a repeat of the battle end answers what it applied (and
        // applies nothing).
        let (first, resolved) = once(
            &mut self.tally.retries,
            move || async move {
                let tx = db.begin().await?;
                let first = tx.battles().apply(&end).await?;
                if level_up {
                    let p = Progression {
                        user_id: user,
                        level: new_level,
                        xp: first.progression.xp,
                    };
                    tx.progression().set(&p).await?;
                }
                tx.commit().await?;
                Ok((first, false))
            },
            move || async move {
                if db.progression().get(user).await?.xp != expected_xp {
                    return Ok(None);
                }
                Ok(Some((db.battles().apply(&end).await?, true)))
            },
        )
        .await?;
        if resend {
            // The exactly-once path: sending it again is always safe.
            let repeat = again(&mut self.tally.retries, move || async move {
                db.battles().apply(&end).await
            })
            .await?;
            self.check_resend(&first, &repeat);
        }
        self.record(OpKind::Battle, started, calls);

        self.check(
            first.replayed == resolved,
            "a new battle was taken for a repeat",
        );
        self.check(
            first.progression.xp == expected_xp,
            "xp after the battle differs",
        );
        self.check(first.granted == expected_new, "newly granted flags differ");
        self.xp = expected_xp;
        self.level = new_level;
        self.flags.extend(grant);
        if resend {
            let p = again(&mut self.tally.retries, move || async move {
                db.progression().get(user).await
            })
            .await?;
            self.tally.calls += 1;
            self.check(p.xp == self.xp, "a re-sent battle was applied twice");
        }
        Ok(())
    }

    fn check_resend(&mut self, first: &BattleResult, repeat: &BattleResult) {
        self.check(repeat.replayed, "a re-sent battle was not recognised");
        self.check(
            repeat.progression == first.progression && repeat.granted == first.granted,
            "a re-sent battle answered differently",
        );
    }

    /// The profile screen: the player's sessions and unlock flags, read page
    /// by page; both must list exactly what the script holds.
    pub(super) async fn profile_screen(&mut self) -> Result<()> {
        let (db, user) = (self.db, self.user);
        let mut sessions = 0usize;
        let mut after: Option<SessionCursor> = None;
        loop {
            let page = again(&mut self.tally.retries, move || async move {
                db.sessions().list_for_user_page(user, after, PAGE).await
            })
            .await?;
            self.tally.calls += 1;
            sessions += page.items.len();
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        self.check(sessions == self.held.len(), "paged sessions differ");
        let mut flags = Vec::new();
        let mut after = None;
        loop {
            let page = again(&mut self.tally.retries, move || async move {
                db.unlocks().list_page(user, after, PAGE).await
            })
            .await?;
            self.tally.calls += 1;
            flags.extend(page.items.iter().map(|u| u.flag_id));
            match page.next {
                Some(f) => after = Some(f),
                None => break,
            }
        }
        self.check(
            flags.iter().eq(self.flags.iter()),
            "paged unlock flags differ",
        );
        Ok(())
    }
}

/// A conflict-checked loadout save, applied once: `Some(version)` when it
/// won, `None` when another save came first (`Conflict`). In doubt, the
/// stored loadout tells: still at `expected`, the save is sent again;
/// moved on and equal to this one, it won; moved on to another, it lost.
async fn save_checked(
    db: &Db,
    retries: &mut u64,
    l: &Loadout,
    expected: i64,
) -> Result<Option<i64>> {
    once(
        retries,
        move || async move {
            match db.loadouts().save_if_version(l, expected).await {
                Ok(v) => Ok(Some(v)),
                Err(Error::Conflict(UniqueKey::LoadoutVersion)) => Ok(None),
                Err(e) => Err(e),
            }
        },
        move || async move {
            let now = db.loadouts().get_versioned(l.user_id).await?;
            Ok(if now.version == expected {
                None
            } else if now.value == *l {
                Some(Some(now.version))
            } else {
                Some(None)
            })
        },
    )
    .await
}
