//! The `battle_results` repository: battle ends applied exactly once.

use crate::backend::BackendKind;
use crate::error::{Error, Result, UniqueKey, Violation};
use crate::exec::{Exec, Mode};
use crate::models::{flag_list, BattleEnd, BattleOutcome, BattleResult, Progression, StoredBattle};
use crate::validate;
use crate::{postgres, sqlite};

use super::sessions::sweep;

/// Longest battle id, in characters.
const BATTLE_ID_MAX: usize = 128;

/// `battle_results`: which battles were applied for which player, with the
/// answer a repeat gets back.
///
/// **Retention.** A record is what tells a retry from a new battle, so keep
/// it longer than the match server may retry a report; a report that
/// arrives after its record was swept is applied again. Records are removed
/// by [`BattlesRepo::delete_ended_before`] (run it like the session sweep,
/// e.g. hourly with `cutoff = now - 7 days`), and with the account.
#[derive(Clone, Copy)]
pub struct BattlesRepo<'a> {
    ex: Exec<'a>,
}

impl std::fmt::Debug for BattlesRepo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BattlesRepo").finish_non_exhaustive()
    }
}

impl<'a> BattlesRepo<'a> {
    pub(super) fn new(ex: Exec<'a>) -> Self {
        BattlesRepo { ex }
    }
}

impl BattlesRepo<'_> {
    /// Applies one battle's result for one player exactly once: adds the xp
    /// (as [`ProgressionRepo::add_xp`](crate::ProgressionRepo::add_xp)) and
    /// grants the flags (as [`UnlocksRepo::grant_many`](crate::UnlocksRepo::grant_many)),
    /// atomically, and records the battle id with the answer. A repeat with
    /// the same battle id and the same content (xp, flags as a set, time)
    /// applies nothing and returns the same progression and granted flags,
    /// with [`BattleResult::replayed`] set; concurrent repeats wait for the
    /// first to finish. On the pool this is its own transaction; inside a
    /// unit of work it is part of it.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict)`(`[`UniqueKey::BattleId`](crate::UniqueKey::BattleId)`)` when the battle id was
    /// applied for this player with a different content;
    /// [`Error::NotFound`](crate::Error::NotFound) when the player has no progression row;
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a bad id, battle id (empty, over 128
    /// characters, control characters), a negative flag, more than
    /// [`BattleEnd::MAX_FLAGS`] flags, a timestamp out of range, or xp that
    /// would leave `0..=i64::MAX` ([`Violation::Overflow`](crate::Violation::Overflow) /
    /// [`Violation::WouldBeNegative`](crate::Violation::WouldBeNegative), field `xp_delta`). Nothing changes on
    /// error.
    pub async fn apply(&self, end: &BattleEnd<'_>) -> Result<BattleResult> {
        let flags = checked(end)?;
        let outcome = match self.ex {
            Exec::Db(db) if db.backend() == BackendKind::Postgres => {
                // The statements need one transaction; on SQLite the call
                // opens it on the writer itself.
                let tx = db.begin().await?;
                match run(tx.exec(), end, &flags).await {
                    Ok(out) => {
                        tx.commit().await?;
                        out
                    }
                    Err(e) => {
                        if let Err(rb) = tx.rollback().await {
                            tracing::debug!(error = %rb, "rollback after a failed battle end");
                        }
                        return Err(e);
                    }
                }
            }
            ex => run(ex, end, &flags).await?,
        };
        answer(end, &flags, outcome)
    }

    /// Deletes the battle records of battles that ended before `cutoff`, in
    /// batches of at most `batch_size` rows, each its own short transaction
    /// (sized by time as the session sweep's). Returns the number deleted.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a `batch_size` outside `1..=100000` or a
    /// timestamp out of range.
    pub async fn delete_ended_before(&self, cutoff: i64, batch_size: i64) -> Result<u64> {
        validate::timestamp("cutoff", cutoff)?;
        sweep(
            self.ex,
            "battles.delete_ended_before",
            batch_size,
            |c, batch| sqlite::battles::delete_ended_batch(c, cutoff, batch),
            async |p, batch| postgres::battles::delete_ended_batch(p, cutoff, batch).await,
            |_, _| {},
        )
        .await
    }
}

