//! Schema verification: the live schema against what this binary's
//! migrations produce.
//!
//! [`verify`] builds the expected schema on a scratch database of the same
//! dialect, reads both catalogs ([`read_schema`](crate::read_schema)) and
//! lists every difference ([`compare`]). SQLite also runs
//! `PRAGMA integrity_check` and `PRAGMA foreign_key_check` on the live file.
//!
//! - SQLite: the scratch database is a private in-memory database, migrated
//!   with the embedded migrations.
//! - PostgreSQL: the scratch is a schema `persist_verify_<random>` created in
//!   the live database, migrated through its own connection whose
//!   `search_path` is that schema, read, then dropped (also when migrating or
//!   reading it fails; a future dropped mid-way drops it from a spawned task).
//!   The user needs the `CREATE` privilege on the database. Nothing outside
//!   the scratch schema is written.
//!
//! The JSON form is documented on [`VerifyReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{BackendKind, Config, Target};
use crate::db::{Backend, Db};
use crate::error::Result;
use crate::introspect::{read_schema, Schema, Table};
use crate::{postgres, sqlite};

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

/// The outcome of [`verify`].
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

/// Compares the live schema of `db` with what this binary's migrations
/// produce, and (SQLite) runs the integrity and foreign-key checks.
///
/// The expected schema is built on a scratch database of the same dialect:
/// SQLite: a private in-memory database; PostgreSQL: a schema
/// `persist_verify_<random>` created in the live database, migrated through
/// its own connection whose `search_path` is that schema, read, then dropped
/// (also when migrating or reading it fails; if the call is cancelled, from a
/// task spawned on the runtime). The user needs the `CREATE` privilege on the
/// database. Nothing outside the scratch schema is written.
///
/// # Errors
/// [`Error::Closed`](crate::Error::Closed),
/// [`Error::Unavailable`](crate::Error::Unavailable),
/// [`Error::Timeout`](crate::Error::Timeout) or a driver error when a catalog
/// cannot be read; on PostgreSQL also a driver error when the scratch schema
/// cannot be created (no `CREATE` privilege on the database) or migrated.
/// Differences are not errors: they are in the report.
pub async fn verify(db: &Db) -> Result<VerifyReport> {
    let database = db.config().redacted_url();
    match db.live()? {
        Backend::Sqlite(p) => {
            let live = p.read(sqlite::introspect::schema).await?;
            let expected = sqlite_expected().await?;
            let integrity = p.read(sqlite::introspect::integrity_check).await?;
            let fk = p.read(sqlite::introspect::foreign_key_violations).await?;
            Ok(VerifyReport {
                backend: BackendKind::Sqlite,
                database,
                differences: compare(&expected, &live),
                integrity_check: Some(integrity),
                foreign_key_violations: Some(fk),
            })
        }
        Backend::Postgres(p) => {
            let live = postgres::introspect::schema(&*p.get().await?).await?;
            let expected = postgres_expected(db.config(), p).await?;
            Ok(VerifyReport {
                backend: BackendKind::Postgres,
                database,
                differences: compare(&expected, &live),
                integrity_check: None,
                foreign_key_violations: None,
            })
        }
    }
}

async fn sqlite_expected() -> Result<Schema> {
    let scratch = crate::open(&Config::from_url("sqlite::memory:")?).await?;
    let result = async {
        scratch.migrate().await?;
        read_schema(&scratch).await
    }
    .await;
    scratch.close().await;
    result
}

/// Drops the scratch schema when dropped without [`Scratch::drop_now`]
/// (a cancelled `verify`), from a task on the current runtime.
struct Scratch {
    conn: Option<deadpool_postgres::Object>,
    name: String,
}

impl Scratch {
    async fn drop_now(mut self) -> Result<()> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        let dropped = postgres::introspect::drop_scratch(&conn, &self.name).await;
        if let Err(e) = &dropped {
            tracing::error!(schema = %self.name, error = %e,
                "could not drop the scratch schema of verify; drop it by hand");
        }
        dropped
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let name = std::mem::take(&mut self.name);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = postgres::introspect::drop_scratch(&conn, &name).await {
                        tracing::error!(schema = %name, error = %e,
                            "could not drop the scratch schema of verify; drop it by hand");
                    }
                });
            }
            Err(_) => tracing::error!(schema = %name,
                "verify was cancelled outside a runtime; drop its scratch schema by hand"),
        }
    }
}

