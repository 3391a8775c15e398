//! A schema of a test's own for the cluster tests (`cluster`, `cluster_processes`), beside
//! `nodes.rs` (which the `cluster-node` binary includes too).

#![allow(dead_code)]

use std::time::Duration;

use projections::postgres::Schema;
use sqlx::PgPool;

/// The test server (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema of a test's own on the test server, with the crate's tables and the read model,
/// a pool and a store on it.
pub struct Fixture {
    pub pool: PgPool,
    pub schema: Schema,
    pub store: std::sync::Arc<projections::postgres::PostgreSQLEventStore>,
}

impl Fixture {
    /// A fresh schema named `<prefix>_<random>`; fails (never skips) when the server cannot
    /// be reached.
    pub async fn new(prefix: &str, connections: u32) -> Self {
        let url = database_url();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}; set DATABASE_URL"));
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let schema = Schema::named(&name[..24]).unwrap_or_else(|e| panic!("{e}"));
        super::nodes::prepare(&pool, &schema)
            .await
            .unwrap_or_else(|e| panic!("cannot prepare {name}: {e}"));
        let store = std::sync::Arc::new(projections::postgres::PostgreSQLEventStore::with_schema(
            pool.clone(),
            schema.clone(),
        ));
        Self {
            pool,
            schema,
            store,
        }
    }

    /// The stored checkpoint of `projection` (0 when it has none).
    pub async fn checkpoint(&self, projection: &str) -> i64 {
        let table = format!(
            "\"{}\".projection_checkpoints",
            self.schema.name().unwrap_or("public")
        );
        sqlx::query_scalar::<_, i64>(&format!(
            "SELECT position FROM {table} WHERE projection_name = $1"
        ))
        .bind(projection)
        .fetch_optional(&self.pool)
        .await
        .unwrap_or_else(|e| panic!("cannot read a checkpoint: {e}"))
        .unwrap_or(0)
    }

    /// Drops the schema (when the test passed).
    pub async fn drop_schema(&self) {
        sqlx::raw_sql(&format!(
            "DROP SCHEMA \"{}\" CASCADE",
            self.schema.name().unwrap_or("public")
        ))
        .execute(&self.pool)
        .await
        .unwrap_or_else(|e| panic!("cannot drop the schema: {e}"));
    }
}
