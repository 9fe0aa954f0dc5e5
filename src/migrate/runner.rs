//! The migration runner over a small backend trait: the applied set is
//! compared with the shipped one (drift, database ahead, out of order), then
//! each pending migration is applied under the backend's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    AppliedMigration, Migration, MigrationReport, MigrationState, MigrationStatus, Migrations,
};
use crate::error::{Error, Result};

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppliedRow {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    pub applied_at: i64,
}

/// The outcome of [`MigrationBackend::apply`].
pub(crate) enum Applied {
    /// Applied now, taking this many milliseconds.
    Now(u64),
    /// Found applied (by a concurrent migrator) when re-checked under the lock.
    Already,
}

/// The steps a backend supplies to the runner.
pub(crate) trait MigrationBackend {
    /// Takes the migration lock, or (PostgreSQL, where each step takes it)
    /// sets how long a step waits for it: at most `timeout` for each
    /// transaction that holds it meanwhile.
    async fn lock(&mut self, timeout: Duration) -> Result<()>;
    /// Releases the migration lock.
    async fn unlock(&mut self) -> Result<()>;
    /// Creates `schema_migrations` if it does not exist.
    async fn ensure_table(&mut self) -> Result<()>;
    /// The applied migrations; empty if the table does not exist.
    async fn applied(&mut self) -> Result<Vec<AppliedRow>>;
    /// Whether the database is a read-only standby, where nothing pending
    /// may be applied.
    async fn standby(&mut self) -> Result<bool>;
    /// Runs the migration and records it, in one transaction.
    async fn apply(&mut self, m: &Migration, applied_at: i64) -> Result<Applied>;
}

/// Compares the shipped set with the applied rows and returns the pending
/// migrations, in order.
///
/// # Errors
/// [`Error::DatabaseAhead`], [`Error::MigrationDrift`], or
/// [`Error::InvalidMigrations`] when a pending migration is older than an
/// applied one.
pub(crate) fn pending<'a>(
    set: &'a Migrations,
    applied: &[AppliedRow],
) -> Result<Vec<&'a Migration>> {
    let shipped: BTreeMap<i64, &Migration> = set.list.iter().map(|m| (m.version, m)).collect();
    // The incomplete-copy marker is not a migration: migrating such a
    // database is allowed, using it is what the marker flags. A started
    // marker (negative version) of a shipped no-transaction migration is
    // resumed by applying that migration.
    let started_unknown = applied
        .iter()
        .filter(|r| r.version < 0 && !shipped.contains_key(&-r.version))
        .map(|r| -r.version);
    let applied: Vec<&AppliedRow> = applied
        .iter()
        .filter(|r| r.version > super::INCOMPLETE_COPY_VERSION)
        .collect();
    let ahead: Vec<i64> = applied
        .iter()
        .filter(|r| !shipped.contains_key(&r.version))
        .map(|r| r.version)
        .chain(started_unknown)
        .collect();
    if !ahead.is_empty() {
        return Err(Error::DatabaseAhead { versions: ahead });
    }
    let drifted: Vec<i64> = applied
        .iter()
        .filter(|r| shipped[&r.version].checksum != r.checksum)
        .map(|r| r.version)
        .collect();
    if !drifted.is_empty() {
        return Err(Error::MigrationDrift { versions: drifted });
    }
    let done: BTreeSet<i64> = applied.iter().map(|r| r.version).collect();
    let todo: Vec<&Migration> = set
        .list
        .iter()
        .filter(|m| !done.contains(&m.version))
        .collect();
    if let (Some(first), Some(&max_done)) = (todo.first(), done.last()) {
        if first.version < max_done {
            return Err(Error::InvalidMigrations(format!(
                "migration {} is pending but the later migration {max_done:04} is already applied",
                first.file_name()
            )));
        }
    }
    Ok(todo)
}

/// Per-migration status: every shipped migration, then every recorded one the
/// binary does not ship.
pub(crate) fn status(set: &Migrations, applied: &[AppliedRow]) -> Vec<MigrationStatus> {
    let by_version: BTreeMap<i64, &AppliedRow> = applied.iter().map(|r| (r.version, r)).collect();
    let started = |v: i64| by_version.contains_key(&super::started_marker(v));
    let mut out: Vec<MigrationStatus> = set
        .list
        .iter()
        .map(|m| match by_version.get(&m.version) {
            Some(r) => MigrationStatus {
                version: m.version,
                name: m.name.clone(),
                state: if r.checksum == m.checksum {
                    MigrationState::Applied
                } else {
                    MigrationState::Drifted
                },
                applied_at: Some(r.applied_at),
            },
            None => MigrationStatus {
                version: m.version,
                name: m.name.clone(),
                state: if started(m.version) {
                    MigrationState::Incomplete
                } else {
                    MigrationState::Pending
                },
                applied_at: None,
            },
        })
        .collect();
    let shipped: BTreeSet<i64> = set.list.iter().map(|m| m.version).collect();
    out.extend(
        applied
            .iter()
            .filter(|r| !shipped.contains(&r.version))
            .filter(|r| r.version >= 0 || !shipped.contains(&-r.version))
            .map(|r| MigrationStatus {
                version: r.version.abs(),
                name: r.name.clone(),
                state: MigrationState::Unknown,
                applied_at: Some(r.applied_at),
            }),
    );
    out
}

