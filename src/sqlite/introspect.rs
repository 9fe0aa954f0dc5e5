//! The schema of a SQLite database, from `sqlite_schema` and the `pragma_*`
//! table-valued functions; the integrity checks `verify` runs.
//!
//! SQLite keeps CHECK constraints, `AUTOINCREMENT` and partial-index
//! predicates only in the stored `CREATE` text, so those are read from it with
//! the small tokenizer in [`super::ddl`].

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};

use super::ddl::{checks, tokens, where_clause, Tok};
use super::error::map;
use crate::error::Result;
use crate::types::schema::{Column, ForeignKey, Index, Schema, Table, TypeClass};

/// The schema of the `main` database of `c`.
pub(crate) fn schema(c: &Connection) -> Result<Schema> {
    let mut st = c
        .prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema \
             WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name",
        )
        .map_err(map)?;
    let objects = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .map_err(map)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map)?;
    let mut schema = Schema::default();
    let index_sql: BTreeMap<&str, &str> = objects
        .iter()
        .filter(|(ty, ..)| ty == "index")
        .filter_map(|(_, name, _, sql)| sql.as_deref().map(|s| (name.as_str(), s)))
        .collect();
    for (ty, name, tbl_name, sql) in &objects {
        match ty.as_str() {
            "table" => {
                let t = table(c, name, sql.as_deref().unwrap_or(""), &index_sql)?;
                schema.tables.insert(name.clone(), t);
            }
            "view" => {
                schema.views.insert(name.clone());
            }
            "trigger" => {
                schema.triggers.insert(format!("{tbl_name}.{name}"));
            }
            _ => {}
        }
    }
    Ok(schema)
}

fn table(c: &Connection, name: &str, sql: &str, index_sql: &BTreeMap<&str, &str>) -> Result<Table> {
    let mut t = Table::default();
    let toks = tokens(sql);
    options(c, name, &toks, &mut t)?;
    columns(c, name, &mut t)?;
    indexes(c, name, index_sql, &mut t)?;
    foreign_keys(c, name, &mut t)?;
    t.checks = checks(&toks).into_iter().collect();
    Ok(t)
}

