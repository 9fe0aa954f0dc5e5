//! The DDL linter and the per-statement lock table, on the statements of a
//! migration parsed by `sqlparser` (PostgreSQL dialect).
//!
//! Rules (each with an id, a one-line reason, and suppressible for one
//! statement by a comment `-- persist:allow <id>` inside that statement's
//! text, e.g. on the line above it): see [`LintRule`].
//!
//! `sqlparser` 0.64 does not parse `DROP INDEX CONCURRENTLY`: such a
//! statement is parsed without that one token and known to be concurrent.
//! A statement the parser does not know gets the `unparsed` finding (the
//! plan cannot say its locks).

use std::collections::BTreeSet;

use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnOption, Expr, FromTable, ObjectName,
    ObjectType, Statement, TableConstraint, TableFactor, TableObject,
};
use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::plan::{LockLevel, TableLock};
use super::rules::finding;
pub use super::rules::{LintFinding, LintRule};
use super::Migration;
use crate::backend::BackendKind;

/// Tables created by statements linted so far (they hold no rows yet).
#[derive(Debug, Default)]
pub(crate) struct Created(BTreeSet<String>);

/// One statement, analysed.
pub(crate) struct Analysed {
    pub sql: String,
    pub kind: String,
    pub locks: Vec<TableLock>,
    pub findings: Vec<LintFinding>,
}

/// Analyses each statement of `m`.
pub(crate) fn analyse(dialect: BackendKind, m: &Migration, created: &mut Created) -> Vec<Analysed> {
    let no_tx = dialect == BackendKind::Postgres && !m.in_transaction();
    let mut timeout_off = false;
    m.statements()
        .into_iter()
        .map(|sql| {
            if dialect == BackendKind::Sqlite {
                let kind = Parser::parse_sql(&SQLiteDialect {}, &sql)
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .map_or_else(|| "unparsed".to_string(), |s| kind_words(&s));
                let locks = vec![lock("(database)", LockLevel::DatabaseWrite)];
                return Analysed {
                    sql,
                    kind,
                    locks,
                    findings: Vec::new(),
                };
            }
            let mut ctx = Ctx {
                no_tx,
                created: &mut *created,
                findings: Vec::new(),
            };
            let (kind, locks) = match parse(&sql) {
                Some((st, drop_concurrently)) => {
                    if turns_lock_timeout_off(&st) {
                        timeout_off = true;
                    }
                    ctx.inspect(&st, drop_concurrently)
                }
                None => {
                    ctx.findings.push(finding(LintRule::Unparsed, None));
                    ("unparsed".to_string(), Vec::new())
                }
            };
            let mut findings = ctx.findings;
            if no_tx && timeout_off && !kind.starts_with("set") && !kind.starts_with("reset") {
                findings.push(finding(LintRule::NoLockTimeout, None));
            }
            let allowed = allowed(&sql);
            findings.retain(|f| !allowed.iter().any(|a| a == f.rule.id()));
            Analysed {
                sql,
                kind,
                locks,
                findings,
            }
        })
        .collect()
}

