//! The rules of the DDL linter: ids, reasons, findings.

use serde::Serialize;

/// A rule of the DDL linter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LintRule {
    /// `create-index-not-concurrent`: a plain CREATE INDEX (or ADD UNIQUE /
    /// PRIMARY KEY) on an existing table.
    CreateIndexNotConcurrent,
    /// `volatile-default`: ADD COLUMN with a volatile default on an existing table.
    VolatileDefault,
    /// `not-null-without-default`: ADD COLUMN ... NOT NULL without a default
    /// on an existing table.
    NotNullWithoutDefault,
    /// `constraint-not-valid`: a FOREIGN KEY or CHECK added without NOT VALID
    /// on an existing table.
    ConstraintNotValid,
    /// `rewriting-type-change`: ALTER COLUMN ... TYPE that rewrites the table.
    RewritingTypeChange,
    /// `concurrently-in-transaction`: CONCURRENTLY in a transactional file.
    ConcurrentlyInTransaction,
    /// `no-lock-timeout`: a statement of a no-transaction file after the
    /// file turned the runner's lock timeout off.
    NoLockTimeout,
    /// `unparsed`: the parser does not know the statement.
    Unparsed,
}

impl LintRule {
    /// Every rule.
    pub const ALL: [LintRule; 8] = [
        LintRule::CreateIndexNotConcurrent,
        LintRule::VolatileDefault,
        LintRule::NotNullWithoutDefault,
        LintRule::ConstraintNotValid,
        LintRule::RewritingTypeChange,
        LintRule::ConcurrentlyInTransaction,
        LintRule::NoLockTimeout,
        LintRule::Unparsed,
    ];

    /// Its id, as in a suppression comment.
    pub fn id(self) -> &'static str {
        match self {
            LintRule::CreateIndexNotConcurrent => "create-index-not-concurrent",
            LintRule::VolatileDefault => "volatile-default",
            LintRule::NotNullWithoutDefault => "not-null-without-default",
            LintRule::ConstraintNotValid => "constraint-not-valid",
            LintRule::RewritingTypeChange => "rewriting-type-change",
            LintRule::ConcurrentlyInTransaction => "concurrently-in-transaction",
            LintRule::NoLockTimeout => "no-lock-timeout",
            LintRule::Unparsed => "unparsed",
        }
    }

    /// Why it matters, in one line.
    pub fn reason(self) -> &'static str {
        match self {
            LintRule::CreateIndexNotConcurrent => {
                "blocks every write to the table for the whole build: build it CONCURRENTLY in a \
                 no-transaction file"
            }
            LintRule::VolatileDefault => {
                "rewrites the whole table under ACCESS EXCLUSIVE: add the column without a \
                 default, then backfill in batches"
            }
            LintRule::NotNullWithoutDefault => {
                "fails on a table with rows: add a default, or add the column nullable and \
                 backfill first"
            }
            LintRule::ConstraintNotValid => {
                "scans the whole table while holding its lock: add it NOT VALID, then VALIDATE \
                 CONSTRAINT in a later statement"
            }
            LintRule::RewritingTypeChange => {
                "rewrites the table and its indexes under ACCESS EXCLUSIVE: add a new column and \
                 backfill instead"
            }
            LintRule::ConcurrentlyInTransaction => {
                "CONCURRENTLY cannot run inside a transaction: start the file with \
                 -- persist:no-transaction"
            }
            LintRule::NoLockTimeout => {
                "the file turned the lock timeout off: a blocked statement holds up every \
                 session queued behind it"
            }
            LintRule::Unparsed => "the parser does not know this statement: its locks are unknown",
        }
    }
}

/// One finding of the linter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintFinding {
    /// The rule.
    pub rule: LintRule,
    /// The table it concerns, when there is one.
    pub table: Option<String>,
    /// The rule's reason.
    pub reason: &'static str,
}

pub(crate) fn finding(rule: LintRule, table: Option<&str>) -> LintFinding {
    LintFinding {
        rule,
        table: table.map(str::to_string),
        reason: rule.reason(),
    }
}