async fn postgres_expected(config: &Config, pool: &postgres::Pool) -> Result<Schema> {
    let conn = pool.get().await?;
    let name = scratch_name();
    postgres::introspect::create_scratch(&conn, &name).await?;
    let scratch = Scratch {
        conn: Some(conn),
        name,
    };
    let result = async {
        let cfg = with_search_path(config, &scratch.name)?.with_pool_size(1);
        let db = crate::open(&cfg).await?;
        let r = async {
            db.migrate().await?;
            read_schema(&db).await
        }
        .await;
        db.close().await;
        r
    }
    .await;
    let dropped = scratch.drop_now().await;
    let schema = result?;
    dropped?;
    Ok(schema)
}

/// `config` with `search_path` set to `schema` in the startup options.
fn with_search_path(config: &Config, schema: &str) -> Result<Config> {
    let mut cfg = config.clone();
    let Target::Postgres(pg) = &mut cfg.target else {
        return Err(crate::Error::Config(
            "not a PostgreSQL configuration".into(),
        ));
    };
    let options = match pg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c search_path={schema}"),
        _ => format!("-c search_path={schema}"),
    };
    pg.options(&options);
    Ok(cfg)
}

/// `persist_verify_` and 16 hex characters, unique per call.
fn scratch_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(nanos.to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let digest = h.finalize();
    format!("persist_verify_{}", hex::encode(&digest[..8]))
}

fn cols(c: &[String]) -> String {
    format!("({})", c.join(", "))
}

/// Every difference between `expected` and `live`, in a stable order: tables
/// by name (for each: columns, primary key, unique constraints, foreign keys,
/// checks, indexes, options), then views, then triggers. A missing or extra
/// table is one difference; its contents are not listed again.
pub fn compare(expected: &Schema, live: &Schema) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut push = |kind, object: String, detail: String| {
        out.push(Difference {
            kind,
            object,
            detail,
        })
    };
    let names: BTreeSet<&String> = expected.tables.keys().chain(live.tables.keys()).collect();
    for name in names {
        match (expected.tables.get(name), live.tables.get(name)) {
            (Some(e), Some(l)) => compare_table(name, e, l, &mut push),
            (Some(e), None) => push(
                DifferenceKind::MissingTable,
                name.clone(),
                format!("table with {} column(s) does not exist", e.columns.len()),
            ),
            (None, Some(l)) => push(
                DifferenceKind::ExtraTable,
                name.clone(),
                format!(
                    "table not created by the migrations, columns {}",
                    cols(&l.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
                ),
            ),
            (None, None) => {}
        }
    }
    for v in expected.views.difference(&live.views) {
        push(
            DifferenceKind::MissingView,
            v.clone(),
            "view does not exist".into(),
        );
    }
    for v in live.views.difference(&expected.views) {
        push(
            DifferenceKind::ExtraView,
            v.clone(),
            "view not created by the migrations".into(),
        );
    }
    for t in expected.triggers.difference(&live.triggers) {
        push(
            DifferenceKind::MissingTrigger,
            t.clone(),
            "trigger does not exist".into(),
        );
    }
    for t in live.triggers.difference(&expected.triggers) {
        push(
            DifferenceKind::ExtraTrigger,
            t.clone(),
            "trigger not created by the migrations".into(),
        );
    }
    out
}

