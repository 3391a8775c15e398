//! An orders dashboard in PostgreSQL: the read model of the Python library's "Complete
//! Example", an `orders` table and daily `order_metrics`, kept by set-based handlers (a run of
//! events per call, written with `unnest` arrays) that commit in the same transaction as the
//! projection's checkpoint.
//!
//! Run it with `cargo run --example postgres_dashboard --features postgres` against
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Everything lives in the schema `dashboard_example`: the event store, checkpoints and dead
//! letters (created by our migrations) and the two read-model tables. Reruns are idempotent:
//! the orders have fixed ids and are appended with `ExpectedVersion::NoStream`, so an order
//! that is already stored is left alone, and the projection carries on from its checkpoint
//! (applying nothing new on a rerun). `--rebuild` clears the read model and the checkpoint and
//! replays every event; the dashboard comes out the same. `DROP SCHEMA dashboard_example
//! CASCADE` starts from nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use projections::coordinator::ProjectionCoordinator;
use projections::postgres::{self, PgPool, PostgreSQLEventStore, Schema};
use projections::runner::EventOrder;
use projections::store::AppendError;
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, PgConnection, ProjectionRegistry,
    projection,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use uuid::Uuid;

/// The schema of everything this example writes; a validated identifier, so it may be
/// formatted into SQL.
const SCHEMA: &str = "dashboard_example";

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

// ---- The read model ---------------------------------------------------------------------

const CREATE_TABLES: &str = "
    CREATE TABLE IF NOT EXISTS dashboard_example.orders (
        id              uuid        PRIMARY KEY,
        customer_id     text        NOT NULL,
        total_cents     bigint      NOT NULL,
        status          text        NOT NULL,
        tracking_number text,
        created_at      timestamptz NOT NULL,
        shipped_at      timestamptz
    );
    CREATE TABLE IF NOT EXISTS dashboard_example.order_metrics (
        date           date   PRIMARY KEY,
        orders_created bigint NOT NULL DEFAULT 0,
        orders_shipped bigint NOT NULL DEFAULT 0,
        revenue_cents  bigint NOT NULL DEFAULT 0
    );";

/// The dashboard: one row per order, one row of metrics per day (UTC).
///
/// Its handlers are set-based: each takes a run of events of its type at once and writes it
/// with two statements (`unnest` arrays), whatever the run's length, instead of two per event.
/// It is registered with `EventOrder::PerAggregate` (an order's own events keep their order;
/// the daily counters are sums, which do not mind the order of different orders), so a
/// batch's `OrderCreated` events reach `created` in one call and its `OrderShipped` events
/// reach `shipped` in another, although the two types alternate in the log.
///
/// The metric upserts add to the day's counters, so applying an event twice would count it
/// twice; the transactional runner commits them with the checkpoint, so each event is applied
/// exactly once. When a call fails, the runner finds the failing event (by halving the run,
/// each try in a fresh transaction), so only that event is dead-lettered.
struct OrderDashboard;

