//! Running a migration's SQL one statement at a time, so a failure names
//! the statement (its number and first line) instead of echoing the file.

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::{Batch, Connection};

use crate::error::Error;
use crate::migrate::{failed, first_line, Migration};

/// Runs every statement of `m`'s SQL; on failure, the `MigrationFailed`
/// error says which statement failed and why.
pub(super) fn run(c: &Connection, m: &Migration) -> Result<(), Error> {
    let mut batch = Batch::new(c, m.sql());
    let mut number = 0usize;
    loop {
        number += 1;
        let mut st = match batch.next() {
            Ok(Some(st)) => st,
            Ok(None) => return Ok(()),
            Err(e) => {
                // Preparing failed: the error holds the SQL from this
                // statement on (rusqlite's `SqlInputError`).
                let line = match &e {
                    rusqlite::Error::SqlInputError { sql, .. } => first_line(sql),
                    _ => String::new(),
                };
                // Without the text in the error, the file's own statement
                // of that number (the same split as PostgreSQL's runner).
                let line = match line.is_empty() {
                    true => m
                        .statements()
                        .get(number - 1)
                        .map(|s| first_line(s))
                        .unwrap_or_default(),
                    false => line,
                };
                return Err(fail(m, number, &line, e));
            }
        };
        let line = st
            .expanded_sql()
            .map(|s| first_line(&s))
            .unwrap_or_default();
        if let Err(e) = drain(&mut st) {
            return Err(fail(m, number, &line, e));
        }
    }
}

/// Steps the statement to its end (statements that return rows, such as
/// some PRAGMAs, have their rows read and dropped).
fn drain(st: &mut rusqlite::Statement<'_>) -> rusqlite::Result<()> {
    let mut rows = st.raw_query();
    while rows.next()?.is_some() {}
    Ok(())
}

/// The error for statement `number`, without the SQL text rusqlite's own
/// message carries (the whole rest of the file).
fn fail(m: &Migration, number: usize, line: &str, e: rusqlite::Error) -> Error {
    let (message, source) = match e {
        rusqlite::Error::SqlInputError {
            error, msg, offset, ..
        } => (
            format!("{msg} (at offset {offset} of the statement)"),
            rusqlite::Error::SqliteFailure(error, Some(msg)),
        ),
        rusqlite::Error::SqliteFailure(f, msg) => (
            msg.clone().unwrap_or_else(|| f.to_string()),
            rusqlite::Error::SqliteFailure(f, msg),
        ),
        other => (other.to_string(), other),
    };
    failed(
        m,
        format!("statement {number} ({line}): {message}"),
        source.into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::migrate::Migrations;

    fn failure(sql: &str) -> String {
        let set = Migrations::new(BackendKind::Sqlite, vec![Migration::new(1, "m", sql)]).unwrap();
        let m = set.iter().next().unwrap();
        let c = Connection::open_in_memory().unwrap();
        match run(&c, m) {
            Err(Error::MigrationFailed { file, message, .. }) => {
                format!("{file}: {message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failure_names_the_statement_not_the_whole_file() {
        let filler = "-- filler\n".repeat(400);
        let sql = format!(
            "CREATE TABLE a (x INTEGER NOT NULL);\n{filler}\
             INSERT INTO a VALUES (1);\n\
             INSERT INTO a\n  VALUES (NULL);\n\
             CREATE TABLE b (y INTEGER);"
        );
        let got = failure(&sql);
        assert!(
            got.starts_with("0001_m.sql: statement 3 (INSERT INTO a): "),
            "{got}"
        );
        assert!(got.contains("NOT NULL"), "{got}");
        assert!(
            !got.contains("filler") && !got.contains("CREATE TABLE b"),
            "{got}"
        );

        let got = failure(&format!(
            "CREATE TABLE a (x);\n{filler}\nCREAT TABLE b (y);"
        ));
        assert!(
            got.starts_with("0001_m.sql: statement 2 (CREAT TABLE b (y);): "),
            "{got}"
        );
        assert!(got.contains("syntax error"), "{got}");
        assert!(!got.contains("filler"), "{got}");
    }
}
