//! The `army_loadouts` repository.

use crate::error::{Error, Result, UniqueKey, Violation};
use crate::exec::{Exec, Mode};
use crate::models::{Loadout, UserId, Versioned};
use crate::validate;
use crate::{postgres, sqlite};

/// `army_loadouts`: the whole loadout is read and saved at once.
#[derive(Clone, Copy)]
pub struct LoadoutsRepo<'a> {
    ex: Exec<'a>,
}

impl std::fmt::Debug for LoadoutsRepo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadoutsRepo").finish_non_exhaustive()
    }
}

impl<'a> LoadoutsRepo<'a> {
    pub(super) fn new(ex: Exec<'a>) -> Self {
        LoadoutsRepo { ex }
    }
}

impl LoadoutsRepo<'_> {
    /// A user's loadout.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1.
    pub async fn get(&self, user: UserId) -> Result<Loadout> {
        self.get_versioned(user).await.map(|v| v.value)
    }

    /// A user's loadout with its version, for
    /// [`LoadoutsRepo::save_if_version`].
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1.
    pub async fn get_versioned(&self, user: UserId) -> Result<Versioned<Loadout>> {
        validate::user_id(user)?;
        let (value, version) = self
            .ex
            .run(
                "loadouts.get",
                Mode::Read,
                |c| sqlite::loadouts::get(c, user),
                async |p| postgres::loadouts::get(p, user).await,
            )
            .await?;
        Ok(Versioned { value, version })
    }

    /// Saves the whole loadout only if nobody saved it since the caller read
    /// version `expected` (0: only if the user has no loadout yet), in one
    /// statement; returns the new version. Of several saves expecting the
    /// same version, exactly one wins.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict)`(`[`UniqueKey::LoadoutVersion`](crate::UniqueKey::LoadoutVersion)`)` when the stored
    /// version is not `expected` (or the loadout was deleted; or, for 0,
    /// exists): nothing changed, read it again; [`Error::UnknownUser`](crate::Error::UnknownUser);
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) as [`LoadoutsRepo::save`], or a negative
    /// `expected`.
    pub async fn save_if_version(&self, loadout: &Loadout, expected: i64) -> Result<i64> {
        validate::loadout(loadout)?;
        if expected < 0 {
            return Err(Error::invalid("expected_version", Violation::Negative));
        }
        self.ex
            .run(
                "loadouts.save_if_version",
                Mode::Write,
                |c| sqlite::loadouts::save_if_version(c, loadout, expected),
                async |p| postgres::loadouts::save_if_version(p, loadout, expected).await,
            )
            .await?
            .ok_or(Error::Conflict(UniqueKey::LoadoutVersion))
    }

    /// Inserts or replaces the whole loadout, with its `updated_at`; the last
    /// save wins (use [`LoadoutsRepo::save_if_version`] to detect a save in
    /// between). Adds one to the version.
    ///
    /// # Errors
    /// [`Error::UnknownUser`](crate::Error::UnknownUser); [`Error::InvalidInput`](crate::Error::InvalidInput) for a negative id in
    /// any slot or a timestamp out of range.
    pub async fn save(&self, loadout: &Loadout) -> Result<()> {
        validate::loadout(loadout)?;
        self.ex
            .run(
                "loadouts.save",
                Mode::Write,
                |c| sqlite::loadouts::save(c, loadout),
                async |p| postgres::loadouts::save(p, loadout).await,
            )
            .await
    }

    /// Deletes a user's loadout.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1.
    pub async fn delete(&self, user: UserId) -> Result<()> {
        validate::user_id(user)?;
        self.ex
            .run(
                "loadouts.delete",
                Mode::Write,
                |c| sqlite::loadouts::delete(c, user),
                async |p| postgres::loadouts::delete(p, user).await,
            )
            .await
    }
}
