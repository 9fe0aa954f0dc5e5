//! The `army_loadouts` repository.

use crate::error::Result;
use crate::exec::{Exec, Mode};
use crate::models::{Loadout, UserId};
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
        validate::user_id(user)?;
        self.ex
            .run(
                "loadouts.get",
                Mode::Read,
                |c| sqlite::loadouts::get(c, user),
                async |p| postgres::loadouts::get(p, user).await,
            )
            .await
    }

    /// Inserts or replaces the whole loadout, with its `updated_at`.
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