/// Runs every pending migration of `set`, under the backend's lock.
pub(crate) async fn run<B: MigrationBackend>(
    backend: &mut B,
    set: &Migrations,
    lock_timeout: Duration,
) -> Result<MigrationReport> {
    backend.lock(lock_timeout).await?;
    let result = run_locked(backend, set).await;
    let unlocked = backend.unlock().await;
    let report = result?;
    unlocked?;
    Ok(report)
}

async fn run_locked<B: MigrationBackend>(
    backend: &mut B,
    set: &Migrations,
) -> Result<MigrationReport> {
    backend.ensure_table().await?;
    let applied = backend.applied().await?;
    let todo = pending(set, &applied)?;
    let todo_len = todo.len();
    if todo_len > 0 && backend.standby().await? {
        return Err(Error::PendingOnStandby {
            versions: todo.iter().map(|m| m.version).collect(),
        });
    }
    let mut report = MigrationReport::default();
    for m in todo {
        match backend.apply(m, now_seconds()).await? {
            Applied::Now(ms) => {
                tracing::info!(version = m.version, name = %m.name, ms, "applied migration");
                report.applied.push(AppliedMigration {
                    version: m.version,
                    name: m.name.clone(),
                    millis: ms,
                });
            }
            Applied::Already => {
                tracing::debug!(version = m.version, "migration applied concurrently");
            }
        }
    }
    if todo_len > 0 {
        // On SQLite the lock is per migration, so a newer binary may have
        // migrated past this set meanwhile: check the final state again.
        let now_applied = backend.applied().await?;
        pending(set, &now_applied)?;
    }
    report.version = set.latest_version();
    Ok(report)
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `MigrationFailed` error for `m`.
pub(crate) fn failed(m: &Migration, message: String, source: crate::error::BoxError) -> Error {
    Error::MigrationFailed {
        version: m.version,
        file: m.file_name(),
        message,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;

    fn set(versions: &[i64]) -> Result<Migrations> {
        Migrations::new(
            BackendKind::Sqlite,
            versions
                .iter()
                .map(|v| Migration::new(*v, format!("m{v}"), format!("-- {v}")))
                .collect(),
        )
    }

    fn row(m: &Migration) -> AppliedRow {
        AppliedRow {
            version: m.version,
            name: m.name.clone(),
            checksum: m.checksum.clone(),
            applied_at: 1,
        }
    }

    #[test]
    fn pending_detects_drift_ahead_and_out_of_order() {
        let s = set(&[1, 2, 3]).unwrap();
        let rows: Vec<AppliedRow> = s.iter().take(1).map(row).collect();
        let todo = pending(&s, &rows).unwrap();
        assert_eq!(todo.iter().map(|m| m.version).collect::<Vec<_>>(), [2, 3]);

        let mut drifted = rows.clone();
        drifted[0].checksum = "0".repeat(64);
        assert!(
            matches!(pending(&s, &drifted), Err(Error::MigrationDrift { versions }) if versions == [1])
        );

        let mut ahead: Vec<AppliedRow> = s.iter().map(row).collect();
        ahead.push(AppliedRow {
            version: 4,
            name: "future".into(),
            checksum: "x".into(),
            applied_at: 2,
        });
        assert!(
            matches!(pending(&s, &ahead), Err(Error::DatabaseAhead { versions }) if versions == [4])
        );

        let gap = vec![row(s.iter().next().unwrap()), row(s.iter().nth(2).unwrap())];
        assert!(
            matches!(pending(&s, &gap), Err(Error::InvalidMigrations(m)) if m.contains("0002_m2.sql"))
        );
    }

    #[test]
    fn status_lists_every_state() {
        let s = set(&[1, 2, 3]).unwrap();
        let mut rows: Vec<AppliedRow> = s.iter().take(2).map(row).collect();
        rows[1].checksum = "changed".into();
        rows.push(AppliedRow {
            version: 9,
            name: "future".into(),
            checksum: "x".into(),
            applied_at: 5,
        });
        let st = status(&s, &rows);
        let states: Vec<(i64, MigrationState)> = st.iter().map(|s| (s.version, s.state)).collect();
        assert_eq!(
            states,
            [
                (1, MigrationState::Applied),
                (2, MigrationState::Drifted),
                (3, MigrationState::Pending),
                (9, MigrationState::Unknown)
            ]
        );
        assert_eq!(st[2].applied_at, None);
        assert_eq!(st[3].applied_at, Some(5));
    }
}
