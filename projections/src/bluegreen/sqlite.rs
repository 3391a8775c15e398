//! Blue/green versions on SQLite: tables named per version and stable views, in one file.

use std::sync::Arc;

use sqlx::{Executor, Row, Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::{ReadModelVersions, Switch, VersionRole, invalid, quote, versioned_name};
use crate::storage::{BoxFuture, StorageError};
use crate::transactional::SqliteTransactionUnit;

/// The versions of blue/green projections in a SQLite database (one file).
///
/// SQLite has no schemas to put each version in, so the version is in the table names:
/// - the DDL of version `N` (given to [`BlueGreen::runner`](super::BlueGreen::runner)) creates
///   tables whose names end in `_v<N>` (`orders_v2`), and that version's handlers write to
///   them by those names; a table without the suffix is refused with
///   [`StorageError::Invalid`] and nothing is created;
/// - readers query a view named without the suffix (`orders`), over the serving version's
///   table;
/// - the versions ledger (`projection_versions`, migrated by
///   [`migrate`](crate::sqlite::migrate)) records the tables each version created.
///
/// Every change runs in one `BEGIN IMMEDIATE` transaction: SQLite's DDL is transactional, and
/// the write lock keeps batches out while the checkpoints are compared and the views swapped.
#[derive(Debug, Clone)]
pub struct SqliteReadModelVersions {
    pool: SqlitePool,
}

impl SqliteReadModelVersions {
    /// Versions in the database of `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StorageError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StorageError::backend)
    }

    async fn prepare_now(
        &self,
        projection: &str,
        version: u32,
        ddl: &str,
    ) -> Result<VersionRole, StorageError> {
        let mut tx = self.begin().await?;
        let roles = ledger(&mut tx, projection).await?;
        if let Some(entry) = roles.iter().find(|e| e.version == version)
            && entry.role != VersionRole::Retired
        {
            let role = entry.role;
            tx.commit().await.map_err(StorageError::backend)?;
            return Ok(role);
        }
        let before = table_names(&mut tx).await?;
        if let Err(error) = (&mut *tx).execute(sqlx::raw_sql(ddl)).await {
            crate::sqlite::rollback(tx).await?;
            return Err(StorageError::backend(error));
        }
        let created: Vec<String> = table_names(&mut tx)
            .await?
            .into_iter()
            .filter(|table| !before.contains(table))
            .collect();
        let suffix = format!("_v{version}");
        if let Some(bad) = created.iter().find(|t| view_name(t, &suffix).is_none()) {
            crate::sqlite::rollback(tx).await?;
            return Err(invalid(format!(
                "table `{bad}` of version {version} of `{projection}` must be named \
                 `<name>{suffix}` (letters, digits, `_`): readers query the view `<name>`"
            )));
        }
        sqlx::query(
            "INSERT INTO projection_versions (projection_name, version, state, tables, created_at)
             VALUES (?1, ?2, 'building', ?3, ?4)
             ON CONFLICT (projection_name, version) DO UPDATE SET
                 state = 'building', tables = ?3, created_at = ?4,
                 promoted_at = NULL, retired_at = NULL",
        )
        .bind(projection)
        .bind(i64::from(version))
        .bind(created.join(","))
        .bind(crate::sqlite::time::now())
        .execute(&mut *tx)
        .await
        .map_err(StorageError::backend)?;
        tx.commit().await.map_err(StorageError::backend)?;
        tracing::info!(projection, version, tables = ?created, "blue/green version created");
        Ok(VersionRole::Building)
    }

    async fn versions_now(
        &self,
        projection: &str,
    ) -> Result<Vec<(u32, VersionRole)>, StorageError> {
        let mut conn = self.pool.acquire().await.map_err(StorageError::backend)?;
        Ok(ledger(&mut conn, projection)
            .await?
            .into_iter()
            .map(|e| (e.version, e.role))
            .collect())
    }

    async fn switch_now(&self, projection: &str, version: u32) -> Result<Switch, StorageError> {
        let mut tx = self.begin().await?;
        let entries = ledger(&mut tx, projection).await?;
        let Some(target) = entries
            .iter()
            .find(|e| e.version == version && e.role != VersionRole::Retired)
        else {
            crate::sqlite::rollback(tx).await?;
            return Ok(Switch::Unknown);
        };
        let from = entries.iter().find(|e| e.role == VersionRole::Serving);
        if let Some(from) = from {
            if from.version == version {
                crate::sqlite::rollback(tx).await?;
                return Ok(Switch::Switched {
                    from: Some(version),
                });
            }
            let new = position(&mut tx, &versioned_name(projection, version)).await?;
            let old = position(&mut tx, &versioned_name(projection, from.version)).await?;
            if new < old {
                crate::sqlite::rollback(tx).await?;
                return Ok(Switch::Behind {
                    checkpoint: new,
                    serving: old,
                });
            }
        }
        let mut statements = String::new();
        if let Some(from) = from {
            let suffix = format!("_v{}", from.version);
            for view in from.tables.iter().filter_map(|t| view_name(t, &suffix)) {
                statements.push_str(&format!("DROP VIEW IF EXISTS {};", quote(view)));
            }
        }
        let suffix = format!("_v{version}");
        for table in &target.tables {
            if let Some(view) = view_name(table, &suffix) {
                let view = quote(view);
                statements.push_str(&format!(
                    "DROP VIEW IF EXISTS {view}; CREATE VIEW {view} AS SELECT * FROM {};",
                    quote(table)
                ));
            }
        }
        if let Err(error) = (&mut *tx).execute(sqlx::raw_sql(&statements)).await {
            crate::sqlite::rollback(tx).await?;
            return Err(StorageError::backend(error));
        }
        let from = from.map(|e| e.version);
        if let Some(old) = from {
            set_state(&mut tx, projection, old, VersionRole::Replaced).await?;
        }
        set_state(&mut tx, projection, version, VersionRole::Serving).await?;
        tx.commit().await.map_err(StorageError::backend)?;
        Ok(Switch::Switched { from })
    }

    async fn retire_now(&self, projection: &str, version: u32) -> Result<(), StorageError> {
        let mut tx = self.begin().await?;
        let entries = ledger(&mut tx, projection).await?;
        let entry = match entries.into_iter().find(|e| e.version == version) {
            None => {
                crate::sqlite::rollback(tx).await?;
                return Err(invalid(format!(
                    "version {version} of `{projection}` was never built"
                )));
            }
            Some(entry) if entry.role == VersionRole::Retired => {
                crate::sqlite::rollback(tx).await?;
                return Ok(());
            }
            Some(entry) if entry.role == VersionRole::Serving => {
                crate::sqlite::rollback(tx).await?;
                return Err(invalid(format!(
                    "version {version} of `{projection}` is serving readers"
                )));
            }
            Some(entry) => entry,
        };
        let mut statements = String::new();
        for table in &entry.tables {
            statements.push_str(&format!("DROP TABLE IF EXISTS {};", quote(table)));
        }
        if let Err(error) = (&mut *tx).execute(sqlx::raw_sql(&statements)).await {
            crate::sqlite::rollback(tx).await?;
            return Err(StorageError::backend(error));
        }
        sqlx::query("DELETE FROM projection_checkpoints WHERE projection_name = ?1")
            .bind(versioned_name(projection, version))
            .execute(&mut *tx)
            .await
            .map_err(StorageError::backend)?;
        set_state(&mut tx, projection, version, VersionRole::Retired).await?;
        tx.commit().await.map_err(StorageError::backend)
    }
}

