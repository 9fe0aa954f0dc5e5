//! Issue 15, the DDL linter and the plan's lock table, on statements parsed
//! by `sqlparser`: each rule fires on the statement it is about, names its
//! table, and is suppressed for one statement by `-- persist:allow <id>`;
//! every shipped migration is linted (the findings of the files already
//! shipped are the recorded baseline below: a shipped file cannot change
//! without drift, and new files must lint clean or carry a suppression).

use persist::{BackendKind, LintRule, LockLevel, Migration, Migrations};

fn set(sql: &str) -> Migrations {
    let base = "CREATE TABLE t (id bigint PRIMARY KEY, a int, s text);\n\
                CREATE TABLE parent (id bigint PRIMARY KEY);";
    Migrations::new(
        BackendKind::Postgres,
        vec![
            Migration::new(1, "base", base),
            Migration::new(2, "change", sql),
        ],
    )
    .unwrap()
}

/// The (version, rule id, table) findings of `sql` as migration 2.
fn findings(sql: &str) -> Vec<(i64, &'static str, Option<String>)> {
    set(sql)
        .lint()
        .into_iter()
        .map(|(v, f)| (v, f.rule.id(), f.table))
        .collect()
}

fn one(rule: &'static str, table: &str) -> Vec<(i64, &'static str, Option<String>)> {
    vec![(2, rule, Some(table.to_string()))]
}

#[test]
fn each_rule_fires_on_its_statement_and_is_suppressed_by_its_comment() {
    let cases: &[(&str, &str)] = &[
        ("CREATE INDEX t_a ON t (a)", "create-index-not-concurrent"),
        (
            "ALTER TABLE t ADD CONSTRAINT t_s UNIQUE (s)",
            "create-index-not-concurrent",
        ),
        (
            "ALTER TABLE t ADD COLUMN u uuid DEFAULT gen_random_uuid()",
            "volatile-default",
        ),
        (
            "ALTER TABLE t ADD COLUMN n int NOT NULL",
            "not-null-without-default",
        ),
        (
            "ALTER TABLE t ADD CONSTRAINT t_p FOREIGN KEY (a) REFERENCES parent (id)",
            "constraint-not-valid",
        ),
        (
            "ALTER TABLE t ADD CONSTRAINT t_c CHECK (a > 0)",
            "constraint-not-valid",
        ),
        (
            "ALTER TABLE t ADD COLUMN v int DEFAULT 1 CHECK (v > 0)",
            "constraint-not-valid",
        ),
        (
            "ALTER TABLE t ALTER COLUMN a TYPE bigint",
            "rewriting-type-change",
        ),
        (
            "CREATE INDEX CONCURRENTLY t_a ON t (a)",
            "concurrently-in-transaction",
        ),
        (
            "DROP INDEX CONCURRENTLY IF EXISTS t_old",
            "concurrently-in-transaction",
        ),
    ];
    for (sql, rule) in cases {
        let table = if sql.starts_with("DROP") {
            "t_old"
        } else {
            "t"
        };
        assert_eq!(findings(sql), one(rule, table), "{sql}");
        let suppressed = format!("-- persist:allow {rule}\n{sql}");
        assert_eq!(findings(&suppressed), vec![], "{suppressed}");
        // Another rule's suppression does not hide it.
        let other = format!("-- persist:allow unparsed\n{sql}");
        assert_eq!(findings(&other), one(rule, table), "{other}");
    }
    assert_eq!(LintRule::ALL.len(), 8);
    assert!(LintRule::ALL.iter().all(|r| !r.reason().is_empty()));
}

#[test]
fn the_safe_forms_lint_clean() {
    for sql in [
        "-- persist:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_a ON t (a);\n\
         DROP INDEX CONCURRENTLY IF EXISTS t_old",
        "ALTER TABLE t ADD COLUMN n int NOT NULL DEFAULT 0",
        "ALTER TABLE t ADD COLUMN m int",
        "ALTER TABLE t ADD CONSTRAINT t_p FOREIGN KEY (a) REFERENCES parent (id) NOT VALID;\n\
         ALTER TABLE t VALIDATE CONSTRAINT t_p",
        "ALTER TABLE t ADD CONSTRAINT t_c CHECK (a > 0) NOT VALID",
        "ALTER TABLE t ALTER COLUMN s TYPE text",
        "CREATE TABLE fresh (id bigint); CREATE INDEX fresh_id ON fresh (id);\n\
         ALTER TABLE fresh ADD COLUMN n int NOT NULL",
    ] {
        assert_eq!(findings(sql), vec![], "{sql}");
    }
}

