//! The quickstart: an orders domain, two read models in SQLite tables, one bad event.
//!
//! ```sh
//! cargo run --example quickstart                  # on the file quickstart.db (created)
//! cargo run --example quickstart                  # again: resumes from its checkpoints
//! cargo run --example quickstart -- --rebuild     # empties the read models and replays
//! cargo run --example quickstart -- --memory      # a database in memory: nothing kept
//! cargo run --example quickstart -- --db other.db # another file
//! ```
//!
//! The first run appends three orders (one of them shipped without ever being created: a bad
//! event) and builds both read models. Each later run appends one new order and applies only
//! what is new. The read models are tables written through the batch's own transaction, so a
//! run killed at any moment and started again loses nothing and applies nothing twice.

use std::sync::Arc;
use std::time::Duration;

use projections::coordinator::ProjectionCoordinator;
use projections::retry::RetryConfig;
use projections::sqlx::{self, Row, SqliteConnection, SqlitePool};
use projections::transactional::{SqliteTransactionUnit, TransactionalRunner};
use projections::{
    Envelope, Event, EventStore, ExpectedVersion, ExponentialBackoffRetryPolicy,
    ProjectionRegistry, Storage, projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ---- The events -------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderCreated {
    customer_id: String,
    total_cents: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderShipped {
    tracking_number: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderCancelled {
    reason: String,
}

/// Why a handler fails: a bug in the event stream (dead-lettered), or the database (waited
/// out and retried, never dead-lettered: the runner reads the SQLite error in the chain).
#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("order {0} does not exist")]
    UnknownOrder(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

// ---- A read model of orders: one row per order ------------------------------------------

struct OrderSummary;

#[projection(name = "order-summary")]
impl OrderSummary {
    #[handles(OrderCreated)]
    async fn created(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderCreated>,
    ) -> Result<(), OrderError> {
        sqlx::query(
            "INSERT INTO order_summary (order_id, customer_id, total_cents, status)
             VALUES (?1, ?2, ?3, 'created')",
        )
        .bind(event.aggregate_id().to_string())
        .bind(&event.customer_id)
        .bind(event.total_cents)
        .execute(conn)
        .await?;
        Ok(())
    }

    #[handles(OrderShipped)]
    async fn shipped(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderShipped>,
    ) -> Result<(), OrderError> {
        let order = event.aggregate_id();
        let updated = sqlx::query(
            "UPDATE order_summary SET status = 'shipped', tracking_number = ?2
             WHERE order_id = ?1",
        )
        .bind(order.to_string())
        .bind(&event.tracking_number)
        .execute(conn)
        .await?;
        // Shipping an order that was never created is a bug in the event stream.
        if updated.rows_affected() == 0 {
            return Err(OrderError::UnknownOrder(order));
        }
        Ok(())
    }

    #[handles(OrderCancelled)]
    async fn cancelled(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderCancelled>,
    ) -> Result<(), OrderError> {
        let order = event.aggregate_id();
        let updated =
            sqlx::query("UPDATE order_summary SET status = 'cancelled' WHERE order_id = ?1")
                .bind(order.to_string())
                .execute(conn)
                .await?;
        if updated.rows_affected() == 0 {
            return Err(OrderError::UnknownOrder(order));
        }
        Ok(())
    }

    #[reset]
    async fn clear(&mut self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM order_summary")
            .execute(conn)
            .await?;
        Ok(())
    }
}

// ---- A read model of daily metrics: one row per day -------------------------------------

struct DailyMetrics;

impl DailyMetrics {
    /// Adds to the counters of the day `event` happened on.
    async fn add<E>(
        conn: &mut SqliteConnection,
        event: &Envelope<E>,
        (orders, revenue_cents, shipped, cancelled): (i64, i64, i64, i64),
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO daily_metrics (day, orders, revenue_cents, shipped, cancelled)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (day) DO UPDATE SET
                 orders = orders + excluded.orders,
                 revenue_cents = revenue_cents + excluded.revenue_cents,
                 shipped = shipped + excluded.shipped,
                 cancelled = cancelled + excluded.cancelled",
        )
        .bind(event.occurred_at().date_naive().to_string())
        .bind(orders)
        .bind(revenue_cents)
        .bind(shipped)
        .bind(cancelled)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[projection(name = "daily-metrics")]
impl DailyMetrics {
    #[handles(OrderCreated)]
    async fn created(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderCreated>,
    ) -> Result<(), sqlx::Error> {
        Self::add(conn, event, (1, event.total_cents, 0, 0)).await
    }

    #[handles(OrderShipped)]
    async fn shipped(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderShipped>,
    ) -> Result<(), sqlx::Error> {
        Self::add(conn, event, (0, 0, 1, 0)).await
    }

    #[handles(OrderCancelled)]
    async fn cancelled(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderCancelled>,
    ) -> Result<(), sqlx::Error> {
        Self::add(conn, event, (0, 0, 0, 1)).await
    }

    #[reset]
    async fn clear(&mut self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM daily_metrics")
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// The read models' tables. A real service would keep this in its own migrations.
const READ_MODEL_TABLES: &str = "
    CREATE TABLE IF NOT EXISTS order_summary (
        order_id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        total_cents INTEGER NOT NULL,
        status TEXT NOT NULL,
        tracking_number TEXT
    );
    CREATE TABLE IF NOT EXISTS daily_metrics (
        day TEXT PRIMARY KEY,
        orders INTEGER NOT NULL,
        revenue_cents INTEGER NOT NULL,
        shipped INTEGER NOT NULL,
        cancelled INTEGER NOT NULL
    );";

// ---- Wiring it together -----------------------------------------------------------------

/// What the command line asks for.
struct Options {
    /// `None`: a database in memory.
    file: Option<String>,
    rebuild: bool,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let mut options = Options {
            file: Some("quickstart.db".into()),
            rebuild: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--rebuild" => options.rebuild = true,
                "--memory" => options.file = None,
                "--db" => {
                    let file = args
                        .next()
                        .ok_or_else(|| anyhow::anyhow!("--db needs a file"))?;
                    options.file = Some(file);
                }
                other => anyhow::bail!(
                    "unknown argument `{other}`; use --rebuild, --memory or --db FILE"
                ),
            }
        }
        Ok(options)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    // One line chooses where events, checkpoints and dead letters live; the same works with
    // "postgres://..." (feature `postgres`) or "memory:".
    let url = match &options.file {
        Some(file) => format!("sqlite://{file}"),
        None => "sqlite::memory:".to_owned(),
    };
    let storage = Storage::connect(&url).await?;
    let pool = sqlite_pool(&storage)?;
    sqlx::raw_sql(READ_MODEL_TABLES).execute(&pool).await?;
    match &options.file {
        Some(file) => println!(
            "Storage: SQLite file {}  (run again to resume; delete it to start over)",
            absolute(file)
        ),
        None => println!("Storage: {storage}  (nothing is kept)"),
    }

    let store = storage.event_store();
    let appended = append_orders(store.as_ref()).await?;
    println!("Appended {appended}\n");

    // Retries are short here so the example finishes at once; the default waits 2, 4 and 8 s.
    let retry = RetryConfig::builder()
        .max_retries(2)
        .initial_delay(Duration::from_millis(10))
        .build()?;
    let unit = Arc::new(SqliteTransactionUnit::new(pool.clone()));
    let mut registry = ProjectionRegistry::new();
    registry.register(
        TransactionalRunner::new(OrderSummary, unit.clone())
            .retry_policy(ExponentialBackoffRetryPolicy::new(retry)),
    )?;
    registry.register(TransactionalRunner::new(DailyMetrics, unit))?;

    let checkpoints = storage.repositories().checkpoint_repository().clone();
    let mut starts = Vec::new();
    for name in ["order-summary", "daily-metrics"] {
        starts.push((name, checkpoints.get_checkpoint(name).await?));
    }

    let mut coordinator = ProjectionCoordinator::new(registry, store).batch_size(100);
    let report = if options.rebuild {
        println!("== Rebuild: both read models emptied and replayed from the first event ==");
        coordinator.rebuild_all().await?
    } else {
        println!("== Catch-up ==");
        coordinator.catch_up_all().await?
    };
    for projection in &report.projections {
        let name = &projection.name;
        let start = starts
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, position)| *position);
        let from = match start {
            Some(position) if !options.rebuild => format!("resumed from checkpoint {position}"),
            _ => "from the first event".to_owned(),
        };
        let dead = projection.dead_lettered.len();
        println!(
            "  {name:<14} {from}: applied {} event{}, dead-lettered {dead}",
            projection.applied,
            plural(projection.applied),
        );
        if let Some(error) = &projection.error {
            println!("  {name:<14} FAILED: {error}");
        }
    }

    print_read_models(&pool).await?;

    println!("\n== Checkpoints ==");
    for checkpoint in checkpoints.get_all_checkpoints().await? {
        println!(
            "  {:<14} position {}  events processed {}  last event {}",
            checkpoint.projection_name,
            checkpoint.position,
            checkpoint.events_processed,
            checkpoint.last_event_type.as_deref().unwrap_or("-"),
        );
    }

    println!("\n== Dead letters ==");
    for entry in storage
        .repositories()
        .dead_letter_repository()
        .get_failed_events(Default::default())
        .await?
    {
        println!(
            "  #{} {} at position {} in `{}` after {} attempts: {}",
            entry.id,
            entry.event_type,
            entry.position.map_or("-".into(), |p| p.to_string()),
            entry.projection_name,
            entry.attempts,
            entry.error_message
        );
    }

    println!("\n== Health ==");
    let health = coordinator.health_check().await;
    println!("  overall: {}", health.status);
    for projection in &health.projections {
        let lag = projection.lag.as_ref();
        println!(
            "  {:<14} {}  (behind by {} events, head {})",
            projection.name,
            projection.status,
            lag.map_or(0, |l| l.events_behind),
            lag.map_or(0, |l| l.head_position),
        );
    }
    Ok(())
}

fn sqlite_pool(storage: &Storage) -> anyhow::Result<SqlitePool> {
    match storage.backend() {
        projections::backend::Backend::Sqlite { pool, .. } => Ok(pool.clone()),
        _ => anyhow::bail!("the quickstart's read models are SQLite tables"),
    }
}

fn absolute(file: &str) -> String {
    std::path::absolute(file)
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| file.to_owned())
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

async fn print_read_models(pool: &SqlitePool) -> anyhow::Result<()> {
    println!("\n== Order summary (read model, table order_summary) ==");
    let rows = sqlx::query(
        "SELECT order_id, customer_id, total_cents, status, tracking_number
         FROM order_summary ORDER BY customer_id, order_id",
    )
    .fetch_all(pool)
    .await?;
    for row in rows {
        let id: String = row.try_get("order_id")?;
        let cents: i64 = row.try_get("total_cents")?;
        let tracking: Option<String> = row.try_get("tracking_number")?;
        println!(
            "  {}  customer {:<8} {:>8.2}  {:<9} {}",
            id.get(..8).unwrap_or(&id),
            row.try_get::<String, _>("customer_id")?,
            cents as f64 / 100.0,
            row.try_get::<String, _>("status")?,
            tracking.unwrap_or_default()
        );
    }

    println!(
        "\n== Daily metrics (read model, table daily_metrics; by the day each event occurred) =="
    );
    let rows = sqlx::query(
        "SELECT day, orders, revenue_cents, shipped, cancelled FROM daily_metrics ORDER BY day",
    )
    .fetch_all(pool)
    .await?;
    for row in rows {
        println!(
            "  {}  orders {}  revenue {:.2}  shipped {}  cancelled {}",
            row.try_get::<String, _>("day")?,
            row.try_get::<i64, _>("orders")?,
            row.try_get::<i64, _>("revenue_cents")? as f64 / 100.0,
            row.try_get::<i64, _>("shipped")?,
            row.try_get::<i64, _>("cancelled")?
        );
    }
    println!(
        "  (daily-metrics counts every shipment event, including the one for an order that\n   \
         does not exist, which order-summary could not apply and dead-lettered)"
    );
    Ok(())
}

/// On an empty store: three orders, the third shipped without ever being created (a bad
/// event). On a store that has them: one new order, so each run has something new to apply.
async fn append_orders(store: &dyn EventStore) -> anyhow::Result<String> {
    let created = |id, customer: &str, total_cents| -> projections::AnyEvent {
        Envelope::new(
            id,
            OrderCreated {
                customer_id: customer.into(),
                total_cents,
            },
        )
        .into()
    };
    let head = store.head_position().await?;
    if head > 0 {
        let order = Uuid::new_v4();
        let customers = ["carol", "dave", "erin", "frank", "grace", "heidi"];
        let customer = customers[(head as usize) % customers.len()];
        let total = 1_000 + (head as i64 % 7) * 250;
        let result = store
            .append(
                order,
                ExpectedVersion::NoStream,
                vec![created(order, customer, total)],
            )
            .await?;
        return Ok(format!(
            "1 new event (an order for {customer}) at position {}",
            result.last_position
        ));
    }
    let (a, b, ghost) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    store
        .append(
            a,
            ExpectedVersion::NoStream,
            vec![
                created(a, "alice", 4_200),
                Envelope::new(
                    a,
                    OrderShipped {
                        tracking_number: "TRK-001".into(),
                    },
                )
                .into(),
            ],
        )
        .await?;
    store
        .append(
            b,
            ExpectedVersion::NoStream,
            vec![
                created(b, "bob", 1_999),
                Envelope::new(
                    b,
                    OrderCancelled {
                        reason: "changed mind".into(),
                    },
                )
                .into(),
            ],
        )
        .await?;
    let result = store
        .append(
            ghost,
            ExpectedVersion::NoStream,
            vec![
                Envelope::new(
                    ghost,
                    OrderShipped {
                        tracking_number: "TRK-404".into(),
                    },
                )
                .into(),
            ],
        )
        .await?;
    Ok(format!(
        "{} events: three orders, one of them shipped without being created",
        result.last_position
    ))
}

/// The quickstart's projections, tested with the test kit (`projections::testing`) on a
/// SQLite database in memory.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use projections::AnyEvent;
    use projections::retry::NoRetryPolicy;
    use projections::testing::{event, given};

    async fn database() -> (Storage, SqlitePool, Arc<SqliteTransactionUnit>) {
        let storage = Storage::sqlite_in_memory().await.unwrap();
        let pool = sqlite_pool(&storage).unwrap();
        sqlx::raw_sql(READ_MODEL_TABLES)
            .execute(&pool)
            .await
            .unwrap();
        let unit = Arc::new(SqliteTransactionUnit::new(pool.clone()));
        (storage, pool, unit)
    }

    fn orders() -> (Uuid, Vec<AnyEvent>) {
        let (shipped, cancelled, ghost) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let events = vec![
            event(
                shipped,
                OrderCreated {
                    customer_id: "alice".into(),
                    total_cents: 4200,
                },
            ),
            event(
                cancelled,
                OrderCreated {
                    customer_id: "bob".into(),
                    total_cents: 1999,
                },
            ),
            event(
                shipped,
                OrderShipped {
                    tracking_number: "TRK-001".into(),
                },
            ),
            event(
                cancelled,
                OrderCancelled {
                    reason: "changed mind".into(),
                },
            ),
            event(
                ghost,
                OrderShipped {
                    tracking_number: "TRK-404".into(),
                },
            ),
        ];
        (shipped, events)
    }

    async fn summary(pool: &SqlitePool) -> Vec<(String, String, Option<String>)> {
        sqlx::query_as(
            "SELECT order_id, status, tracking_number FROM order_summary ORDER BY order_id",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    }

    async fn metrics(pool: &SqlitePool) -> Vec<(String, i64, i64, i64, i64)> {
        sqlx::query_as(
            "SELECT day, orders, revenue_cents, shipped, cancelled FROM daily_metrics ORDER BY day",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_shipment_of_an_unknown_order_is_dead_lettered_and_the_rest_applied() {
        let (_storage, pool, unit) = database().await;
        let (shipped, events) = orders();
        let runner = TransactionalRunner::new(OrderSummary, unit).retry_policy(NoRetryPolicy);
        let outcome = given(events).when_run(runner).await;
        let rows = summary(&pool).await;
        let order = rows
            .iter()
            .find(|(id, _, _)| *id == shipped.to_string())
            .unwrap();
        assert_eq!(
            (order.1.as_str(), order.2.as_deref()),
            ("shipped", Some("TRK-001"))
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(outcome.report().applied, 4);
        assert_eq!(outcome.dead_letters().len(), 1);
        assert!(
            outcome.dead_letters()[0]
                .error_message
                .contains("does not exist")
        );
    }

    #[tokio::test]
    async fn daily_metrics_count_every_shipment() {
        let (_storage, pool, unit) = database().await;
        let (_, events) = orders();
        let outcome = given(events)
            .when_run(TransactionalRunner::new(DailyMetrics, unit))
            .await;
        let days = metrics(&pool).await;
        assert_eq!(days.len(), 1);
        let (_, orders, revenue, shipped, cancelled) = &days[0];
        assert_eq!((*orders, *revenue, *shipped, *cancelled), (2, 6199, 2, 1));
        assert!(outcome.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn a_rebuild_gives_the_tables_built_one_event_at_a_time() {
        let (storage, pool, unit) = database().await;
        let (_, events) = orders();
        let store = storage.event_store();
        for event in &events {
            let aggregate = event.metadata().aggregate_id;
            store
                .append(aggregate, ExpectedVersion::Any, vec![event.clone()])
                .await
                .unwrap();
        }
        let mut registry = ProjectionRegistry::new();
        registry
            .register(
                TransactionalRunner::new(OrderSummary, unit.clone()).retry_policy(NoRetryPolicy),
            )
            .unwrap();
        registry
            .register(TransactionalRunner::new(DailyMetrics, unit))
            .unwrap();
        let mut coordinator = ProjectionCoordinator::new(registry, store).batch_size(1);
        coordinator.catch_up_all().await.unwrap();
        let incremental = (summary(&pool).await, metrics(&pool).await);

        let report = coordinator.rebuild_all().await.unwrap();
        assert!(report.projections.iter().all(|p| p.error.is_none()));
        assert_eq!((summary(&pool).await, metrics(&pool).await), incremental);
        assert_eq!(incremental.0.len(), 2);
    }
}
