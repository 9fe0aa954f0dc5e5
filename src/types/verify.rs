//! What `verify` reports: each difference between the expected and the live
//! schema, and the integrity findings.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::backend::BackendKind;

/// Where [`verify_with`](crate::verify_with) takes the expected PostgreSQL
/// schema from. SQLite always builds it in a private in-memory database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedSchema {
    /// The description embedded in this binary at build time
    /// ([`embedded_schema`](crate::embedded_schema)), which a test proves equal
    /// to what the migrations build. Reads only: works on a hot standby and
    /// without the `CREATE` privilege. The default.
    #[default]
    Embedded,
    /// Built now by migrating a scratch schema `persist_verify_<random>` in
    /// the live database, then dropped: needs the `CREATE` privilege and a
    /// writable server.
    Scratch,
}

/// What kind of difference a [`Difference`] is. "Missing": the migrations
/// create it and the live database lacks it; "extra": the reverse;
/// "changed": both have it, differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DifferenceKind {
    /// A table is missing.
    MissingTable,
    /// A table is extra.
    ExtraTable,
    /// A column is missing.
    MissingColumn,
    /// A column is extra.
    ExtraColumn,
    /// A column's type, nullability, default or identity differs.
    ChangedColumn,
    /// The table has no primary key.
    MissingPrimaryKey,
    /// The table has a primary key it should not have.
    ExtraPrimaryKey,
    /// The primary key's columns differ.
    ChangedPrimaryKey,
    /// A UNIQUE constraint is missing.
    MissingUnique,
    /// A UNIQUE constraint is extra.
    ExtraUnique,
    /// A foreign key (columns, referenced table and columns, rules) is missing.
    MissingForeignKey,
    /// A foreign key is extra.
    ExtraForeignKey,
    /// A CHECK constraint (by name where the dialect keeps one, and
    /// definition) is missing.
    MissingCheck,
    /// A CHECK constraint is extra.
    ExtraCheck,
    /// An index is missing.
    MissingIndex,
    /// An index is extra.
    ExtraIndex,
    /// An index of that name has other columns, uniqueness or predicate.
    ChangedIndex,
    /// A table option (`STRICT`, `WITHOUT ROWID`, `AUTOINCREMENT`,
    /// `UNLOGGED`, ...) is missing.
    MissingTableOption,
    /// A table option is extra.
    ExtraTableOption,
    /// A view is missing.
    MissingView,
    /// A view is extra.
    ExtraView,
    /// A trigger is missing.
    MissingTrigger,
    /// A trigger is extra.
    ExtraTrigger,
}

impl DifferenceKind {
    /// The snake-case name used in text and JSON output.
    pub fn as_str(&self) -> &'static str {
        match self {
            DifferenceKind::MissingTable => "missing_table",
            DifferenceKind::ExtraTable => "extra_table",
            DifferenceKind::MissingColumn => "missing_column",
            DifferenceKind::ExtraColumn => "extra_column",
            DifferenceKind::ChangedColumn => "changed_column",
            DifferenceKind::MissingPrimaryKey => "missing_primary_key",
            DifferenceKind::ExtraPrimaryKey => "extra_primary_key",
            DifferenceKind::ChangedPrimaryKey => "changed_primary_key",
            DifferenceKind::MissingUnique => "missing_unique",
            DifferenceKind::ExtraUnique => "extra_unique",
            DifferenceKind::MissingForeignKey => "missing_foreign_key",
            DifferenceKind::ExtraForeignKey => "extra_foreign_key",
            DifferenceKind::MissingCheck => "missing_check",
            DifferenceKind::ExtraCheck => "extra_check",
            DifferenceKind::MissingIndex => "missing_index",
            DifferenceKind::ExtraIndex => "extra_index",
            DifferenceKind::ChangedIndex => "changed_index",
            DifferenceKind::MissingTableOption => "missing_table_option",
            DifferenceKind::ExtraTableOption => "extra_table_option",
            DifferenceKind::MissingView => "missing_view",
            DifferenceKind::ExtraView => "extra_view",
            DifferenceKind::MissingTrigger => "missing_trigger",
            DifferenceKind::ExtraTrigger => "extra_trigger",
        }
    }
}

