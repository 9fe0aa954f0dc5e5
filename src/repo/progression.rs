//! The `progression` repository.

use crate::error::{Error, Result, Violation};
use crate::exec::{Exec, Mode};
use crate::models::{Progression, UserId};
use crate::validate;
use crate::{postgres, sqlite};

/// `progression`: level and xp.
#[derive(Clone, Copy)]
pub struct ProgressionRepo<'a> {
    ex: Exec<'a>,
}

impl std::fmt::Debug for ProgressionRepo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressionRepo").finish_non_exhaustive()
    }
}

impl<'a> ProgressionRepo<'a> {
    pub(super) fn new(ex: Exec<'a>) -> Self {
        ProgressionRepo { ex }
    }
}

impl ProgressionRepo<'_> {
    /// A user's progression.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1.
    pub async fn get(&self, user: UserId) -> Result<Progression> {
        validate::user_id(user)?;
        self.ex
            .run(
                "progression.get",
                Mode::Read,
                |c| sqlite::progression::get(c, user),
                async |p| postgres::progression::get(p, user).await,
            )
            .await
    }

    /// Inserts or replaces level and xp.
    ///
    /// # Errors
    /// [`Error::UnknownUser`](crate::Error::UnknownUser); [`Error::InvalidInput`](crate::Error::InvalidInput) for a negative level or
    /// xp.
    pub async fn set(&self, p: &Progression) -> Result<()> {
        validate::user_id(p.user_id)?;
        validate::non_negative("level", p.level.into())?;
        validate::non_negative("xp", p.xp)?;
        self.ex
            .run(
                "progression.set",
                Mode::Write,
                |c| sqlite::progression::set(c, p),
                async |pg| postgres::progression::set(pg, p).await,
            )
            .await
    }

    /// Adds `delta` (which may be negative) to xp in one atomic statement and
    /// returns the new values. Concurrent calls never lose an update.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) when the user has no progression row;
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) with [`Violation::Overflow`](crate::Violation::Overflow) or
    /// [`Violation::WouldBeNegative`](crate::Violation::WouldBeNegative) (field `xp_delta`) when the result would
    /// leave `0..=i64::MAX`; nothing changes then.
    pub async fn add_xp(&self, user: UserId, delta: i64) -> Result<Progression> {
        validate::user_id(user)?;
        let updated = self
            .ex
            .run(
                "progression.add_xp",
                Mode::Write,
                |c| sqlite::progression::add_xp(c, user, delta),
                async |p| postgres::progression::add_xp(p, user, delta).await,
            )
            .await?;
        match updated {
            Some((level, xp)) => Ok(Progression {
                user_id: user,
                level,
                xp,
            }),
            // Nothing changed: say why.
            None => match self.get(user).await {
                Ok(_) if delta >= 0 => Err(Error::invalid("xp_delta", Violation::Overflow)),
                Ok(_) => Err(Error::invalid("xp_delta", Violation::WouldBeNegative)),
                Err(e) => Err(e),
            },
        }
    }
}