#[test]
fn a_no_transaction_file_that_turns_the_lock_timeout_off_is_flagged() {
    let sql = "-- persist:no-transaction\nSET lock_timeout = 0;\n\
               CREATE INDEX CONCURRENTLY IF NOT EXISTS t_a ON t (a)";
    assert_eq!(findings(sql), vec![(2, "no-lock-timeout", None)]);
    let unparsed = findings("FROBNICATE t");
    assert_eq!(unparsed, vec![(2, "unparsed", None)]);
}

#[test]
fn the_plan_gives_each_statement_its_lock_level() {
    use LockLevel as L;
    let m = set("-- persist:no-transaction\n\
         CREATE INDEX CONCURRENTLY IF NOT EXISTS t_a ON t (a);\n\
         DROP INDEX CONCURRENTLY IF EXISTS t_old;\n\
         ALTER TABLE t ADD CONSTRAINT t_p FOREIGN KEY (a) REFERENCES parent (id) NOT VALID;\n\
         ALTER TABLE t VALIDATE CONSTRAINT t_p;\n\
         ALTER TABLE t ADD COLUMN m int;\n\
         CREATE INDEX plain ON t (s);\n\
         UPDATE t SET a = 1 WHERE id = 0;\n\
         DROP TABLE parent");
    let m2 = m.iter().nth(1).unwrap();
    assert!(!m2.in_transaction());
    let plan = persist::MigrationPlan::for_pending(BackendKind::Postgres, &[m2]);
    let got: Vec<(String, Vec<(String, LockLevel)>)> = plan.pending[0]
        .statements
        .iter()
        .map(|s| {
            (
                s.kind.clone(),
                s.locks.iter().map(|l| (l.table.clone(), l.level)).collect(),
            )
        })
        .collect();
    let want: Vec<(&str, Vec<(&str, LockLevel)>)> = vec![
        (
            "create index concurrently",
            vec![("t", L::ShareUpdateExclusive)],
        ),
        (
            "drop index concurrently",
            vec![("t_old", L::ShareUpdateExclusive)],
        ),
        (
            "alter table",
            vec![
                ("t", L::ShareRowExclusive),
                ("parent", L::ShareRowExclusive),
            ],
        ),
        ("alter table", vec![("t", L::ShareUpdateExclusive)]),
        ("alter table", vec![("t", L::AccessExclusive)]),
        ("create index", vec![("t", L::Share)]),
        ("update", vec![("t", L::RowExclusive)]),
        ("drop table", vec![("parent", L::AccessExclusive)]),
    ];
    let want: Vec<(String, Vec<(String, LockLevel)>)> = want
        .into_iter()
        .map(|(k, l)| {
            (
                k.to_string(),
                l.into_iter().map(|(t, v)| (t.to_string(), v)).collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        plan.findings()
            .map(|(v, f)| (v, f.rule.id()))
            .collect::<Vec<_>>(),
        [(2, "create-index-not-concurrent")]
    );
}

/// Findings of the files already shipped, with why each is accepted.
/// 0004 ran on small tables before the linter existed: the inline CHECKs of
/// the two version columns scanned each table once, and the sessions index
/// was built with a plain CREATE INDEX (what an online form would be is in
/// D-122: migration 0005).
const SHIPPED_BASELINE: &[(i64, &str, &str)] = &[
    (4, "constraint-not-valid", "army_loadouts"),
    (4, "constraint-not-valid", "progression"),
    (4, "create-index-not-concurrent", "sessions"),
];

#[test]
fn every_shipped_migration_is_linted() {
    for dialect in [BackendKind::Postgres, BackendKind::Sqlite] {
        let got: Vec<(i64, &str, String)> = Migrations::embedded(dialect)
            .unwrap()
            .lint()
            .into_iter()
            .map(|(v, f)| (v, f.rule.id(), f.table.unwrap_or_default()))
            .collect();
        let want: Vec<(i64, &str, String)> = match dialect {
            BackendKind::Postgres => SHIPPED_BASELINE
                .iter()
                .map(|(v, r, t)| (*v, *r, t.to_string()))
                .collect(),
            BackendKind::Sqlite => Vec::new(),
        };
        assert_eq!(got, want, "{dialect}");
    }
}
