//! How a repository statement goes to the server: the connection a
//! repository call gets ([`Client`]) and the typed parameters it binds
//! ([`Param`]).
//!
//! Two statement styles, chosen per pool by [`crate::Pooler`]:
//! - **prepared** (direct and session-pooled connections, the default): each
//!   statement text is prepared once per connection under a name and
//!   cached; later calls only bind and execute it (one round trip, no parse
//!   or plan on the server once the plan is cached);
//! - **unnamed** (behind a transaction pooler, where consecutive
//!   transactions may run on different server connections, so a named
//!   statement prepared on one is unknown on the next): Parse, Bind,
//!   Describe, Execute and Sync of the unnamed statement in one message
//!   batch, one round trip, with the parameter types sent along (each
//!   [`Param`] knows its own), so nothing outlives the statement.

use deadpool_postgres::ClientWrapper;
use futures_util::TryStreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error as PgError, Row};

use super::secret::Redacted;

/// A statement parameter that knows its PostgreSQL type, so that a statement
/// can be sent unnamed without asking the server for its parameter types.
pub(crate) trait Param: ToSql + Sync {
    /// The type the parameter is sent as.
    fn pg_type(&self) -> Type;
    /// The parameter as the driver binds it.
    fn as_sql(&self) -> &(dyn ToSql + Sync);
}

/// A Rust type with one PostgreSQL type.
pub(crate) trait Typed {
    /// Its PostgreSQL type.
    fn ty() -> Type;
}

impl<T: Typed + ToSql + Sync> Param for T {
    fn pg_type(&self) -> Type {
        T::ty()
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

macro_rules! typed {
    ($($t:ty => $pg:ident),* $(,)?) => {
        $(impl Typed for $t {
            fn ty() -> Type {
                Type::$pg
            }
        })*
    };
}

typed! {
    bool => BOOL,
    i16 => INT2,
    i32 => INT4,
    i64 => INT8,
    &str => TEXT,
    String => TEXT,
    &[u8] => BYTEA,
    Vec<u8> => BYTEA,
    &[i16] => INT2_ARRAY,
    Vec<i16> => INT2_ARRAY,
    &[i32] => INT4_ARRAY,
    Vec<i32> => INT4_ARRAY,
    &[i64] => INT8_ARRAY,
    Vec<i64> => INT8_ARRAY,
    Vec<Vec<u8>> => BYTEA_ARRAY,
    &[&[u8]] => BYTEA_ARRAY,
    Vec<&[u8]> => BYTEA_ARRAY,
}

impl<T: Typed> Typed for Option<T> {
    fn ty() -> Type {
        T::ty()
    }
}

impl<T: Typed> Typed for Redacted<T> {
    fn ty() -> Type {
        T::ty()
    }
}

/// One connection as a repository call sees it: the driver's client and the
/// statement style of its pool (see the module docs).
#[derive(Clone, Copy)]
pub(crate) struct Client<'a> {
    raw: &'a ClientWrapper,
    unnamed: bool,
}

impl<'a> Client<'a> {
    /// `raw` with unnamed statements (`unnamed`) or cached prepared ones.
    pub(crate) fn new(raw: &'a ClientWrapper, unnamed: bool) -> Self {
        Client { raw, unnamed }
    }

    /// The driver's client (statements of the simple protocol).
    pub(crate) fn raw(&self) -> &'a ClientWrapper {
        self.raw
    }

    /// Runs `sql` and returns its rows.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> Result<Vec<Row>, PgError> {
        if self.unnamed {
            let typed: Vec<_> = params.iter().map(|p| (p.as_sql(), p.pg_type())).collect();
            self.raw.query_typed(sql, &typed).await
        } else {
            let st = self.raw.prepare_cached(sql).await?;
            let plain: Vec<_> = params.iter().map(|p| p.as_sql()).collect();
            self.raw.query(&st, &plain).await
        }
    }

    /// Runs `sql`, which returns at most one row.
    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> Result<Option<Row>, PgError> {
        if self.unnamed {
            let typed: Vec<_> = params.iter().map(|p| (p.as_sql(), p.pg_type())).collect();
            self.raw.query_typed_opt(sql, &typed).await
        } else {
            let st = self.raw.prepare_cached(sql).await?;
            let plain: Vec<_> = params.iter().map(|p| p.as_sql()).collect();
            self.raw.query_opt(&st, &plain).await
        }
    }

    /// Runs `sql`, which returns exactly one row.
    pub(crate) async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
        if self.unnamed {
            let typed: Vec<_> = params.iter().map(|p| (p.as_sql(), p.pg_type())).collect();
            self.raw.query_typed_one(sql, &typed).await
        } else {
            let st = self.raw.prepare_cached(sql).await?;
            let plain: Vec<_> = params.iter().map(|p| p.as_sql()).collect();
            self.raw.query_one(&st, &plain).await
        }
    }

    /// Runs `sql` and returns the number of rows it changed.
    pub(crate) async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
        if self.unnamed {
            let typed = params.iter().map(|p| (p.as_sql(), p.pg_type()));
            let rows = self.raw.query_typed_raw(sql, typed).await?;
            let mut rows = std::pin::pin!(rows);
            while rows.try_next().await?.is_some() {}
            Ok(rows.rows_affected().unwrap_or(0))
        } else {
            let st = self.raw.prepare_cached(sql).await?;
            let plain: Vec<_> = params.iter().map(|p| p.as_sql()).collect();
            self.raw.execute(&st, &plain).await
        }
    }
}
