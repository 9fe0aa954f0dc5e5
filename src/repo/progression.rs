//! The `progression` repository.

use crate::error::{Error, Result, UniqueKey, Violation};
use crate::exec::{Exec, Mode};
use crate::models::{Progression, UserId, Versioned};
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

    /// A user's progression with its version, for
    /// [`ProgressionRepo::set_if_version`].
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1.
    pub async fn get_versioned(&self, user: UserId) -> Result<Versioned<Progression>> {
        validate::user_id(user)?;
        let (value, version) = self
            .ex
            .run(
                "progression.get_versioned",
                Mode::Read,
                |c| sqlite::progression::get_versioned(c, user),
                async |p| postgres::progression::get_versioned(p, user).await,
            )
            .await?;
        Ok(Versioned { value, version })
    }

    /// Sets level and xp only if nobody changed them since the caller read
    /// version `expected` (0: only if there is no row yet), in one
    /// statement; returns the new version. [`ProgressionRepo::add_xp`] and
    /// battle ends change the row without a version check but add one to the
    /// version too.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict)`(`[`UniqueKey::ProgressionVersion`](crate::UniqueKey::ProgressionVersion)`)` when the
    /// stored version is not `expected`: nothing changed;
    /// [`Error::UnknownUser`](crate::Error::UnknownUser); [`Error::InvalidInput`](crate::Error::InvalidInput) as
    /// [`ProgressionRepo::set`], or a negative `expected`.
    pub async fn set_if_version(&self, p: &Progression, expected: i64) -> Result<i64> {
        validate::user_id(p.user_id)?;
        validate::non_negative("level", p.level.into())?;
        validate::non_negative("xp", p.xp)?;
        if expected < 0 {
            return Err(Error::invalid("expected_version", Violation::Negative));
        }
        self.ex
            .run(
                "progression.set_if_version",
                Mode::Write,
                |c| sqlite::progression::set_if_version(c, p, expected),
                async |pg| postgres::progression::set_if_version(pg, p, expected).await,
            )
            .await?
            .ok_or(Error::Conflict(UniqueKey::ProgressionVersion))
    }

    /// Inserts or replaces level and xp; the last call wins (see
    /// [`ProgressionRepo::set_if_version`]). Adds one to the version.
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