/// One row of the versions ledger.
struct Entry {
    version: u32,
    role: VersionRole,
    tables: Vec<String>,
}

async fn ledger(conn: &mut SqliteConnection, projection: &str) -> Result<Vec<Entry>, StorageError> {
    let rows = sqlx::query(
        "SELECT version, state, tables FROM projection_versions
         WHERE projection_name = ?1 ORDER BY version",
    )
    .bind(projection)
    .fetch_all(&mut *conn)
    .await
    .map_err(StorageError::backend)?;
    rows.iter()
        .map(|row| {
            let version: i64 = row.try_get(0).map_err(StorageError::backend)?;
            let state: String = row.try_get(1).map_err(StorageError::backend)?;
            let tables: String = row.try_get(2).map_err(StorageError::backend)?;
            Ok(Entry {
                version: u32::try_from(version).map_err(|_| {
                    StorageError::Unreadable(format!("stored version is out of range: {version}"))
                })?,
                role: VersionRole::parse(&state).ok_or_else(|| {
                    StorageError::Unreadable(format!("unknown version state `{state}`"))
                })?,
                tables: tables
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

async fn table_names(conn: &mut SqliteConnection) -> Result<Vec<String>, StorageError> {
    sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .fetch_all(&mut *conn)
        .await
        .map_err(StorageError::backend)
}

async fn position(conn: &mut SqliteConnection, name: &str) -> Result<u64, StorageError> {
    let position: Option<i64> = sqlx::query_scalar(
        "SELECT position FROM projection_checkpoints WHERE projection_name = ?1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StorageError::backend)?;
    let position = position.unwrap_or(0);
    u64::try_from(position)
        .map_err(|_| StorageError::Unreadable(format!("stored checkpoint is negative: {position}")))
}

async fn set_state(
    conn: &mut SqliteConnection,
    projection: &str,
    version: u32,
    role: VersionRole,
) -> Result<(), StorageError> {
    let now = crate::sqlite::time::now();
    sqlx::query(
        "UPDATE projection_versions SET state = ?3,
             promoted_at = CASE WHEN ?3 = 'serving' THEN ?4 ELSE promoted_at END,
             retired_at = CASE WHEN ?3 = 'retired' THEN ?4 ELSE retired_at END
         WHERE projection_name = ?1 AND version = ?2",
    )
    .bind(projection)
    .bind(i64::from(version))
    .bind(role.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StorageError::backend)?;
    Ok(())
}

/// The view over `table`: its name without `suffix` (`_v<N>`), when it has the suffix, a
/// name before it, and only letters, digits and `_`.
fn view_name<'a>(table: &'a str, suffix: &str) -> Option<&'a str> {
    let view = table.strip_suffix(suffix)?;
    let plain = table
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (!view.is_empty() && plain).then_some(view)
}

impl ReadModelVersions for SqliteReadModelVersions {
    type Unit = SqliteTransactionUnit;

    fn prepare<'a>(
        &'a self,
        projection: &'a str,
        version: u32,
        ddl: &'a str,
    ) -> BoxFuture<'a, Result<VersionRole, StorageError>> {
        Box::pin(self.prepare_now(projection, version, ddl))
    }

    fn unit(&self, _projection: &str, _version: u32) -> Result<Arc<Self::Unit>, StorageError> {
        Ok(Arc::new(SqliteTransactionUnit::new(self.pool.clone())))
    }

    fn versions<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(u32, VersionRole)>, StorageError>> {
        Box::pin(self.versions_now(projection))
    }

    fn switch<'a>(
        &'a self,
        projection: &'a str,
        version: u32,
    ) -> BoxFuture<'a, Result<Switch, StorageError>> {
        Box::pin(self.switch_now(projection, version))
    }

    fn retire<'a>(
        &'a self,
        projection: &'a str,
        version: u32,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.retire_now(projection, version))
    }
}

#[cfg(test)]
mod tests {
    use super::view_name;

    #[test]
    fn views_are_named_without_the_version_suffix() {
        assert_eq!(view_name("orders_v2", "_v2"), Some("orders"));
        assert_eq!(view_name("daily_totals_v12", "_v12"), Some("daily_totals"));
        assert_eq!(view_name("orders_v1", "_v2"), None);
        assert_eq!(view_name("_v2", "_v2"), None);
        assert_eq!(view_name("my-orders_v2", "_v2"), None);
    }
}
