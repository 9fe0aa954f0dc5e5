//! The schema of a PostgreSQL database, from `pg_catalog`, limited to the
//! connection's `current_schema()`.
//!
//! Expressions (defaults, CHECK definitions, index columns and predicates)
//! are printed by the server (`pg_get_expr`, `pg_get_constraintdef`,
//! `pg_get_indexdef`), so two schemas built by the same DDL print the same
//! text as long as each is read through a connection whose `search_path`
//! starts with it.

use super::error::map;
use super::RawClient;
use crate::error::Result;
use crate::types::schema::{Check, Column, ForeignKey, Index, Schema, TypeClass};

/// `array(...)` of the column names of the attribute numbers in `$arr` of `$rel`.
macro_rules! attnames {
    ($arr:literal, $rel:literal) => {
        concat!(
            "array(SELECT a.attname::text FROM unnest(",
            $arr,
            ") WITH ORDINALITY u(n, o) JOIN pg_attribute a ON a.attrelid = ",
            $rel,
            " AND a.attnum = u.n ORDER BY u.o)"
        )
    };
}

const TABLES: &str = "SELECT c.relname::text, c.relkind::text, c.relpersistence::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')";

const COLUMNS: &str = "SELECT c.relname::text, a.attname::text, \
       format_type(a.atttypid, a.atttypmod), a.attnotnull, \
       pg_get_expr(d.adbin, d.adrelid, true), a.attidentity::text \
     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
       AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY c.relname, a.attnum";

const CONSTRAINTS: &str = concat!(
    "SELECT c.relname::text, k.contype::text, k.conname::text, ",
    attnames!("k.conkey", "k.conrelid"),
    ", rf.relname::text, ",
    attnames!("k.confkey", "k.confrelid"),
    ", k.confdeltype::text, k.confupdtype::text, pg_get_constraintdef(k.oid, true) \
     FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_class rf ON rf.oid = k.confrelid \
     WHERE n.nspname = current_schema() AND k.contype IN ('p', 'u', 'f', 'c') \
     ORDER BY c.relname, k.conname"
);

const INDEXES: &str = "SELECT c.relname::text, ic.relname::text, i.indisunique, \
       array(SELECT pg_get_indexdef(i.indexrelid, k, true) \
               || CASE WHEN (i.indoption[k - 1] & 1) = 1 THEN ' DESC' ELSE '' END \
             FROM generate_series(1, i.indnkeyatts::int) k ORDER BY k), \
       pg_get_expr(i.indpred, i.indrelid, true) \
     FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
     JOIN pg_class ic ON ic.oid = i.indexrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = current_schema() AND NOT EXISTS ( \
       SELECT 1 FROM pg_constraint k \
       WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))";

const VIEWS: &str = "SELECT c.relname::text FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = current_schema() AND c.relkind IN ('v', 'm')";

const TRIGGERS: &str = "SELECT c.relname::text || '.' || t.tgname::text FROM pg_trigger t \
     JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = current_schema() AND NOT t.tgisinternal";

fn rule(code: &str) -> String {
    match code {
        "a" => "NO ACTION",
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        other => other,
    }
    .to_string()
}

/// The schema of `current_schema()` on `c`.
pub(crate) async fn schema(c: &RawClient) -> Result<Schema> {
    let mut schema = Schema::default();
    tables(c, &mut schema).await?;
    constraints(c, &mut schema).await?;
    indexes_views_triggers(c, &mut schema).await?;
    Ok(schema)
}