async fn run(ex: Exec<'_>, end: &BattleEnd<'_>, flags: &[i32]) -> Result<BattleOutcome> {
    ex.run(
        "battles.apply",
        Mode::Write,
        |c| sqlite::battles::apply(c, end, flags),
        async |p| postgres::battles::apply(p, end, flags).await,
    )
    .await
}

/// Checks the input; returns the flags ascending and distinct.
fn checked(end: &BattleEnd<'_>) -> Result<Vec<i32>> {
    validate::user_id(end.user_id)?;
    validate::text("battle_id", end.battle_id, BATTLE_ID_MAX)?;
    validate::timestamp("at", end.at)?;
    for f in end.flags {
        validate::non_negative("flag_id", (*f).into())?;
    }
    let mut flags = end.flags.to_vec();
    flags.sort_unstable();
    flags.dedup();
    if flags.len() > BattleEnd::MAX_FLAGS {
        return Err(Error::invalid(
            "flags",
            Violation::TooLong {
                max: BattleEnd::MAX_FLAGS,
            },
        ));
    }
    Ok(flags)
}

fn answer(end: &BattleEnd<'_>, flags: &[i32], outcome: BattleOutcome) -> Result<BattleResult> {
    let progression = |level, xp| Progression {
        user_id: end.user_id,
        level,
        xp,
    };
    match outcome {
        BattleOutcome::Applied(level, xp, granted) => Ok(BattleResult {
            progression: progression(level, xp),
            granted,
            replayed: false,
        }),
        BattleOutcome::Stored(s) => {
            if !same_content(&s, end, flags) {
                return Err(Error::Conflict(UniqueKey::BattleId));
            }
            Ok(BattleResult {
                progression: progression(s.level, s.xp),
                granted: parse_flags(&s.granted)?,
                replayed: true,
            })
        }
        BattleOutcome::NoProgression => Err(Error::NotFound(crate::error::Entity::Progression)),
        BattleOutcome::OutOfRange if end.xp >= 0 => {
            Err(Error::invalid("xp_delta", Violation::Overflow))
        }
        BattleOutcome::OutOfRange => Err(Error::invalid("xp_delta", Violation::WouldBeNegative)),
    }
}

fn same_content(s: &StoredBattle, end: &BattleEnd<'_>, flags: &[i32]) -> bool {
    s.xp_delta == end.xp && s.ended_at == end.at && s.flags == flag_list(flags)
}

fn parse_flags(text: &str) -> Result<Vec<i32>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|f| {
            f.parse::<i32>().map_err(|_| Error::Constraint {
                constraint: "battle_results.granted is not a flag list".into(),
                source: "malformed row".into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::UserId;

    #[test]
    fn flag_lists_round_trip_and_malformed_rows_are_refused() {
        assert_eq!(parse_flags("").unwrap(), Vec::<i32>::new());
        assert_eq!(parse_flags(&flag_list(&[0, 7, 42])).unwrap(), [0, 7, 42]);
        assert!(matches!(parse_flags("1,x"), Err(Error::Constraint { .. })));
    }

    #[test]
    fn flags_are_normalised_and_capped() {
        let flags = [5, 1, 5, 3];
        let end = BattleEnd {
            user_id: UserId(1),
            battle_id: "m-1",
            xp: 10,
            flags: &flags,
            at: 1,
        };
        assert_eq!(checked(&end).unwrap(), [1, 3, 5]);
        let many: Vec<i32> = (0..=256).collect();
        let err = checked(&BattleEnd {
            flags: &many,
            ..end
        })
        .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidInput {
                field: "flags",
                violation: Violation::TooLong { max: 256 }
            }
        ));
        let err = checked(&BattleEnd {
            battle_id: "",
            ..end
        })
        .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidInput {
                field: "battle_id",
                violation: Violation::Empty
            }
        ));
    }
}
