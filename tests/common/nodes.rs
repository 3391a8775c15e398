//! The events, read model and projections of the cluster tests, shared by the tests
//! (`cluster`, `cluster_processes`) and the `cluster-node` binary they start, stop and kill
//! (`#[path]`-included there), so that both sides agree on wire names and tables.
//!
//! The read model, [`APPLIED`] in the test's schema, has one row per (projection, event) with
//! the number of times the event was applied and the node that applied it last: "every event
//! applied exactly once" is "one row per event and projection, each with `applications = 1`".

#![allow(dead_code)]

use std::time::Duration;

use projections::postgres::{Schema, migrate_schema};
use projections::{Envelope, Event, PgConnection, StorageError, projection};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// The read model's table, in the test's schema.
pub const APPLIED: &str = "cluster_applied";

/// The projections every node runs, in order.
pub const PROJECTIONS: [&str; 6] = [
    "count_0", "count_1", "count_2", "count_3", "count_4", "count_5",
];

/// The one event of these tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "cluster.beat", aggregate = "Heart")]
pub struct Beat {
    pub n: i64,
}

/// The crate's tables and the read model, in `schema`.
pub async fn prepare(pool: &PgPool, schema: &Schema) -> Result<(), StorageError> {
    migrate_schema(pool, schema).await?;
    let name = schema.name().unwrap_or("public");
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS \"{name}\".{APPLIED} (
             projection   text        NOT NULL,
             event_id     uuid        NOT NULL,
             position     bigint      NOT NULL,
             node         text        NOT NULL,
             applications integer     NOT NULL,
             applied_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
             PRIMARY KEY (projection, event_id)
         )"
    ))
    .execute(pool)
    .await
    .map_err(StorageError::backend)?;
    Ok(())
}

/// Records one application of `event` by `projection` on `node`, counting repeats.
async fn record(
    conn: &mut PgConnection,
    table: &str,
    projection: &str,
    node: &str,
    event: &Envelope<Beat>,
) -> Result<(), sqlx::Error> {
    let position = event
        .position()
        .and_then(|p| i64::try_from(p).ok())
        .unwrap_or(-1);
    sqlx::query(&format!(
        "INSERT INTO {table} (projection, event_id, position, node, applications) \
         VALUES ($1, $2, $3, $4, 1) \
         ON CONFLICT (projection, event_id) DO UPDATE \
         SET applications = {table}.applications + 1, node = EXCLUDED.node, \
             applied_at = clock_timestamp()"
    ))
    .bind(projection)
    .bind(event.event_id())
    .bind(position)
    .bind(node)
    .execute(conn)
    .await?;
    Ok(())
}

/// What each counting projection knows: where to write, as whom, and how slowly.
#[derive(Debug, Clone)]
pub struct Counting {
    /// The read model, qualified.
    pub table: String,
    /// This node's id.
    pub node: String,
    /// A pause per event, to make batches last (a zombie is then caught inside one).
    pub pace: Duration,
    /// Work per event, in rounds of hashing (a CPU-heavy handler), none when 0.
    pub work: u32,
}

impl Counting {
    pub fn new(schema: &Schema, node: &str) -> Self {
        Self {
            table: format!("\"{}\".{APPLIED}", schema.name().unwrap_or("public")),
            node: node.to_owned(),
            pace: Duration::ZERO,
            work: 0,
        }
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        projection: &str,
        event: &Envelope<Beat>,
    ) -> Result<(), sqlx::Error> {
        if !self.pace.is_zero() {
            tokio::time::sleep(self.pace).await;
        }
        if self.work > 0 {
            std::hint::black_box(burn(event.n, self.work));
        }
        record(conn, &self.table, projection, &self.node, event).await
    }
}

