//! The difference between two schemas of one dialect, for `verify`.

use std::collections::BTreeSet;

use crate::types::schema::{Schema, Table};
use crate::types::verify::{Difference, DifferenceKind};

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

    let check_object = |c: &crate::types::schema::Check| match &c.name {
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
    use std::collections::BTreeMap;

    use serde_json::Value;

    use crate::backend::BackendKind;
    use crate::types::schema::{Check, Column, ForeignKey, Index, TypeClass};
    use crate::types::verify::VerifyReport;

    fn col(name: &str, ty: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            declared_type: ty.into(),
            class: match ty {
                "INTEGER" | "BIGINT" => TypeClass::Integer,
                "BLOB" => TypeClass::Bytes,
                _ => TypeClass::Text,
            },
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
}
