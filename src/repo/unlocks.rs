//! The `user_unlocks` repository.

use crate::error::Result;
use crate::exec::{Exec, Mode};
use crate::models::{Page, Unlock, UserId};
use crate::validate;
use crate::{postgres, sqlite};

/// `user_unlocks`: unlock flags held by users.
#[derive(Clone, Copy)]
pub struct UnlocksRepo<'a> {
    ex: Exec<'a>,
}

impl std::fmt::Debug for UnlocksRepo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnlocksRepo").finish_non_exhaustive()
    }
}

impl<'a> UnlocksRepo<'a> {
    pub(super) fn new(ex: Exec<'a>) -> Self {
        UnlocksRepo { ex }
    }
}

impl UnlocksRepo<'_> {
    /// Grants a flag; granting one already held is not an error. Returns
    /// whether it was new.
    ///
    /// # Errors
    /// [`Error::UnknownUser`](crate::Error::UnknownUser); [`Error::InvalidInput`](crate::Error::InvalidInput) for a negative flag or a
    /// timestamp out of range.
    pub async fn grant(&self, user: UserId, flag_id: i32, at: i64) -> Result<bool> {
        validate::user_id(user)?;
        validate::non_negative("flag_id", flag_id.into())?;
        validate::timestamp("unlocked_at", at)?;
        self.ex
            .run(
                "unlocks.grant",
                Mode::Write,
                |c| sqlite::unlocks::grant(c, user, flag_id, at),
                async |p| postgres::unlocks::grant(p, user, flag_id, at).await,
            )
            .await
    }

    /// Grants several flags in one statement (one round trip, all or
    /// nothing). Returns the flags that were new, ascending.
    ///
    /// # Errors
    /// As [`UnlocksRepo::grant`]; nothing is granted on error.
    pub async fn grant_many(&self, user: UserId, flag_ids: &[i32], at: i64) -> Result<Vec<i32>> {
        validate::user_id(user)?;
        for f in flag_ids {
            validate::non_negative("flag_id", (*f).into())?;
        }
        validate::timestamp("unlocked_at", at)?;
        let mut flags = flag_ids.to_vec();
        flags.sort_unstable();
        flags.dedup();
        if flags.is_empty() {
            return Ok(Vec::new());
        }
        self.ex
            .run(
                "unlocks.grant_many",
                Mode::Write,
                |c| sqlite::unlocks::grant_many(c, user, &flags, at),
                async |p| postgres::unlocks::grant_many(p, user, &flags, at).await,
            )
            .await
    }

    /// Whether the user holds the flag.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a bad id or a negative flag.
    pub async fn has(&self, user: UserId, flag_id: i32) -> Result<bool> {
        validate::user_id(user)?;
        validate::non_negative("flag_id", flag_id.into())?;
        self.ex
            .run(
                "unlocks.has",
                Mode::Read,
                |c| sqlite::unlocks::has(c, user, flag_id),
                async |p| postgres::unlocks::has(p, user, flag_id).await,
            )
            .await
    }

    /// All of the user's flags in flag order (empty for an unknown user).
    /// Reads and returns every one: its cost grows with the number of flags
    /// the user holds. [`UnlocksRepo::list_page`] bounds it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1.
    pub async fn list(&self, user: UserId) -> Result<Vec<Unlock>> {
        validate::user_id(user)?;
        self.ex
            .run(
                "unlocks.list",
                Mode::Read,
                |c| sqlite::unlocks::list(c, user),
                async |p| postgres::unlocks::list(p, user).await,
            )
            .await
    }

    /// One page of the user's flags in flag order: at most `limit` flags
    /// above `after` (`None`: from the first). Keyset pagination over the
    /// primary key; `next` is the last flag of the page when more follow.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1, a negative `after` or a
    /// `limit` outside `1..=`[`MAX_PAGE_SIZE`](crate::MAX_PAGE_SIZE).
    pub async fn list_page(
        &self,
        user: UserId,
        after: Option<i32>,
        limit: u32,
    ) -> Result<Page<Unlock, i32>> {
        validate::user_id(user)?;
        let after = match after {
            Some(f) => {
                validate::non_negative("after", f.into())?;
                i64::from(f)
            }
            None => -1,
        };
        let rows = super::page_rows(limit)?;
        let flags = self
            .ex
            .run(
                "unlocks.list_page",
                Mode::Read,
                |c| sqlite::unlocks::list_page(c, user, after, rows),
                async |p| postgres::unlocks::list_page(p, user, after, rows).await,
            )
            .await?;
        Ok(super::page(flags, limit, |u: &Unlock| u.flag_id))
    }

    /// Revokes a flag.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) when the user does not hold it.
    pub async fn revoke(&self, user: UserId, flag_id: i32) -> Result<()> {
        validate::user_id(user)?;
        validate::non_negative("flag_id", flag_id.into())?;
        self.ex
            .run(
                "unlocks.revoke",
                Mode::Write,
                |c| sqlite::unlocks::revoke(c, user, flag_id),
                async |p| postgres::unlocks::revoke(p, user, flag_id).await,
            )
            .await
    }
}