#[projection(name = "order-dashboard")]
impl OrderDashboard {
    #[handles(OrderCreated)]
    async fn created(
        &mut self,
        conn: &mut PgConnection,
        events: &[Envelope<OrderCreated>],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.aggregate_id()).collect();
        let customers: Vec<&str> = events.iter().map(|e| e.customer_id.as_str()).collect();
        let totals: Vec<i64> = events.iter().map(|e| e.total_cents).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at()).collect();
        sqlx::query(
            "INSERT INTO dashboard_example.orders (id, customer_id, total_cents, status, created_at)
             SELECT id, customer_id, total_cents, 'created', created_at
             FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[])
                  AS t(id, customer_id, total_cents, created_at)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&customers)
        .bind(&totals)
        .bind(&times)
        .execute(&mut *conn)
        .await?;

        // One row per day: an upsert cannot touch the same row twice in one statement.
        let mut days: BTreeMap<NaiveDate, (i64, i64)> = BTreeMap::new();
        for event in events {
            let day = days.entry(event.occurred_at().date_naive()).or_default();
            day.0 += 1;
            day.1 += event.total_cents;
        }
        let dates: Vec<NaiveDate> = days.keys().copied().collect();
        let created: Vec<i64> = days.values().map(|d| d.0).collect();
        let revenue: Vec<i64> = days.values().map(|d| d.1).collect();
        sqlx::query(
            "INSERT INTO dashboard_example.order_metrics (date, orders_created, revenue_cents)
             SELECT * FROM unnest($1::date[], $2::bigint[], $3::bigint[])
             ON CONFLICT (date) DO UPDATE SET
                 orders_created = order_metrics.orders_created + EXCLUDED.orders_created,
                 revenue_cents = order_metrics.revenue_cents + EXCLUDED.revenue_cents",
        )
        .bind(&dates)
        .bind(&created)
        .bind(&revenue)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    #[handles(OrderShipped)]
    async fn shipped(
        &mut self,
        conn: &mut PgConnection,
        events: &[Envelope<OrderShipped>],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.aggregate_id()).collect();
        let tracking: Vec<&str> = events.iter().map(|e| e.tracking_number.as_str()).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at()).collect();
        sqlx::query(
            "UPDATE dashboard_example.orders AS o
             SET status = 'shipped', tracking_number = t.tracking_number, shipped_at = t.shipped_at
             FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])
                  AS t(id, tracking_number, shipped_at)
             WHERE o.id = t.id",
        )
        .bind(&ids)
        .bind(&tracking)
        .bind(&times)
        .execute(&mut *conn)
        .await?;

        let mut days: BTreeMap<NaiveDate, i64> = BTreeMap::new();
        for event in events {
            *days.entry(event.occurred_at().date_naive()).or_default() += 1;
        }
        let dates: Vec<NaiveDate> = days.keys().copied().collect();
        let shipped: Vec<i64> = days.values().copied().collect();
        sqlx::query(
            "INSERT INTO dashboard_example.order_metrics (date, orders_shipped)
             SELECT * FROM unnest($1::date[], $2::bigint[])
             ON CONFLICT (date) DO UPDATE SET
                 orders_shipped = order_metrics.orders_shipped + EXCLUDED.orders_shipped",
        )
        .bind(&dates)
        .bind(&shipped)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    #[reset]
    async fn clear(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("TRUNCATE dashboard_example.orders, dashboard_example.order_metrics")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

// ---- Wiring it together -----------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rebuild = std::env::args().skip(1).any(|arg| arg == "--rebuild");
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = PgPool::connect(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach PostgreSQL at {url}: {e}"))?;

    // Our tables (events, checkpoints, dead letters), then the read model's, in one schema.
    let schema = Schema::named(SCHEMA)?;
    postgres::migrate_schema(&pool, &schema).await?;
    sqlx::raw_sql(CREATE_TABLES).execute(&pool).await?;

    let store = Arc::new(PostgreSQLEventStore::with_schema(
        pool.clone(),
        schema.clone(),
    ));
    let (appended, head) = append_orders(&store).await?;
    println!("== Events ==");
    println!("  appended {appended} new events; the store's last position is {head}");

    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
        pool.clone(),
        &schema,
    ));
    let mut registry = ProjectionRegistry::new();
    // Per-aggregate order: each batch's events of one type reach their handler in one call.
    let runner =
        TransactionalRunner::new(OrderDashboard, unit).event_order(EventOrder::PerAggregate);
    registry.register(runner)?;
    let mut coordinator = ProjectionCoordinator::new(registry, store.clone()).batch_size(100);

    println!("\n== Before catch-up ==");
    print_health(&coordinator).await;

    println!("\n== Catch-up ==");
    if rebuild {
        let report = coordinator.rebuild_projection("order-dashboard").await?;
        println!(
            "  order-dashboard  rebuilt: read model and checkpoint cleared, {} events applied",
            report.applied
        );
    } else {
        let report = coordinator.catch_up_all().await?;
        for projection in &report.projections {
            let name = &projection.name;
            match &projection.error {
                Some(error) => println!("  {name}  FAILED: {error}"),
                None if projection.applied == 0 && projection.dead_lettered.is_empty() => {
                    println!(
                        "  {name}  applied 0 events: all were applied by an earlier run \
                         (`-- --rebuild` replays them)"
                    )
                }
                None => println!(
                    "  {name}  applied {} events, dead-lettered {}",
                    projection.applied,
                    projection.dead_lettered.len()
                ),
            }
        }
    }

    print_orders(&pool).await?;
    print_metrics(&pool).await?;

    println!("\n== Checkpoint and lag ==");
    print_health(&coordinator).await;
    Ok(())
}