/// `STRICT`, `WITHOUT ROWID` and `AUTOINCREMENT`.
fn options(c: &Connection, name: &str, toks: &[Tok<'_>], t: &mut Table) -> Result<()> {
    let opts: Option<(i64, i64)> = c
        .query_row(
            "SELECT \"strict\", wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(map)?;
    if let Some((strict, wr)) = opts {
        if strict != 0 {
            t.options.insert("STRICT".into());
        }
        if wr != 0 {
            t.options.insert("WITHOUT ROWID".into());
        }
    }
    if toks
        .iter()
        .any(|k| matches!(k, Tok::Word(w) if w.eq_ignore_ascii_case("AUTOINCREMENT")))
    {
        t.options.insert("AUTOINCREMENT".into());
    }
    Ok(())
}

/// Columns and the primary key.
fn columns(c: &Connection, name: &str, t: &mut Table) -> Result<()> {
    let mut st = c
        .prepare(
            "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1) ORDER BY cid",
        )
        .map_err(map)?;
    let cols = st
        .query_map([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(map)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map)?;
    let mut pk: Vec<(i64, String)> = Vec::new();
    for (col, declared, notnull, default, pk_pos) in cols {
        if pk_pos > 0 {
            pk.push((pk_pos, col.clone()));
        }
        t.columns.push(Column {
            class: type_class(&declared),
            declared_type: declared.to_ascii_uppercase(),
            nullable: notnull == 0 && pk_pos == 0,
            default,
            identity: None,
            name: col,
        });
    }
    pk.sort();
    t.primary_key = pk.into_iter().map(|(_, n)| n).collect();
    Ok(())
}

/// Unique constraints and indexes (partial-index predicates from the stored
/// `CREATE INDEX` text).
fn indexes(
    c: &Connection,
    name: &str,
    index_sql: &BTreeMap<&str, &str>,
    t: &mut Table,
) -> Result<()> {
    let mut st = c
        .prepare("SELECT name, \"unique\", origin FROM pragma_index_list(?1) ORDER BY name")
        .map_err(map)?;
    let indexes = st
        .query_map([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(map)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map)?;
    for (index, unique, origin) in indexes {
        let cols = index_columns(c, &index)?;
        match origin.as_str() {
            // Backs the primary key: already described by it.
            "pk" => {}
            "u" => {
                t.unique.insert(cols);
            }
            _ => {
                let predicate = index_sql.get(index.as_str()).and_then(|s| where_clause(s));
                t.indexes.insert(
                    index,
                    Index {
                        columns: cols,
                        unique: unique != 0,
                        predicate,
                    },
                );
            }
        }
    }
    Ok(())
}

/// Foreign keys, with the referenced primary key filled in for
/// `REFERENCES t` without columns.
fn foreign_keys(c: &Connection, name: &str, t: &mut Table) -> Result<()> {
    let mut st = c
        .prepare(
            "SELECT id, \"table\", \"from\", \"to\", on_update, on_delete \
             FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
        )
        .map_err(map)?;
    let fks = st
        .query_map([name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .map_err(map)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map)?;
    let mut by_id: BTreeMap<i64, (ForeignKey, bool)> = BTreeMap::new();
    for (id, references, from, to, on_update, on_delete) in fks {
        let entry = by_id.entry(id).or_insert_with(|| {
            (
                ForeignKey {
                    columns: Vec::new(),
                    references,
                    ref_columns: Vec::new(),
                    on_delete: on_delete.to_ascii_uppercase(),
                    on_update: on_update.to_ascii_uppercase(),
                },
                false,
            )
        });
        entry.0.columns.push(from);
        match to {
            Some(to) => entry.0.ref_columns.push(to),
            // `REFERENCES t` without columns: the referenced primary key.
            None => entry.1 = true,
        }
    }
    for (mut fk, implicit) in by_id.into_values() {
        if implicit {
            fk.ref_columns = primary_key_of(c, &fk.references)?;
        }
        t.foreign_keys.insert(fk);
    }
    Ok(())
}

fn index_columns(c: &Connection, index: &str) -> Result<Vec<String>> {
    let mut st = c
        .prepare(
            "SELECT cid, name, \"desc\" FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno",
        )
        .map_err(map)?;
    let rows = st
        .query_map([index], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(map)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map)?;
    Ok(rows
        .into_iter()
        .map(|(cid, name, desc)| {
            let mut s = match (cid, name) {
                (_, Some(n)) => n,
                (-1, None) => "rowid".to_string(),
                _ => "<expression>".to_string(),
            };
            if desc != 0 {
                s.push_str(" DESC");
            }
            s
        })
        .collect())
}

fn primary_key_of(c: &Connection, table: &str) -> Result<Vec<String>> {
    let mut st = c
        .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")
        .map_err(map)?;
    let cols = st
        .query_map([table], |r| r.get::<_, String>(0))
        .map_err(map)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map)?;
    Ok(cols)
}

/// The rows `PRAGMA integrity_check` returns: `["ok"]` for a sound database.
pub(crate) fn integrity_check(c: &Connection) -> Result<Vec<String>> {
    let mut st = c.prepare("PRAGMA integrity_check").map_err(map)?;
    let rows = st
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(map)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map)?;
    Ok(rows)
}

/// The number of rows `PRAGMA foreign_key_check` reports, per table.
pub(crate) fn foreign_key_violations(c: &Connection) -> Result<BTreeMap<String, u64>> {
    let mut st = c
        .prepare("SELECT \"table\", count(*) FROM pragma_foreign_key_check GROUP BY \"table\"")
        .map_err(map)?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(map)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map)?;
    Ok(rows
        .into_iter()
        .map(|(t, n)| (t, u64::try_from(n).unwrap_or(0)))
        .collect())
}

/// The type class of a SQLite declared type, by SQLite's affinity rules.
fn type_class(declared: &str) -> TypeClass {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        TypeClass::Integer
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        TypeClass::Text
    } else if t.contains("BLOB") || t.is_empty() {
        TypeClass::Bytes
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        TypeClass::Real
    } else {
        TypeClass::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_classes() {
        assert_eq!(type_class("INTEGER"), TypeClass::Integer);
        assert_eq!(type_class("bigint"), TypeClass::Integer);
        assert_eq!(type_class("TEXT"), TypeClass::Text);
        assert_eq!(type_class("VARCHAR(10)"), TypeClass::Text);
        assert_eq!(type_class("BLOB"), TypeClass::Bytes);
        assert_eq!(type_class("REAL"), TypeClass::Real);
        assert_eq!(type_class("ANY"), TypeClass::Other);
    }

    #[test]
    fn schema_of_a_small_database() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE p (id INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT NOT NULL UNIQUE) STRICT;
             CREATE TABLE ch (
                 pid INTEGER NOT NULL REFERENCES p ON DELETE CASCADE,
                 n INTEGER NOT NULL DEFAULT 0 CHECK (n >= 0),
                 PRIMARY KEY (pid, n)
             ) STRICT, WITHOUT ROWID;
             CREATE INDEX ch_n_idx ON ch (n DESC) WHERE n > 1;
             CREATE VIEW v AS SELECT * FROM p;
             CREATE TRIGGER tr AFTER INSERT ON p BEGIN SELECT 1; END;",
        )
        .unwrap();
        let s = schema(&c).unwrap();
        assert_eq!(s.tables.keys().collect::<Vec<_>>(), ["ch", "p"]);
        assert_eq!(s.views.iter().collect::<Vec<_>>(), ["v"]);
        assert_eq!(s.triggers.iter().collect::<Vec<_>>(), ["p.tr"]);
        let p = &s.tables["p"];
        assert_eq!(
            p.options.iter().collect::<Vec<_>>(),
            ["AUTOINCREMENT", "STRICT"]
        );
        assert_eq!(p.primary_key, ["id"]);
        assert!(p.unique.contains(&vec!["k".to_string()]));
        assert!(!p.columns[0].nullable);
        let ch = &s.tables["ch"];
        assert_eq!(
            ch.options.iter().collect::<Vec<_>>(),
            ["STRICT", "WITHOUT ROWID"]
        );
        assert_eq!(ch.primary_key, ["pid", "n"]);
        let fk = ch.foreign_keys.iter().next().unwrap();
        assert_eq!(
            (
                fk.references.as_str(),
                fk.ref_columns.clone(),
                fk.on_delete.as_str()
            ),
            ("p", vec!["id".to_string()], "CASCADE")
        );
        assert_eq!(ch.column("n").unwrap().default.as_deref(), Some("0"));
        assert_eq!(
            ch.indexes["ch_n_idx"],
            Index {
                columns: vec!["n DESC".into()],
                unique: false,
                predicate: Some("n > 1".into())
            }
        );
        assert_eq!(
            ch.checks
                .iter()
                .map(|c| c.definition.as_str())
                .collect::<Vec<_>>(),
            ["CHECK (n >= 0)"]
        );
    }
}
