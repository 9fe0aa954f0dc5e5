//! `persist`: the persistence layer of the game server.
//!
//! Schema, migrations and CRUD-only repositories for accounts, sessions, army
//! loadouts, progression and unlock flags, on SQLite (development, tests, the
//! embedded default) and PostgreSQL (production). The backend is chosen once,
//! at run time, from the database URL; everything below [`Db`] is the same API
//! on both.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> persist::Result<()> {
//! use persist::{Config, NewAccount};
//!
//! let db = persist::open(&Config::from_url("sqlite::memory:")?).await?;
//! db.migrate().await?;
//!
//! let account = db
//!     .accounts()
//!     .create(&NewAccount {
//!         email: "ada@example.com",
//!         username: "Ada",
//!         pass_hash: b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
//!         created_at: 1_700_000_000,
//!     })
//!     .await?;
//! // Lookups go through the canonical, case-insensitive key.
//! let found = db.accounts().find_by_username("ADA").await?;
//! assert_eq!(found.user_id, account.user_id);
//!
//! let err = db.accounts().find_by_email("nobody@example.com").await.unwrap_err();
//! assert!(err.is_not_found());
//! db.close().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod config;
mod copy;
mod db;
pub mod demo;
mod error;
mod introspect;
mod keys;
mod migrate;
mod models;
mod postgres;
mod repos;
mod sqlite;
mod tx;
mod validate;
mod verify;

pub use config::{
    BackendKind, Config, Durability, PasswordSource, SslMode, SslRootCert, DEFAULT_DATABASE_URL,
};
pub use copy::{
    content_checksum, copy, open_copy_source, ContentChecksum, CopyEvent, CopyOptions, CopyRefusal,
    CopyReport, TableChecksum, COPY_TABLES,
};
pub use db::{open, Db};
pub use error::{Entity, Error, Result, UniqueKey, Violation};
pub use introspect::{read_schema, Check, Column, ForeignKey, Index, Schema, Table, TypeClass};
pub use keys::canonical_key;
pub use migrate::{
    Dialect, Migration, MigrationReport, MigrationState, MigrationStatus, Migrations,
};
pub use models::{
    Account, ArmyAbilities, Items, Loadout, NewAccount, PieceAbilities, Progression, Session,
    SessionId, Unlock, UserId,
};
pub use repos::{Accounts, Loadouts, ProgressionRepo, Sessions, Unlocks};
pub use tx::Tx;
pub use verify::{compare, verify, Difference, DifferenceKind, VerifyReport};
