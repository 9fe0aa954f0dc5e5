//! Recognising a database that is not persist's: another migration tool's
//! `schema_migrations`, or another application's tables.

use crate::error::Error;

/// The columns persist's `schema_migrations` has.
const OURS: [&str; 5] = ["version", "name", "checksum", "applied_at", "execution_ms"];

/// Migration tools that also name their history table `schema_migrations`,
/// with the columns that table has. (sqlx, diesel, refinery, Flyway, goose
/// and Alembic use other names: `_sqlx_migrations`,
/// `__diesel_schema_migrations`, `refinery_schema_history`,
/// `flyway_schema_history`, `goose_db_version`, `alembic_version`.)
const OTHERS: [(&str, &[&str]); 3] = [
    ("golang-migrate", &["version", "dirty"]),
    ("Ecto", &["version", "inserted_at"]),
    ("Rails (ActiveRecord) or dbmate", &["version"]),
];

/// Checks the columns of an existing `schema_migrations`: `None` when it is
/// persist's, otherwise the error naming the tool whose table it looks like.
pub(crate) fn check_history_columns(columns: &[String]) -> Option<Error> {
    let has = |c: &str| columns.iter().any(|x| x.eq_ignore_ascii_case(c));
    if OURS.iter().all(|c| has(c)) {
        return None;
    }
    let mut sorted: Vec<&str> = columns.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let same = |cols: &[&str]| cols.len() == sorted.len() && cols.iter().all(|c| has(c));
    let owner = OTHERS
        .iter()
        .find(|(_, cols)| same(cols))
        .map_or("another migration tool", |(tool, _)| tool);
    Some(Error::ForeignDatabase(format!(
        "its schema_migrations table belongs to {owner} (columns: {}), not to persist; \
         give persist a database (or PostgreSQL schema) of its own",
        sorted.join(", ")
    )))
}

/// The refusal to migrate a SQLite file that holds other tables but no
/// `schema_migrations`: it is another application's database.
pub(crate) fn foreign_tables(tables: &[String]) -> Error {
    const SHOWN: usize = 5;
    let mut list = tables
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if tables.len() > SHOWN {
        list.push_str(&format!(" and {} more", tables.len() - SHOWN));
    }
    Error::ForeignDatabase(format!(
        "the SQLite file holds other tables ({list}) and no schema_migrations; \
         refusing to add persist's tables to another application's database"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn names_the_tool_whose_table_it_is() {
        assert!(check_history_columns(&cols(&OURS)).is_none());
        for (columns, tool) in [
            (&["version", "dirty"][..], "golang-migrate"),
            (&["dirty", "version"][..], "golang-migrate"),
            (&["version", "inserted_at"][..], "Ecto"),
            (&["version"][..], "Rails"),
            (&["version", "name"][..], "another migration tool"),
        ] {
            match check_history_columns(&cols(columns)) {
                Some(Error::ForeignDatabase(m)) => assert!(m.contains(tool), "{m}"),
                other => panic!("{columns:?}: {other:?}"),
            }
        }
    }
}
