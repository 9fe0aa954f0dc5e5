//! The five repositories: input rules, then one call into the backend's
//! SQL through [`Exec::run`](crate::exec::Exec).
//!
//! A repository is a short-lived view over either the pool ([`Db`]) or a
//! unit of work ([`Tx`]); the same methods serve both.

mod accounts;
mod battles;
mod loadouts;
mod progression;
mod sessions;
mod unlocks;

pub use accounts::AccountsRepo;
pub use battles::BattlesRepo;
pub use loadouts::LoadoutsRepo;
pub use progression::ProgressionRepo;
pub use sessions::SessionsRepo;
pub use unlocks::UnlocksRepo;

/// Most items one page of a paginated list holds.
pub const MAX_PAGE_SIZE: u32 = 1000;

use crate::db::Db;
use crate::error::{Error, Result, Violation};
use crate::exec::Exec;
use crate::models::Page;
use crate::tx::Tx;

/// Checks a page size; returns how many rows to read (one more than the
/// page, to tell whether another page follows).
fn page_rows(limit: u32) -> Result<i64> {
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            Violation::OutOfRange {
                min: 1,
                max: MAX_PAGE_SIZE.into(),
            },
        ));
    }
    Ok(i64::from(limit) + 1)
}

/// A page of at most `limit` of `rows` (read with [`page_rows`]); `next` is
/// the cursor of its last item when more rows follow.
fn page<T, C>(mut rows: Vec<T>, limit: u32, cursor: impl Fn(&T) -> C) -> Page<T, C> {
    let limit = limit as usize;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor)
    } else {
        None
    };
    Page { items: rows, next }
}

impl Db {
    /// The accounts repository.
    pub fn accounts(&self) -> AccountsRepo<'_> {
        AccountsRepo::new(Exec::Db(self))
    }
    /// The sessions repository.
    pub fn sessions(&self) -> SessionsRepo<'_> {
        SessionsRepo::new(Exec::Db(self))
    }
    /// The loadouts repository.
    pub fn loadouts(&self) -> LoadoutsRepo<'_> {
        LoadoutsRepo::new(Exec::Db(self))
    }
    /// The progression repository.
    pub fn progression(&self) -> ProgressionRepo<'_> {
        ProgressionRepo::new(Exec::Db(self))
    }
    /// The unlocks repository.
    pub fn unlocks(&self) -> UnlocksRepo<'_> {
        UnlocksRepo::new(Exec::Db(self))
    }
    /// The battle results repository (exactly-once battle ends).
    pub fn battles(&self) -> BattlesRepo<'_> {
        BattlesRepo::new(Exec::Db(self))
    }
}

impl Tx {
    /// The accounts repository, inside this unit of work.
    pub fn accounts(&self) -> AccountsRepo<'_> {
        AccountsRepo::new(self.exec())
    }
    /// The sessions repository, inside this unit of work.
    pub fn sessions(&self) -> SessionsRepo<'_> {
        SessionsRepo::new(self.exec())
    }
    /// The loadouts repository, inside this unit of work.
    pub fn loadouts(&self) -> LoadoutsRepo<'_> {
        LoadoutsRepo::new(self.exec())
    }
    /// The progression repository, inside this unit of work.
    pub fn progression(&self) -> ProgressionRepo<'_> {
        ProgressionRepo::new(self.exec())
    }
    /// The unlocks repository, inside this unit of work.
    pub fn unlocks(&self) -> UnlocksRepo<'_> {
        UnlocksRepo::new(self.exec())
    }
    /// The battle results repository, inside this unit of work.
    pub fn battles(&self) -> BattlesRepo<'_> {
        BattlesRepo::new(self.exec())
    }
}

#[cfg(test)]
mod tests {
    use crate::models::{Loadout, UserId};

    fn assert_send<T: Send>(_: &T) {}

    /// Repository futures can be spawned on a multi-threaded runtime, on the
    /// pool and inside a unit of work.
    #[tokio::test(flavor = "current_thread")]
    async fn repository_futures_are_send() {
        let db = crate::open(&crate::Config::from_url("sqlite::memory:").unwrap())
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let loadout = Loadout::empty(UserId(1), 1_700_000_000);
        let (accounts, loadouts) = (db.accounts(), db.loadouts());
        let (get, save) = (accounts.get(UserId(1)), loadouts.save(&loadout));
        assert_send(&get);
        assert_send(&save);
        assert!(get.await.unwrap_err().is_not_found());
        drop(save);
        let tx = db.begin().await.unwrap();
        let progression = tx.progression();
        let in_tx = progression.add_xp(UserId(1), 5);
        assert_send(&in_tx);
        assert!(in_tx.await.unwrap_err().is_not_found());
        db.close().await;
    }
}