/// Tables with their options, and their columns.
async fn tables(c: &RawClient, schema: &mut Schema) -> Result<()> {
    for r in c.query_typed(TABLES, &[]).await.map_err(map)? {
        let name: String = r.try_get(0).map_err(map)?;
        let kind: String = r.try_get(1).map_err(map)?;
        let persistence: String = r.try_get(2).map_err(map)?;
        let t = schema.tables.entry(name).or_default();
        if kind == "p" {
            t.options.insert("PARTITIONED".into());
        }
        if persistence == "u" {
            t.options.insert("UNLOGGED".into());
        }
    }
    for r in c.query_typed(COLUMNS, &[]).await.map_err(map)? {
        let table: String = r.try_get(0).map_err(map)?;
        let declared: String = r.try_get(2).map_err(map)?;
        let notnull: bool = r.try_get(3).map_err(map)?;
        let identity: String = r.try_get(5).map_err(map)?;
        let column = Column {
            name: r.try_get(1).map_err(map)?,
            class: type_class(&declared),
            declared_type: declared,
            nullable: !notnull,
            default: r.try_get(4).map_err(map)?,
            identity: match identity.as_str() {
                "a" => Some("ALWAYS".into()),
                "d" => Some("BY DEFAULT".into()),
                _ => None,
            },
        };
        if let Some(t) = schema.tables.get_mut(&table) {
            t.columns.push(column);
        }
    }
    Ok(())
}

/// Primary keys, unique constraints, foreign keys and checks.
async fn constraints(c: &RawClient, schema: &mut Schema) -> Result<()> {
    for r in c.query_typed(CONSTRAINTS, &[]).await.map_err(map)? {
        let table: String = r.try_get(0).map_err(map)?;
        let Some(t) = schema.tables.get_mut(&table) else {
            continue;
        };
        let kind: String = r.try_get(1).map_err(map)?;
        let name: String = r.try_get(2).map_err(map)?;
        let cols: Vec<String> = r.try_get(3).map_err(map)?;
        match kind.as_str() {
            "p" => t.primary_key = cols,
            "u" => {
                t.unique.insert(cols);
            }
            "f" => {
                let references: Option<String> = r.try_get(4).map_err(map)?;
                let on_delete: String = r.try_get(6).map_err(map)?;
                let on_update: String = r.try_get(7).map_err(map)?;
                t.foreign_keys.insert(ForeignKey {
                    columns: cols,
                    references: references.unwrap_or_default(),
                    ref_columns: r.try_get(5).map_err(map)?,
                    on_delete: rule(&on_delete),
                    on_update: rule(&on_update),
                });
            }
            _ => {
                t.checks.insert(Check {
                    name: Some(name),
                    definition: r.try_get(8).map_err(map)?,
                });
            }
        }
    }
    Ok(())
}

/// Indexes (per table), views and triggers.
async fn indexes_views_triggers(c: &RawClient, schema: &mut Schema) -> Result<()> {
    for r in c.query_typed(INDEXES, &[]).await.map_err(map)? {
        let table: String = r.try_get(0).map_err(map)?;
        let Some(t) = schema.tables.get_mut(&table) else {
            continue;
        };
        t.indexes.insert(
            r.try_get(1).map_err(map)?,
            Index {
                unique: r.try_get(2).map_err(map)?,
                columns: r.try_get(3).map_err(map)?,
                predicate: r.try_get(4).map_err(map)?,
            },
        );
    }
    for r in c.query_typed(VIEWS, &[]).await.map_err(map)? {
        schema.views.insert(r.try_get(0).map_err(map)?);
    }
    for r in c.query_typed(TRIGGERS, &[]).await.map_err(map)? {
        schema.triggers.insert(r.try_get(0).map_err(map)?);
    }
    Ok(())
}

/// The type class of a PostgreSQL type as `format_type` prints it.
fn type_class(t: &str) -> TypeClass {
    match t {
        "bigint" | "integer" | "smallint" => TypeClass::Integer,
        "text" | "name" => TypeClass::Text,
        "bytea" => TypeClass::Bytes,
        "real" | "double precision" => TypeClass::Real,
        _ if t.starts_with("character") => TypeClass::Text,
        _ => TypeClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_classes() {
        assert_eq!(type_class("bigint"), TypeClass::Integer);
        assert_eq!(type_class("character varying(32)"), TypeClass::Text);
        assert_eq!(type_class("bytea"), TypeClass::Bytes);
        assert_eq!(type_class("jsonb"), TypeClass::Other);
    }

    #[test]
    fn rules_have_sql_names() {
        assert_eq!(rule("c"), "CASCADE");
        assert_eq!(rule("a"), "NO ACTION");
        assert_eq!(rule("n"), "SET NULL");
    }
}
