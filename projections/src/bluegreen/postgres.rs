//! Blue/green versions on PostgreSQL: a schema per version, stable views in a serving schema.

use std::sync::Arc;

use sqlx::{Executor, PgConnection, PgPool, Postgres, Row, Transaction};

use super::{ReadModelVersions, Switch, VersionRole, invalid, quote, versioned_name};
use crate::postgres::Schema;
use crate::storage::{BoxFuture, StorageError};
use crate::transactional::PostgreSQLTransactionUnit;

/// The versions of blue/green projections in PostgreSQL.
///
/// - version `N` of a projection keeps its tables in schema `<serving>_v<N>`, created by the
///   DDL given to [`BlueGreen::runner`](super::BlueGreen::runner) (with unqualified names);
///   its batches run with that schema first in `SET LOCAL search_path`, so handlers write
///   unqualified names too;
/// - readers query the views in schema `<serving>` (one per table of the serving version,
///   same name, `SELECT *`), e.g. `SELECT * FROM orders.orders`;
/// - checkpoints, dead letters and the versions ledger (`projection_versions`) are in the
///   crate's schema (migrated by [`migrate_schema`](crate::postgres::migrate_schema)).
///
/// One serving schema per projection: its views are the projection's.
#[derive(Debug, Clone)]
pub struct PostgreSQLReadModelVersions {
    pool: PgPool,
    schema: Schema,
    serving: String,
}

impl PostgreSQLReadModelVersions {
    /// Versions on `pool`, with the crate's tables in `schema` and the stable views in
    /// `serving`, which must be a named schema ([`StorageError::Invalid`] otherwise, or when
    /// `<serving>_v<N>` would be too long for a schema name: keep it under 50 characters).
    pub fn new(pool: PgPool, schema: Schema, serving: Schema) -> Result<Self, StorageError> {
        let Some(name) = serving.name() else {
            return Err(invalid(
                "the serving schema of a blue/green projection must be named \
                 (`Schema::named(\"orders\")`), not the search_path"
                    .to_owned(),
            ));
        };
        if name.len() > 50 {
            return Err(invalid(format!(
                "serving schema `{name}` leaves no room for `_v<N>` in a schema name \
                 (at most 50 characters)"
            )));
        }
        Ok(Self {
            pool,
            serving: name.to_owned(),
            schema,
        })
    }

    /// The schema of the stable views that readers query.
    pub fn serving_schema(&self) -> &str {
        &self.serving
    }

    /// The schema of version `version`'s tables: `<serving>_v<N>`.
    pub fn version_schema(&self, version: u32) -> Result<Schema, StorageError> {
        Schema::named(&format!("{}_v{version}", self.serving))
    }

    fn ledger(&self) -> String {
        self.schema.table("projection_versions")
    }

    async fn begin(
        &self,
        projection: &str,
    ) -> Result<Transaction<'static, Postgres>, StorageError> {
        let mut tx = self.pool.begin().await.map_err(StorageError::backend)?;
        // One change to a projection's versions at a time, across processes.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("projections.bluegreen:{projection}"))
            .execute(&mut *tx)
            .await
            .map_err(StorageError::backend)?;
        Ok(tx)
    }

    async fn roles(
        &self,
        conn: &mut PgConnection,
        projection: &str,
    ) -> Result<Vec<(u32, VersionRole)>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT version, state FROM {} WHERE projection_name = $1 ORDER BY version FOR UPDATE",
            self.ledger()
        ))
        .bind(projection)
        .fetch_all(&mut *conn)
        .await
        .map_err(StorageError::backend)?;
        rows.iter().map(read_role).collect()
    }

    async fn tables(conn: &mut PgConnection, schema: &Schema) -> Result<Vec<String>, StorageError> {
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1")
            .bind(schema.name())
            .fetch_all(&mut *conn)
            .await
            .map_err(StorageError::backend)
    }

    async fn positions(
        &self,
        conn: &mut PgConnection,
        projection: &str,
        new: u32,
        old: u32,
    ) -> Result<(u64, u64), StorageError> {
        let (new_name, old_name) = (
            versioned_name(projection, new),
            versioned_name(projection, old),
        );
        // Locked until the views are switched: neither version commits a batch meanwhile,
        // so the comparison holds at the switch.
        let rows = sqlx::query(&format!(
            "SELECT projection_name, position FROM {} WHERE projection_name = ANY($1)
             ORDER BY projection_name FOR UPDATE",
            self.schema.table("projection_checkpoints")
        ))
        .bind(vec![new_name.clone(), old_name.clone()])
        .fetch_all(&mut *conn)
        .await
        .map_err(StorageError::backend)?;
        let (mut new_position, mut old_position) = (0, 0);
        for row in rows {
            let name: String = row.try_get(0).map_err(StorageError::backend)?;
            let position: i64 = row.try_get(1).map_err(StorageError::backend)?;
            let position = u64::try_from(position).map_err(|_| {
                StorageError::Unreadable(format!("stored checkpoint is negative: {position}"))
            })?;
            if name == new_name {
                new_position = position;
            } else {
                old_position = position;
            }
        }
        Ok((new_position, old_position))
    }
}