fn compare_table(
    table: &str,
    e: &Table,
    l: &Table,
    push: &mut impl FnMut(DifferenceKind, String, String),
) {
    use DifferenceKind as K;
    for ec in &e.columns {
        let object = format!("{table}.{}", ec.name);
        match l.column(&ec.name) {
            None => push(
                K::MissingColumn,
                object,
                format!("expected {}", ec.describe()),
            ),
            Some(lc) => {
                let mut what = Vec::new();
                if ec.declared_type != lc.declared_type || ec.class != lc.class {
                    what.push(format!(
                        "type: expected {}, found {}",
                        ec.declared_type, lc.declared_type
                    ));
                }
                if ec.nullable != lc.nullable {
                    let n = |b: bool| if b { "NULL" } else { "NOT NULL" };
                    what.push(format!(
                        "nullability: expected {}, found {}",
                        n(ec.nullable),
                        n(lc.nullable)
                    ));
                }
                if ec.default != lc.default {
                    let d = |x: &Option<String>| x.clone().unwrap_or_else(|| "none".into());
                    what.push(format!(
                        "default: expected {}, found {}",
                        d(&ec.default),
                        d(&lc.default)
                    ));
                }
                if ec.identity != lc.identity {
                    let i = |x: &Option<String>| x.clone().unwrap_or_else(|| "none".into());
                    what.push(format!(
                        "identity: expected {}, found {}",
                        i(&ec.identity),
                        i(&lc.identity)
                    ));
                }
                if !what.is_empty() {
                    push(K::ChangedColumn, object, what.join("; "));
                }
            }
        }
    }
    for lc in &l.columns {
        if e.column(&lc.name).is_none() {
            push(
                K::ExtraColumn,
                format!("{table}.{}", lc.name),
                format!("found {}", lc.describe()),
            );
        }
    }

    match (e.primary_key.is_empty(), l.primary_key.is_empty()) {
        (true, true) => {}
        (false, true) => push(
            K::MissingPrimaryKey,
            table.to_string(),
            format!("expected PRIMARY KEY {}", cols(&e.primary_key)),
        ),
        (true, false) => push(
            K::ExtraPrimaryKey,
            table.to_string(),
            format!("found PRIMARY KEY {}", cols(&l.primary_key)),
        ),
        (false, false) if e.primary_key != l.primary_key => push(
            K::ChangedPrimaryKey,
            table.to_string(),
            format!(
                "expected PRIMARY KEY {}, found {}",
                cols(&e.primary_key),
                cols(&l.primary_key)
            ),
        ),
        _ => {}
    }

    for u in e.unique.difference(&l.unique) {
        push(
            K::MissingUnique,
            format!("{table}{}", cols(u)),
            format!("expected UNIQUE {}", cols(u)),
        );
    }
    for u in l.unique.difference(&e.unique) {
        push(
            K::ExtraUnique,
            format!("{table}{}", cols(u)),
            format!("found UNIQUE {}", cols(u)),
        );
    }

    for fk in e.foreign_keys.difference(&l.foreign_keys) {
        push(
            K::MissingForeignKey,
            format!("{table}{}", cols(&fk.columns)),
            format!("expected {}", fk.describe()),
        );
    }
    for fk in l.foreign_keys.difference(&e.foreign_keys) {
        push(
            K::ExtraForeignKey,
            format!("{table}{}", cols(&fk.columns)),
            format!("found {}", fk.describe()),
        );
    }

    let check_object = |c: &crate::introspect::Check| match &c.name {
        Some(n) => format!("{table}.{n}"),
        None => table.to_string(),
    };
    for c in e.checks.difference(&l.checks) {
        push(
            K::MissingCheck,
            check_object(c),
            format!("expected {}", c.definition),
        );
    }
    for c in l.checks.difference(&e.checks) {
        push(
            K::ExtraCheck,
            check_object(c),
            format!("found {}", c.definition),
        );
    }

    for (name, ei) in &e.indexes {
        let object = format!("{table}.{name}");
        match l.indexes.get(name) {
            None => push(
                K::MissingIndex,
                object,
                format!("expected index {}", ei.describe()),
            ),
            Some(li) if li != ei => push(
                K::ChangedIndex,
                object,
                format!("expected {}, found {}", ei.describe(), li.describe()),
            ),
            Some(_) => {}
        }
    }
    for (name, li) in &l.indexes {
        if !e.indexes.contains_key(name) {
            push(
                K::ExtraIndex,
                format!("{table}.{name}"),
                format!("found index {}", li.describe()),
            );
        }
    }

    for o in e.options.difference(&l.options) {
        push(
            K::MissingTableOption,
            table.to_string(),
            format!("expected {o}"),
        );
    }
    for o in l.options.difference(&e.options) {
        push(K::ExtraTableOption, table.to_string(), format!("found {o}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::{Check, Column, ForeignKey, Index, TypeClass};

    fn col(name: &str, ty: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            declared_type: ty.into(),
            class: crate::introspect::sqlite_class(ty),
            nullable,
            default: None,
            identity: None,
        }
    }

    fn sample() -> Schema {
        let mut s = Schema::default();
        let mut a = Table {
            columns: vec![col("id", "INTEGER", false), col("name", "TEXT", false)],
            primary_key: vec!["id".into()],
            ..Table::default()
        };
        a.unique.insert(vec!["name".into()]);
        a.options.insert("STRICT".into());
        s.tables.insert("a".into(), a);
        let mut b = Table {
            columns: vec![col("a_id", "INTEGER", false), col("n", "INTEGER", true)],
            ..Table::default()
        };
        b.foreign_keys.insert(ForeignKey {
            columns: vec!["a_id".into()],
            references: "a".into(),
            ref_columns: vec!["id".into()],
            on_delete: "CASCADE".into(),
            on_update: "NO ACTION".into(),
        });
        b.checks.insert(Check {
            name: None,
            definition: "CHECK (n >= 0)".into(),
        });
        b.indexes.insert(
            "b_n_idx".into(),
            Index {
                columns: vec!["n".into()],
                unique: false,
                predicate: None,
            },
        );
        s.tables.insert("b".into(), b);
        s
    }

    fn kinds(d: &[Difference]) -> Vec<(&'static str, &str)> {
        d.iter()
            .map(|d| (d.kind.as_str(), d.object.as_str()))
            .collect()
    }

    #[test]
    fn identical_schemas_have_no_difference() {
        assert!(compare(&sample(), &sample()).is_empty());
    }

    #[test]
    fn every_kind_of_edit_is_reported() {
        let expected = sample();
        let mut live = sample();
        live.tables.remove("a");
        live.tables.insert("zz".into(), Table::default());
        let b = live.tables.get_mut("b").unwrap();
        b.columns[1].nullable = false;
        b.columns.push(col("extra", "TEXT", true));
        b.columns.remove(0);
        b.foreign_keys.clear();
        b.checks.clear();
        b.checks.insert(Check {
            name: None,
            definition: "CHECK (n > 0)".into(),
        });
        b.indexes.get_mut("b_n_idx").unwrap().unique = true;
        b.indexes.insert(
            "b_x_idx".into(),
            Index {
                columns: vec!["extra".into()],
                unique: false,
                predicate: None,
            },
        );
        b.primary_key = vec!["n".into()];
        b.options.insert("WITHOUT ROWID".into());
        live.views.insert("v".into());
        let d = compare(&expected, &live);
        assert_eq!(
            kinds(&d),
            [
                ("missing_table", "a"),
                ("missing_column", "b.a_id"),
                ("changed_column", "b.n"),
                ("extra_column", "b.extra"),
                ("extra_primary_key", "b"),
                ("missing_foreign_key", "b(a_id)"),
                ("missing_check", "b"),
                ("extra_check", "b"),
                ("changed_index", "b.b_n_idx"),
                ("extra_index", "b.b_x_idx"),
                ("extra_table_option", "b"),
                ("extra_table", "zz"),
                ("extra_view", "v"),
            ]
        );
        assert_eq!(d[2].detail, "nullability: expected NULL, found NOT NULL");
        assert_eq!(
            d[5].detail,
            "expected REFERENCES a (id) ON DELETE CASCADE ON UPDATE NO ACTION"
        );
        assert_eq!(d[8].detail, "expected (n), found UNIQUE (n)");
    }

    #[test]
    fn type_changes_and_keys() {
        let expected = sample();
        let mut live = sample();
        let a = live.tables.get_mut("a").unwrap();
        a.columns[0].declared_type = "BIGINT".into();
        a.columns[0].class = TypeClass::Integer;
        a.unique.clear();
        a.unique.insert(vec!["id".into(), "name".into()]);
        a.options.clear();
        let d = compare(&expected, &live);
        assert_eq!(
            kinds(&d),
            [
                ("changed_column", "a.id"),
                ("missing_unique", "a(name)"),
                ("extra_unique", "a(id, name)"),
                ("missing_table_option", "a"),
            ]
        );
        assert_eq!(d[0].detail, "type: expected INTEGER, found BIGINT");
    }

    #[test]
    fn json_has_the_documented_fields() {
        let report = VerifyReport {
            backend: BackendKind::Sqlite,
            database: "sqlite://x.db".into(),
            differences: compare(&sample(), &Schema::default()),
            integrity_check: Some(vec!["ok".into()]),
            foreign_key_violations: Some(BTreeMap::from([("b".to_string(), 2)])),
        };
        assert!(!report.is_ok());
        let v: Value = serde_json::from_str(&report.to_json()).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(
            o.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            BTreeSet::from([
                "ok",
                "backend",
                "database",
                "differences",
                "integrity_check",
                "foreign_key_violations"
            ])
        );
        assert_eq!(o["ok"], Value::Bool(false));
        assert_eq!(o["backend"], "sqlite");
        assert_eq!(o["integrity_check"], "ok");
        assert_eq!(o["foreign_key_violations"], 2);
        assert_eq!(o["differences"][0]["kind"], "missing_table");
        assert_eq!(o["differences"][0]["object"], "a");
        let pg = VerifyReport {
            backend: BackendKind::Postgres,
            database: "postgres://u@h:5432/d?sslmode=prefer".into(),
            differences: Vec::new(),
            integrity_check: None,
            foreign_key_violations: None,
        };
        assert!(pg.is_ok());
        let v: Value = serde_json::from_str(&pg.to_json()).unwrap();
        assert_eq!(v["ok"], true);
        assert!(v["integrity_check"].is_null());
        assert!(v["foreign_key_violations"].is_null());
        assert_eq!(serde_json::to_value(&pg).unwrap(), v);
    }

    #[test]
    fn scratch_names_are_unique_plain_identifiers() {
        let a = scratch_name();
        let b = scratch_name();
        assert_ne!(a, b);
        assert_eq!(a.len(), "persist_verify_".len() + 16);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }
}
