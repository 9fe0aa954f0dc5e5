//! The `accounts` repository.

use crate::error::Result;
use crate::exec::{Exec, Mode};
use crate::models::{Account, NewAccount, UserId};
use crate::validate::{self, EMAIL_MAX, KEY_MAX, PASS_HASH_MAX, USERNAME_MAX};
use crate::{postgres, sqlite};

/// `accounts`: create, read by id / email / username, update, delete.
#[derive(Clone, Copy)]
pub struct AccountsRepo<'a> {
    ex: Exec<'a>,
}

impl std::fmt::Debug for AccountsRepo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountsRepo").finish_non_exhaustive()
    }
}

impl<'a> AccountsRepo<'a> {
    pub(super) fn new(ex: Exec<'a>) -> Self {
        AccountsRepo { ex }
    }
}

impl AccountsRepo<'_> {
    /// Creates an account and returns it with its new `user_id`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an empty, over-long (counted on the NFC
    /// form, which is what is stored) or control-character email or
    /// username, one holding an invisible character
    /// ([`Violation::InvisibleCharacter`](crate::Violation::InvisibleCharacter)),
    /// an empty or over-long hash, or a timestamp out of range;
    /// [`Error::Conflict`](crate::Error::Conflict) naming [`UniqueKey::Email`](crate::UniqueKey::Email)
    /// or [`UniqueKey::Username`](crate::UniqueKey::Username) when the
    /// canonical key is taken (email is reported when both are).
    pub async fn create(&self, a: &NewAccount<'_>) -> Result<Account> {
        let email = validate::stored_text("email", a.email, EMAIL_MAX)?;
        let username = validate::stored_text("username", a.username, USERNAME_MAX)?;
        validate::bytes("pass_hash", a.pass_hash, PASS_HASH_MAX)?;
        validate::timestamp("created_at", a.created_at)?;
        let (email_key, username_key) = (&email.key, &username.key);
        let a = &NewAccount {
            email: &email.display,
            username: &username.display,
            ..*a
        };
        self.ex
            .run(
                "accounts.create",
                Mode::Write,
                |c| sqlite::accounts::create(c, a, email_key, username_key),
                async |p| postgres::accounts::create(p, a, email_key, username_key).await,
            )
            .await
    }

    /// The account with this id.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1.
    pub async fn get(&self, id: UserId) -> Result<Account> {
        validate::user_id(id)?;
        self.ex
            .run(
                "accounts.get",
                Mode::Read,
                |c| sqlite::accounts::get(c, id),
                async |p| postgres::accounts::get(p, id).await,
            )
            .await
    }

    /// The account whose email has the same canonical key as `email`.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for input no account
    /// could have.
    pub async fn find_by_email(&self, email: &str) -> Result<Account> {
        let key = validate::keyed_text("email", email, KEY_MAX)?;
        self.ex
            .run(
                "accounts.find_by_email",
                Mode::Read,
                |c| sqlite::accounts::find_by_email_key(c, &key),
                async |p| postgres::accounts::find_by_email_key(p, &key).await,
            )
            .await
    }

    /// The account whose username has the same canonical key as `username`.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for input no account
    /// could have.
    pub async fn find_by_username(&self, username: &str) -> Result<Account> {
        let key = validate::keyed_text("username", username, KEY_MAX)?;
        self.ex
            .run(
                "accounts.find_by_username",
                Mode::Read,
                |c| sqlite::accounts::find_by_username_key(c, &key),
                async |p| postgres::accounts::find_by_username_key(p, &key).await,
            )
            .await
    }

    /// Stamps `last_login_at`.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for a bad id or timestamp.
    pub async fn update_last_login(&self, id: UserId, at: i64) -> Result<()> {
        validate::user_id(id)?;
        validate::timestamp("last_login_at", at)?;
        self.ex
            .run(
                "accounts.update_last_login",
                Mode::Write,
                |c| sqlite::accounts::touch_login(c, id, at),
                async |p| postgres::accounts::touch_login(p, id, at).await,
            )
            .await
    }

    /// Replaces the password hash.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for an empty or over-long
    /// hash.
    pub async fn update_pass_hash(&self, id: UserId, pass_hash: &[u8]) -> Result<()> {
        validate::user_id(id)?;
        validate::bytes("pass_hash", pass_hash, PASS_HASH_MAX)?;
        self.ex
            .run(
                "accounts.update_pass_hash",
                Mode::Write,
                |c| sqlite::accounts::update_pass_hash(c, id, pass_hash),
                async |p| postgres::accounts::update_pass_hash(p, id, pass_hash).await,
            )
            .await
    }

    /// Changes the email (display form, stored NFC, and canonical key).
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::Conflict`](crate::Error::Conflict)`(Email)` when another account
    /// has the key (changing only the case of one's own email is allowed);
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) under the rules of [`AccountsRepo::create`].
    pub async fn update_email(&self, id: UserId, email: &str) -> Result<()> {
        validate::user_id(id)?;
        let validate::Stored { display, key } = validate::stored_text("email", email, EMAIL_MAX)?;
        let email = display.as_str();
        self.ex
            .run(
                "accounts.update_email",
                Mode::Write,
                |c| sqlite::accounts::update_email(c, id, email, &key),
                async |p| postgres::accounts::update_email(p, id, email, &key).await,
            )
            .await
    }

    /// Changes the username (display form, stored NFC, and canonical key).
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::Conflict`](crate::Error::Conflict)`(Username)` when another
    /// account has the key; [`Error::InvalidInput`](crate::Error::InvalidInput) under the rules of
    /// [`AccountsRepo::create`].
    pub async fn update_username(&self, id: UserId, username: &str) -> Result<()> {
        validate::user_id(id)?;
        let validate::Stored { display, key } =
            validate::stored_text("username", username, USERNAME_MAX)?;
        let username = display.as_str();
        self.ex
            .run(
                "accounts.update_username",
                Mode::Write,
                |c| sqlite::accounts::update_username(c, id, username, &key),
                async |p| postgres::accounts::update_username(p, id, username, &key).await,
            )
            .await
    }

    /// Deletes the account and, by foreign-key cascade, every row of that
    /// user in every table (sessions, loadout, progression, unlocks).
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::InvalidInput`](crate::Error::InvalidInput) for an id below 1.
    pub async fn delete(&self, id: UserId) -> Result<()> {
        validate::user_id(id)?;
        self.ex
            .run(
                "accounts.delete",
                Mode::Write,
                |c| sqlite::accounts::delete(c, id),
                async |p| postgres::accounts::delete(p, id).await,
            )
            .await
    }
}