/// Five orders over three days; four of them shipped. Each order is appended as a stream of
/// its own with `NoStream`, so an order stored by an earlier run is a conflict, skipped here.
/// Returns the number of events appended and the last position.
async fn append_orders(store: &PostgreSQLEventStore) -> anyhow::Result<(u64, u64)> {
    // (customer, total in cents, created at, shipped at)
    let orders = [
        ("alice", 4_200, at(3, 9, 15), Some(at(3, 16, 40))),
        ("bob", 1_999, at(3, 11, 2), Some(at(4, 10, 5))),
        ("carol", 12_500, at(4, 8, 30), Some(at(4, 17, 55))),
        ("alice", 899, at(4, 19, 45), Some(at(5, 9, 20))),
        ("dave", 7_350, at(5, 14, 10), None),
    ];
    let mut appended = 0;
    for (n, (customer, total_cents, created_at, shipped_at)) in orders.into_iter().enumerate() {
        // Fixed ids, so that a rerun finds the orders it appended before.
        let id = Uuid::from_u128(0xda5b_0a4d_0000_4000_8000_0000_0000_0000 | (n as u128 + 1));
        let mut events: Vec<AnyEvent> = vec![
            Envelope::new(
                id,
                OrderCreated {
                    customer_id: customer.into(),
                    total_cents,
                },
            )
            .with_occurred_at(created_at)
            .into(),
        ];
        if let Some(shipped_at) = shipped_at {
            let tracking_number = format!("TRK-{:04}", 1000 + n);
            events.push(
                Envelope::new(id, OrderShipped { tracking_number })
                    .with_occurred_at(shipped_at)
                    .into(),
            );
        }
        let count = events.len() as u64;
        match store.append(id, ExpectedVersion::NoStream, events).await {
            // Count events, not positions: concurrent appends may interleave their positions.
            Ok(_) => appended += count,
            Err(AppendError::Conflict { .. }) => {} // stored by an earlier run
            Err(error) => return Err(error.into()),
        }
    }
    // A reader never passes an append still in flight (the gap-safe horizon), so our events
    // may become readable a moment after another process's append commits.
    let last: i64 = sqlx::query_scalar(&format!(
        "SELECT coalesce(max(position), 0) FROM {SCHEMA}.projection_events"
    ))
    .fetch_one(store.pool())
    .await?;
    let last = u64::try_from(last)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.head_position().await? < last && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((appended, last))
}

/// March `day`, 2025, at `hour:minute` UTC.
fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, day, hour, minute, 0)
        .single()
        .unwrap_or_default()
}

fn dollars(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

async fn print_orders(pool: &PgPool) -> anyhow::Result<()> {
    println!("\n== Orders (read model) ==");
    println!(
        "  {:<8}  {:<8} {:>9}  {:<8} {:<9} {:<16}  shipped",
        "order", "customer", "total", "status", "tracking", "created"
    );
    let rows = sqlx::query(
        "SELECT id, customer_id, total_cents, status, tracking_number, created_at, shipped_at
         FROM dashboard_example.orders ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?;
    let time = |t: Option<DateTime<Utc>>| t.map_or("-".into(), |t| t.format("%F %R").to_string());
    for row in rows {
        let id: Uuid = row.try_get("id")?;
        let tracking: Option<String> = row.try_get("tracking_number")?;
        println!(
            "  {:<8}  {:<8} {:>9}  {:<8} {:<9} {:<16}  {}",
            &id.simple().to_string()[24..],
            row.try_get::<String, _>("customer_id")?,
            dollars(row.try_get("total_cents")?),
            row.try_get::<String, _>("status")?,
            tracking.as_deref().unwrap_or("-"),
            time(row.try_get("created_at")?),
            time(row.try_get("shipped_at")?),
        );
    }
    Ok(())
}

async fn print_metrics(pool: &PgPool) -> anyhow::Result<()> {
    println!("\n== Daily order metrics (read model) ==");
    println!(
        "  {:<10}  {:>7}  {:>7}  {:>9}",
        "day", "created", "shipped", "revenue"
    );
    let rows = sqlx::query(
        "SELECT date, orders_created, orders_shipped, revenue_cents
         FROM dashboard_example.order_metrics ORDER BY date",
    )
    .fetch_all(pool)
    .await?;
    for row in rows {
        println!(
            "  {:<10}  {:>7}  {:>7}  {:>9}",
            row.try_get::<NaiveDate, _>("date")?,
            row.try_get::<i64, _>("orders_created")?,
            row.try_get::<i64, _>("orders_shipped")?,
            dollars(row.try_get("revenue_cents")?),
        );
    }
    Ok(())
}

async fn print_health(coordinator: &ProjectionCoordinator) {
    let health = coordinator.health_check().await;
    for projection in &health.projections {
        println!("  {}: {}", projection.name, projection.status);
        match &projection.checkpoint {
            Some(c) => println!(
                "    checkpoint   position {} (last event there: {}), {} events applied, moved {}",
                c.position,
                c.last_event_type.as_deref().unwrap_or("-"),
                c.events_processed,
                c.last_processed_at.map_or("never".into(), |t| t
                    .format("at %F %T UTC (processing time)")
                    .to_string()),
            ),
            None => println!("    checkpoint   none yet"),
        }
        if let Some(lag) = &projection.lag {
            println!(
                "    lag          {} events behind the head at position {}{}",
                lag.events_behind,
                lag.head_position,
                lag.oldest_unprocessed_age
                    .map_or(String::new(), |age| format!(
                        "; the oldest waits for {:.1} s",
                        age.as_secs_f64()
                    )),
            );
        }
        println!("    dead letters {}", projection.dead_letters);
    }
}