impl fmt::Display for DifferenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One difference between the expected and the live schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What kind of difference.
    pub kind: DifferenceKind,
    /// The object: `table`, `table.column`, `table.index`, `table(col, ...)`.
    pub object: String,
    /// Expected and/or found, for a person.
    pub detail: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.object, self.detail)
    }
}

/// The outcome of [`verify`](crate::verify()).
///
/// # JSON
///
/// [`VerifyReport::to_json`] (what `persist verify --json` prints) is one
/// object with exactly these fields (serde_json prints the keys sorted):
///
/// | field | type | meaning |
/// |---|---|---|
/// | `ok` | bool | true when there is no difference, `integrity_check` is `"ok"` or null, and `foreign_key_violations` is 0 or null |
/// | `backend` | string | `"sqlite"` or `"postgres"` |
/// | `database` | string | the database URL, password replaced by `***` |
/// | `differences` | array | one object per difference, in a stable order (tables by name, then views, triggers) |
/// | `differences[].kind` | string | a [`DifferenceKind`] in snake case: `missing_table`, `extra_column`, `changed_index`, ... |
/// | `differences[].object` | string | `table`, `table.column`, `table.index`, `table.constraint`, `table(col, ...)` |
/// | `differences[].detail` | string | what was expected and/or found, for a person |
/// | `integrity_check` | string or null | SQLite: `"ok"`, or the problems `PRAGMA integrity_check` reported, one per line; PostgreSQL: null |
/// | `foreign_key_violations` | integer or null | SQLite: rows `PRAGMA foreign_key_check` reported; PostgreSQL: null (the server enforces foreign keys) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The backend verified.
    pub backend: BackendKind,
    /// The database URL, password replaced by `***`.
    pub database: String,
    /// Every difference, in a stable order; empty when the schema matches.
    pub differences: Vec<Difference>,
    /// SQLite: the rows of `PRAGMA integrity_check` (`["ok"]` when sound).
    /// `None` on PostgreSQL.
    pub integrity_check: Option<Vec<String>>,
    /// SQLite: rows reported by `PRAGMA foreign_key_check`, per table (empty
    /// when none). `None` on PostgreSQL.
    pub foreign_key_violations: Option<BTreeMap<String, u64>>,
}

impl VerifyReport {
    /// True when the schema matches and the integrity checks found nothing.
    pub fn is_ok(&self) -> bool {
        self.differences.is_empty()
            && self.integrity_ok()
            && self.foreign_key_violation_count() == 0
    }

    /// True unless `PRAGMA integrity_check` reported a problem.
    pub fn integrity_ok(&self) -> bool {
        match &self.integrity_check {
            None => true,
            Some(rows) => rows.len() == 1 && rows[0] == "ok",
        }
    }

    /// Total rows reported by `PRAGMA foreign_key_check` (0 on PostgreSQL).
    pub fn foreign_key_violation_count(&self) -> u64 {
        self.foreign_key_violations
            .as_ref()
            .map_or(0, |m| m.values().sum())
    }

    /// The report as the JSON value documented on [`VerifyReport`].
    pub fn to_json_value(&self) -> Value {
        let mut o = Map::new();
        o.insert("ok".into(), Value::Bool(self.is_ok()));
        o.insert("backend".into(), Value::String(self.backend.to_string()));
        o.insert("database".into(), Value::String(self.database.clone()));
        o.insert(
            "differences".into(),
            Value::Array(
                self.differences
                    .iter()
                    .map(|d| {
                        let mut m = Map::new();
                        m.insert("kind".into(), Value::String(d.kind.as_str().into()));
                        m.insert("object".into(), Value::String(d.object.clone()));
                        m.insert("detail".into(), Value::String(d.detail.clone()));
                        Value::Object(m)
                    })
                    .collect(),
            ),
        );
        o.insert(
            "integrity_check".into(),
            match &self.integrity_check {
                None => Value::Null,
                Some(rows) => Value::String(rows.join("\n")),
            },
        );
        o.insert(
            "foreign_key_violations".into(),
            match &self.foreign_key_violations {
                None => Value::Null,
                Some(_) => Value::from(self.foreign_key_violation_count()),
            },
        );
        Value::Object(o)
    }

    /// The report as one line of JSON (fields documented on [`VerifyReport`]).
    pub fn to_json(&self) -> String {
        self.to_json_value().to_string()
    }
}

impl Serialize for VerifyReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json_value().serialize(s)
    }
}