fn read_role(row: &sqlx::postgres::PgRow) -> Result<(u32, VersionRole), StorageError> {
    let version: i32 = row.try_get(0).map_err(StorageError::backend)?;
    let state: String = row.try_get(1).map_err(StorageError::backend)?;
    let version = u32::try_from(version)
        .map_err(|_| StorageError::Unreadable(format!("stored version is negative: {version}")))?;
    let role = VersionRole::parse(&state)
        .ok_or_else(|| StorageError::Unreadable(format!("unknown version state `{state}`")))?;
    Ok((version, role))
}

fn version_i32(version: u32) -> Result<i32, StorageError> {
    i32::try_from(version).map_err(|_| invalid(format!("version {version} is too large")))
}

impl PostgreSQLReadModelVersions {
    async fn prepare_now(
        &self,
        projection: &str,
        version: u32,
        ddl: &str,
    ) -> Result<VersionRole, StorageError> {
        let schema = self.version_schema(version)?;
        let stored = version_i32(version)?;
        let mut tx = self.begin(projection).await?;
        let roles = self.roles(&mut tx, projection).await?;
        if let Some(&(_, role)) = roles.iter().find(|(v, _)| *v == version)
            && role != VersionRole::Retired
        {
            tx.commit().await.map_err(StorageError::backend)?;
            return Ok(role);
        }
        sqlx::query(&format!(
            "INSERT INTO {} (projection_name, version, state) VALUES ($1, $2, 'building')
             ON CONFLICT (projection_name, version) DO UPDATE
             SET state = 'building', created_at = now(), promoted_at = NULL, retired_at = NULL",
            self.ledger()
        ))
        .bind(projection)
        .bind(stored)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::backend)?;
        let name = schema.name().unwrap_or_default();
        (&mut *tx)
            .execute(sqlx::raw_sql(&format!("CREATE SCHEMA {}", quote(name))))
            .await
            .map_err(StorageError::backend)?;
        sqlx::query(
            "SELECT set_config('search_path', $1 || ', ' || current_setting('search_path'), true)",
        )
        .bind(quote(name))
        .execute(&mut *tx)
        .await
        .map_err(StorageError::backend)?;
        (&mut *tx)
            .execute(sqlx::raw_sql(ddl))
            .await
            .map_err(StorageError::backend)?;
        tx.commit().await.map_err(StorageError::backend)?;
        tracing::info!(
            projection,
            version,
            schema = name,
            "blue/green version created"
        );
        Ok(VersionRole::Building)
    }

    async fn versions_now(
        &self,
        projection: &str,
    ) -> Result<Vec<(u32, VersionRole)>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT version, state FROM {} WHERE projection_name = $1 ORDER BY version",
            self.ledger()
        ))
        .bind(projection)
        .fetch_all(&self.pool)
        .await
        .map_err(StorageError::backend)?;
        rows.iter().map(read_role).collect()
    }

    async fn switch_now(&self, projection: &str, version: u32) -> Result<Switch, StorageError> {
        let mut tx = self.begin(projection).await?;
        let roles = self.roles(&mut tx, projection).await?;
        let known = roles
            .iter()
            .any(|&(v, role)| v == version && role != VersionRole::Retired);
        if !known {
            return Ok(Switch::Unknown);
        }
        let from = roles
            .iter()
            .find(|(_, role)| *role == VersionRole::Serving)
            .map(|&(v, _)| v);
        if from == Some(version) {
            return Ok(Switch::Switched { from });
        }
        if let Some(old) = from {
            let (new_position, old_position) =
                self.positions(&mut tx, projection, version, old).await?;
            if new_position < old_position {
                return Ok(Switch::Behind {
                    checkpoint: new_position,
                    serving: old_position,
                });
            }
        }
        let serving = quote(&self.serving);
        (&mut *tx)
            .execute(sqlx::raw_sql(&format!(
                "CREATE SCHEMA IF NOT EXISTS {serving}"
            )))
            .await
            .map_err(StorageError::backend)?;
        let mut statements = String::new();
        if let Some(old) = from {
            for table in Self::tables(&mut tx, &self.version_schema(old)?).await? {
                statements.push_str(&format!("DROP VIEW IF EXISTS {serving}.{};", quote(&table)));
            }
        }
        let schema = self.version_schema(version)?;
        let source = quote(schema.name().unwrap_or_default());
        for table in Self::tables(&mut tx, &schema).await? {
            let table = quote(&table);
            statements.push_str(&format!(
                "DROP VIEW IF EXISTS {serving}.{table};
                 CREATE VIEW {serving}.{table} AS SELECT * FROM {source}.{table};"
            ));
        }
        (&mut *tx)
            .execute(sqlx::raw_sql(&statements))
            .await
            .map_err(StorageError::backend)?;
        let ledger = self.ledger();
        if let Some(old) = from {
            sqlx::query(&format!(
                "UPDATE {ledger} SET state = 'replaced' WHERE projection_name = $1 AND version = $2"
            ))
            .bind(projection)
            .bind(version_i32(old)?)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::backend)?;
        }
        sqlx::query(&format!(
            "UPDATE {ledger} SET state = 'serving', promoted_at = now()
             WHERE projection_name = $1 AND version = $2"
        ))
        .bind(projection)
        .bind(version_i32(version)?)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::backend)?;
        tx.commit().await.map_err(StorageError::backend)?;
        Ok(Switch::Switched { from })
    }

    async fn retire_now(&self, projection: &str, version: u32) -> Result<(), StorageError> {
        let mut tx = self.begin(projection).await?;
        let roles = self.roles(&mut tx, projection).await?;
        match roles.iter().find(|(v, _)| *v == version) {
            None => {
                return Err(invalid(format!(
                    "version {version} of `{projection}` was never built"
                )));
            }
            Some((_, VersionRole::Retired)) => return Ok(()),
            Some((_, VersionRole::Serving)) => {
                return Err(invalid(format!(
                    "version {version} of `{projection}` is serving readers"
                )));
            }
            Some(_) => {}
        }
        let schema = self.version_schema(version)?;
        (&mut *tx)
            .execute(sqlx::raw_sql(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote(schema.name().unwrap_or_default())
            )))
            .await
            .map_err(StorageError::backend)?;
        sqlx::query(&format!(
            "DELETE FROM {} WHERE projection_name = $1",
            self.schema.table("projection_checkpoints")
        ))
        .bind(versioned_name(projection, version))
        .execute(&mut *tx)
        .await
        .map_err(StorageError::backend)?;
        sqlx::query(&format!(
            "UPDATE {} SET state = 'retired', retired_at = now()
             WHERE projection_name = $1 AND version = $2",
            self.ledger()
        ))
        .bind(projection)
        .bind(version_i32(version)?)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::backend)?;
        tx.commit().await.map_err(StorageError::backend)
    }
}

impl ReadModelVersions for PostgreSQLReadModelVersions {
    type Unit = PostgreSQLTransactionUnit;

    fn prepare<'a>(
        &'a self,
        projection: &'a str,
        version: u32,
        ddl: &'a str,
    ) -> BoxFuture<'a, Result<VersionRole, StorageError>> {
        Box::pin(self.prepare_now(projection, version, ddl))
    }

    fn unit(&self, _projection: &str, version: u32) -> Result<Arc<Self::Unit>, StorageError> {
        let schema = self.version_schema(version)?;
        Ok(Arc::new(
            PostgreSQLTransactionUnit::with_schema(self.pool.clone(), &self.schema)
                .read_model_schema(&schema),
        ))
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
