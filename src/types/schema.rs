//! The schema of a live database, read from its catalog, in one shape for
//! both dialects.
//!
//! [`read_schema`](crate::read_schema) reads tables (columns with type, type class, nullability
//! and default; primary key; unique constraints; foreign keys with their
//! delete and update rules; CHECK constraints; table options) plus indexes,
//! views and triggers. SQLite: `sqlite_schema` and the `pragma_*` table-valued
//! functions; CHECK constraints and `AUTOINCREMENT` are read from the stored
//! `CREATE TABLE` text, since SQLite keeps them nowhere else. PostgreSQL:
//! `pg_catalog`, limited to the connection's `current_schema()`.
//!
//! Names (declared types, CHECK texts, index definitions) are as each
//! dialect's catalog spells them, so two schemas of the *same* dialect compare
//! exactly ([`verify`](crate::verify()) does that); across dialects compare the
//! dialect-neutral parts ([`Column::class`], keys, foreign keys).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A column type reduced to what both dialects share.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum TypeClass {
    /// Integers of any width (`INTEGER`, `BIGINT`, `smallint`, ...).
    Integer,
    /// Character strings (`TEXT`, `varchar`, ...).
    Text,
    /// Byte strings (`BLOB`, `bytea`).
    Bytes,
    /// Floating point (`REAL`, `double precision`, ...).
    Real,
    /// Anything else (see [`Column::declared_type`]).
    Other,
}

impl fmt::Display for TypeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TypeClass::Integer => "integer",
            TypeClass::Text => "text",
            TypeClass::Bytes => "bytes",
            TypeClass::Real => "real",
            TypeClass::Other => "other",
        })
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// The type as the catalog spells it: SQLite's declared type (upper-cased),
    /// PostgreSQL's `format_type` (`bigint`, `text`, ...).
    pub declared_type: String,
    /// The type class.
    pub class: TypeClass,
    /// Whether it accepts NULL. Primary-key columns count as NOT NULL on both
    /// dialects (PostgreSQL makes them so; in the crate's SQLite tables an
    /// `INTEGER PRIMARY KEY` is the rowid and the others are STRICT or
    /// declared NOT NULL).
    pub nullable: bool,
    /// The default expression, as the catalog prints it.
    pub default: Option<String>,
    /// PostgreSQL identity: `ALWAYS` or `BY DEFAULT`; `None` otherwise and on
    /// SQLite (see [`Table::options`] for `AUTOINCREMENT`).
    pub identity: Option<String>,
}

impl Column {
    /// `TYPE [NOT NULL] [DEFAULT x] [GENERATED ... AS IDENTITY]`, for messages.
    pub fn describe(&self) -> String {
        let mut s = self.declared_type.clone();
        if s.is_empty() {
            s.push_str("(no type)");
        }
        s.push_str(if self.nullable { " NULL" } else { " NOT NULL" });
        if let Some(d) = &self.default {
            s.push_str(" DEFAULT ");
            s.push_str(d);
        }
        if let Some(i) = &self.identity {
            s.push_str(" GENERATED ");
            s.push_str(i);
            s.push_str(" AS IDENTITY");
        }
        s
    }
}

/// A foreign key of a table.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ForeignKey {
    /// The referencing columns, in key order.
    pub columns: Vec<String>,
    /// The referenced table.
    pub references: String,
    /// The referenced columns, in key order.
    pub ref_columns: Vec<String>,
    /// `NO ACTION`, `RESTRICT`, `CASCADE`, `SET NULL` or `SET DEFAULT`.
    pub on_delete: String,
    /// As `on_delete`, for updates.
    pub on_update: String,
}

impl ForeignKey {
    /// `REFERENCES t (c) ON DELETE x ON UPDATE y`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "REFERENCES {} ({}) ON DELETE {} ON UPDATE {}",
            self.references,
            self.ref_columns.join(", "),
            self.on_delete,
            self.on_update
        )
    }
}

/// A CHECK constraint.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Check {
    /// Its name: PostgreSQL always has one (generated when not declared);
    /// SQLite only when declared with `CONSTRAINT name`.
    pub name: Option<String>,
    /// Its definition, normalised: SQLite: the `CHECK (...)` text with
    /// whitespace collapsed and unquoted words lower-cased; PostgreSQL:
    /// `pg_get_constraintdef`.
    pub definition: String,
}

/// An index that does not back a primary-key or unique constraint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Index {
    /// The indexed columns or expressions, in order (`DESC` appended where
    /// descending).
    pub columns: Vec<String>,
    /// A unique index.
    pub unique: bool,
    /// The `WHERE` predicate of a partial index, normalised.
    pub predicate: Option<String>,
}

impl Index {
    /// `[UNIQUE] (a, b) [WHERE p]`, for messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if self.unique {
            s.push_str("UNIQUE ");
        }
        s.push('(');
        s.push_str(&self.columns.join(", "));
        s.push(')');
        if let Some(p) = &self.predicate {
            s.push_str(" WHERE ");
            s.push_str(p);
        }
        s
    }
}

/// One table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    /// Its columns, in declaration order.
    pub columns: Vec<Column>,
    /// The primary-key columns, in key order; empty without a primary key.
    pub primary_key: Vec<String>,
    /// The column lists of its UNIQUE constraints.
    pub unique: BTreeSet<Vec<String>>,
    /// Its foreign keys.
    pub foreign_keys: BTreeSet<ForeignKey>,
    /// Its CHECK constraints.
    pub checks: BTreeSet<Check>,
    /// Its indexes other than those backing the primary key or a UNIQUE
    /// constraint, by name.
    pub indexes: BTreeMap<String, Index>,
    /// Storage options. SQLite: `STRICT`, `WITHOUT ROWID`, `AUTOINCREMENT`;
    /// PostgreSQL: `UNLOGGED`, `PARTITIONED`.
    pub options: BTreeSet<String>,
}

impl Table {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The schema of one database (SQLite: `main`; PostgreSQL: the connection's
/// `current_schema()`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    /// Tables by name, internal tables (`sqlite_*`) excluded.
    pub tables: BTreeMap<String, Table>,
    /// View names.
    pub views: BTreeSet<String>,
    /// Triggers, as `table.trigger`.
    pub triggers: BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions() {
        let c = Column {
            name: "xp".into(),
            declared_type: "BIGINT".into(),
            class: TypeClass::Integer,
            nullable: false,
            default: Some("0".into()),
            identity: None,
        };
        assert_eq!(c.describe(), "BIGINT NOT NULL DEFAULT 0");
        let i = Index {
            columns: vec!["a".into(), "b DESC".into()],
            unique: true,
            predicate: Some("a > 0".into()),
        };
        assert_eq!(i.describe(), "UNIQUE (a, b DESC) WHERE a > 0");
    }
}