/// CPU work that the optimiser cannot drop.
pub fn burn(seed: i64, rounds: u32) -> u64 {
    let mut x = seed as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

macro_rules! counters {
    ($($ty:ident => $name:literal),* $(,)?) => {
        $(
            /// A counting projection (see [`Counting`]).
            pub struct $ty(pub Counting);

            #[projection(name = $name)]
            impl $ty {
                #[handles(Beat)]
                async fn beat(
                    &mut self,
                    conn: &mut PgConnection,
                    event: &Envelope<Beat>,
                ) -> Result<(), sqlx::Error> {
                    self.0.apply(conn, $name, event).await
                }
            }
        )*
    };
}

counters! {
    Count0 => "count_0",
    Count1 => "count_1",
    Count2 => "count_2",
    Count3 => "count_3",
    Count4 => "count_4",
    Count5 => "count_5",
}

/// Applications per projection: (rows, rows applied more than once, total applications).
pub async fn tally(
    pool: &PgPool,
    schema: &Schema,
) -> Result<Vec<(String, i64, i64, i64)>, sqlx::Error> {
    let name = schema.name().unwrap_or("public");
    sqlx::query_as(&format!(
        "SELECT projection, count(*), count(*) FILTER (WHERE applications > 1), \
                sum(applications)::bigint \
         FROM \"{name}\".{APPLIED} GROUP BY projection ORDER BY projection"
    ))
    .fetch_all(pool)
    .await
}

/// Who owns each lease now (live leases only), by lease name.
pub async fn owners(
    pool: &PgPool,
    schema: &Schema,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    let name = schema.name().unwrap_or("public");
    sqlx::query_as(&format!(
        "SELECT lease_name, CASE WHEN expires_at > now() THEN owner END \
         FROM \"{name}\".projection_leases ORDER BY lease_name"
    ))
    .fetch_all(pool)
    .await
}

/// The table of [`Sequenced`]: per aggregate, the last `n` applied and how many were.
pub const SEQUENCES: &str = "cluster_sequences";

/// Creates [`SEQUENCES`] in `schema`.
pub async fn prepare_sequences(pool: &PgPool, schema: &Schema) -> Result<(), sqlx::Error> {
    let name = schema.name().unwrap_or("public");
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS \"{name}\".{SEQUENCES} (
             aggregate    uuid    PRIMARY KEY,
             last_n       bigint  NOT NULL,
             applications integer NOT NULL
         )"
    ))
    .execute(pool)
    .await?;
    Ok(())
}

/// A partitioned projection that checks the order of each aggregate's events: the beats of
/// an aggregate are numbered 0, 1, 2...; a beat that does not follow the last one applied
/// fails (and would be dead-lettered), so "no dead letter" means "order kept".
#[derive(Debug, Clone)]
pub struct Sequenced(pub Counting);

/// A beat out of order.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("beat {n} of aggregate {aggregate} does not follow the last one applied")]
    OutOfOrder { aggregate: uuid::Uuid, n: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[projection(name = "sequenced")]
impl Sequenced {
    #[handles(Beat)]
    async fn beat(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<Beat>,
    ) -> Result<(), SequenceError> {
        if self.0.work > 0 {
            std::hint::black_box(burn(event.n, self.0.work));
        }
        let table = self.0.table.replace(APPLIED, SEQUENCES);
        let aggregate = event.metadata.aggregate_id;
        let applied = if event.n == 0 {
            sqlx::query(&format!(
                "INSERT INTO {table} VALUES ($1, 0, 1) ON CONFLICT (aggregate) DO NOTHING"
            ))
            .bind(aggregate)
            .execute(&mut *conn)
            .await?
        } else {
            sqlx::query(&format!(
                "UPDATE {table} SET last_n = $2, applications = applications + 1 \
                 WHERE aggregate = $1 AND last_n = $2 - 1"
            ))
            .bind(aggregate)
            .bind(event.n)
            .execute(&mut *conn)
            .await?
        };
        if applied.rows_affected() != 1 {
            return Err(SequenceError::OutOfOrder {
                aggregate,
                n: event.n,
            });
        }
        Ok(())
    }

    #[reset]
    async fn clear(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let table = self.0.table.replace(APPLIED, SEQUENCES);
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// (aggregates, aggregates whose last beat is `last`, beats applied) of [`SEQUENCES`].
pub async fn sequences(
    pool: &PgPool,
    schema: &Schema,
    last: i64,
) -> Result<(i64, i64, i64), sqlx::Error> {
    let name = schema.name().unwrap_or("public");
    sqlx::query_as(&format!(
        "SELECT count(*), count(*) FILTER (WHERE last_n = $1), coalesce(sum(applications), 0)::bigint \
         FROM \"{name}\".{SEQUENCES}"
    ))
    .bind(last)
    .fetch_one(pool)
    .await
}