/// The rule ids a `-- persist:allow id[, id]` comment in `sql` names.
fn allowed(sql: &str) -> Vec<String> {
    sql.lines()
        .filter_map(|l| l.split_once("persist:allow").map(|(_, rest)| rest))
        .flat_map(|rest| {
            rest.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The statement, and whether it is a `DROP INDEX CONCURRENTLY`.
fn parse(sql: &str) -> Option<(Statement, bool)> {
    let dialect = PostgreSqlDialect {};
    if let Ok(mut v) = Parser::parse_sql(&dialect, sql) {
        return (v.len() == 1).then(|| (v.remove(0), false));
    }
    // DROP INDEX CONCURRENTLY: parse it without that token.
    let tokens = Tokenizer::new(&dialect, sql).tokenize().ok()?;
    let words: Vec<(usize, Keyword)> = tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match t {
            Token::Word(w) => Some((i, w.keyword)),
            _ => None,
        })
        .take(3)
        .collect();
    match words.as_slice() {
        [(_, Keyword::DROP), (_, Keyword::INDEX), (at, Keyword::CONCURRENTLY)] => {
            let text: String = tokens
                .iter()
                .enumerate()
                .filter(|(i, _)| i != at)
                .map(|(_, t)| t.to_string())
                .collect();
            let mut v = Parser::parse_sql(&dialect, &text).ok()?;
            (v.len() == 1).then(|| (v.remove(0), true))
        }
        _ => None,
    }
}

/// The table a name designates: its last part, lower case unless quoted.
fn table_of(name: &ObjectName) -> String {
    let text = name.to_string();
    let last = text.rsplit('.').next().unwrap_or(&text);
    match last.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(q) => q.to_string(),
        None => last.to_lowercase(),
    }
}

fn lock(table: &str, level: LockLevel) -> TableLock {
    TableLock {
        table: table.to_string(),
        level,
    }
}

/// The first words of a statement's kind, lower case.
fn kind_words(st: &Statement) -> String {
    st.to_string()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn turns_lock_timeout_off(st: &Statement) -> bool {
    let t = st.to_string().to_lowercase();
    let words: Vec<&str> = t
        .split_whitespace()
        .filter(|w| *w != "local" && *w != "session")
        .collect();
    match words.as_slice() {
        ["reset", "all", ..] | ["reset", "lock_timeout", ..] => true,
        ["set", "lock_timeout", rest @ ..] => rest
            .iter()
            .map(|w| w.trim_matches(|c| c == '\'' || c == '='))
            .any(|w| w == "0" || w == "default"),
        _ => false,
    }
}

/// Functions whose value differs per row: a default calling one rewrites
/// the table.
const VOLATILE: &[&str] = &[
    "random",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "clock_timestamp",
    "timeofday",
    "nextval",
];

fn volatile(e: &Expr) -> bool {
    let t = e.to_string().to_lowercase();
    VOLATILE.iter().any(|f| t.contains(&format!("{f}(")))
}

struct Ctx<'a> {
    no_tx: bool,
    created: &'a mut Created,
    findings: Vec<LintFinding>,
}

impl Ctx<'_> {
    fn existing(&self, table: &str) -> bool {
        !self.created.0.contains(table)
    }

    fn flag(&mut self, rule: LintRule, table: &str) {
        self.findings.push(finding(rule, Some(table)));
    }

    /// The statement's kind and locks; findings go to `self.findings`.
    fn inspect(&mut self, st: &Statement, drop_concurrently: bool) -> (String, Vec<TableLock>) {
        use LockLevel as L;
        match st {
            Statement::CreateTable(ct) => {
                let t = table_of(&ct.name);
                self.created.0.insert(t.clone());
                ("create table".into(), vec![lock(&t, L::AccessExclusive)])
            }
            Statement::CreateIndex(ci) => {
                let t = table_of(&ci.table_name);
                if ci.concurrently {
                    if !self.no_tx {
                        self.flag(LintRule::ConcurrentlyInTransaction, &t);
                    }
                    (
                        "create index concurrently".into(),
                        vec![lock(&t, L::ShareUpdateExclusive)],
                    )
                } else {
                    if self.existing(&t) {
                        self.flag(LintRule::CreateIndexNotConcurrent, &t);
                    }
                    ("create index".into(), vec![lock(&t, L::Share)])
                }
            }
            Statement::Drop {
                object_type, names, ..
            } => {
                let level = match (object_type, drop_concurrently) {
                    (ObjectType::Index, true) => L::ShareUpdateExclusive,
                    _ => L::AccessExclusive,
                };
                let names: Vec<String> = names.iter().map(table_of).collect();
                if drop_concurrently && !self.no_tx {
                    self.flag(LintRule::ConcurrentlyInTransaction, &names.join(", "));
                }
                let kind = format!(
                    "drop {}{}",
                    object_type.to_string().to_lowercase(),
                    if drop_concurrently {
                        " concurrently"
                    } else {
                        ""
                    }
                );
                (kind, names.iter().map(|n| lock(n, level)).collect())
            }
            Statement::AlterTable(at) => {
                let t = table_of(&at.name);
                let mut locks = vec![lock(&t, L::AccessShare)];
                for op in &at.operations {
                    self.alter(&t, op, &mut locks);
                }
                ("alter table".into(), locks)
            }
            other => (other_kind(other), other_locks(other)),
        }
    }

    /// One ALTER TABLE operation: raises the table's lock (`locks[0]`), adds
    /// other tables' locks, flags findings.
    fn alter(&mut self, t: &str, op: &AlterTableOperation, locks: &mut Vec<TableLock>) {
        use LockLevel as L;
        let existing = self.existing(t);
        let level = match op {
            AlterTableOperation::AddColumn { column_def, .. } => {
                let opts: Vec<&ColumnOption> =
                    column_def.options.iter().map(|o| &o.option).collect();
                let default = opts.iter().find_map(|o| match o {
                    ColumnOption::Default(e) => Some(e),
                    _ => None,
                });
                let not_null = opts
                    .iter()
                    .any(|o| matches!(o, ColumnOption::NotNull | ColumnOption::PrimaryKey(_)));
                let fills = opts.iter().any(|o| {
                    let d = format!("{o:?}");
                    d.starts_with("Generated") || d.starts_with("Identity")
                });
                if existing && default.is_some_and(volatile) {
                    self.flag(LintRule::VolatileDefault, t);
                }
                let checked = opts
                    .iter()
                    .any(|o| matches!(o, ColumnOption::Check(_) | ColumnOption::ForeignKey(_)));
                if existing && checked {
                    self.flag(LintRule::ConstraintNotValid, t);
                }
                if existing && not_null && default.is_none() && !fills {
                    self.flag(LintRule::NotNullWithoutDefault, t);
                }
                L::AccessExclusive
            }
            AlterTableOperation::AddConstraint {
                constraint,
                not_valid,
            } => match constraint {
                TableConstraint::ForeignKey(fk) => {
                    locks.push(lock(&table_of(&fk.foreign_table), L::ShareRowExclusive));
                    if existing && !not_valid {
                        self.flag(LintRule::ConstraintNotValid, t);
                    }
                    L::ShareRowExclusive
                }
                TableConstraint::Check(_) => {
                    if existing && !not_valid {
                        self.flag(LintRule::ConstraintNotValid, t);
                    }
                    L::AccessExclusive
                }
                TableConstraint::Unique(_) | TableConstraint::PrimaryKey(_) => {
                    if existing {
                        self.flag(LintRule::CreateIndexNotConcurrent, t);
                    }
                    L::AccessExclusive
                }
                _ => L::AccessExclusive,
            },
            AlterTableOperation::ValidateConstraint { .. } => L::ShareUpdateExclusive,
            AlterTableOperation::AlterColumn {
                op:
                    AlterColumnOperation::SetDataType {
                        data_type, using, ..
                    },
                ..
            } => {
                let to = data_type.to_string().to_lowercase();
                let cheap = using.is_none()
                    && matches!(to.as_str(), "text" | "varchar" | "character varying");
                if existing && !cheap {
                    self.flag(LintRule::RewritingTypeChange, t);
                }
                L::AccessExclusive
            }
            _ => L::AccessExclusive,
        };
        if let Some(first) = locks.first_mut() {
            first.level = first.level.max(level);
        }
    }
}

