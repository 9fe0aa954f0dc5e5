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

// The crate's one `unsafe` block (the SQLite busy handler, D-035) carries a
// local `allow`; everything else is safe code.
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod backend;
mod config;
mod db;
mod error;
mod exec;
mod health;
mod keys;
mod migrate;
mod models;
pub mod observe;
mod postgres;
mod replicas;
mod repo;
mod sqlite;
mod tools;
mod tx;
mod types;
mod validate;

pub use backend::BackendKind;
pub use config::{
    Config, Durability, PasswordSource, Pooler, SslMode, SslRootCert, DEFAULT_DATABASE_URL,
};
pub use db::{open, DatabaseSize, Db};
pub use error::{
    BoxError, CopyRefusal, DatabaseError, Entity, Error, Result, UniqueKey, Violation,
};
pub use health::{Health, HealthError, DEFAULT_HEALTH_DEADLINE};
pub use keys::canonical_key;
pub use migrate::{
    AppliedMigration, Migration, MigrationReport, MigrationState, MigrationStatus, Migrations,
    NO_TRANSACTION,
};
pub use models::{
    Account, ArmyAbilities, BattleEnd, BattleResult, Items, Loadout, NewAccount, Page,
    PieceAbilities, Progression, Session, SessionCursor, SessionId, Unlock, UserId, Versioned,
};
pub use repo::{
    AccountsRepo, BattlesRepo, LoadoutsRepo, ProgressionRepo, SessionsRepo, UnlocksRepo,
    MAX_PAGE_SIZE,
};
pub use sqlite::sqlite_page_cache_per_connection;
pub use tools::checksum::content_checksum;
pub use tools::compare::compare;
pub use tools::copy::{copy, open_copy_source};
pub use tools::introspect::read_schema;
pub use tools::verify::{embedded_schema, verify, verify_with};
pub use tx::Tx;
pub use types::copy::{ContentChecksum, CopyEvent, CopyOptions, CopyReport, TableChecksum};
pub use types::replica::{Position, ReplicaState, ReplicaStats, ReplicaStatus};
pub use types::schema::{Check, Column, ForeignKey, Index, Schema, Table, TypeClass};
pub use types::verify::{Difference, DifferenceKind, ExpectedSchema, VerifyReport};