fn other_kind(st: &Statement) -> String {
    match st {
        Statement::Query(_) => "select".into(),
        Statement::Insert(_) => "insert".into(),
        Statement::Update(_) => "update".into(),
        Statement::Delete(_) => "delete".into(),
        other => kind_words(other),
    }
}

fn other_locks(st: &Statement) -> Vec<TableLock> {
    use LockLevel as L;
    match st {
        Statement::Query(_) => vec![lock("(tables read)", L::AccessShare)],
        Statement::Insert(i) => match &i.table {
            TableObject::TableName(n) => vec![lock(&table_of(n), L::RowExclusive)],
            _ => vec![lock("(table)", L::RowExclusive)],
        },
        Statement::Update(u) => match &u.table.relation {
            TableFactor::Table { name, .. } => vec![lock(&table_of(name), L::RowExclusive)],
            _ => vec![lock("(table)", L::RowExclusive)],
        },
        Statement::Delete(d) => {
            let tables = match &d.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            tables
                .iter()
                .filter_map(|t| match &t.relation {
                    TableFactor::Table { name, .. } => Some(lock(&table_of(name), L::RowExclusive)),
                    _ => None,
                })
                .collect()
        }
        Statement::Truncate(t) => t
            .table_names
            .iter()
            .map(|n| lock(&table_of(&n.name), L::AccessExclusive))
            .collect(),
        Statement::CreateTrigger(ct) => vec![lock(&table_of(&ct.table_name), L::ShareRowExclusive)],
        _ => Vec::new(),
    }
}
