//! The quickstart: an orders domain, two projections, one bad event, all in memory.
//!
//! Run it with `cargo run --example quickstart`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use projections::coordinator::ProjectionCoordinator;
use projections::retry::RetryConfig;
use projections::runner::Repositories;
use projections::{
    Envelope, Event, EventStore, ExpectedVersion, ExponentialBackoffRetryPolicy,
    InMemoryEventStore, ProjectionRegistry, ProjectionRunner, projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ---- The events -------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderCreated {
    customer_id: String,
    total_cents: u64,
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

// ---- A read model of orders -------------------------------------------------------------

#[derive(Debug)]
struct OrderRow {
    customer_id: String,
    total_cents: u64,
    status: &'static str,
    tracking_number: Option<String>,
}

#[derive(Default)]
struct OrderSummary {
    orders: HashMap<Uuid, OrderRow>,
}

/// Shipping or cancelling an order that was never created is a bug in the event stream.
#[derive(Debug, thiserror::Error)]
#[error("order {0} does not exist")]
struct UnknownOrder(Uuid);

#[projection(name = "order-summary")]
impl OrderSummary {
    #[handles(OrderCreated)]
    async fn created(&mut self, event: &Envelope<OrderCreated>) {
        self.orders.insert(
            event.aggregate_id(),
            OrderRow {
                customer_id: event.customer_id.clone(),
                total_cents: event.total_cents,
                status: "created",
                tracking_number: None,
            },
        );
    }

    #[handles(OrderShipped)]
    async fn shipped(&mut self, event: &Envelope<OrderShipped>) -> Result<(), UnknownOrder> {
        let order = self
            .orders
            .get_mut(&event.aggregate_id())
            .ok_or(UnknownOrder(event.aggregate_id()))?;
        order.status = "shipped";
        order.tracking_number = Some(event.tracking_number.clone());
        Ok(())
    }

    #[handles(OrderCancelled)]
    async fn cancelled(&mut self, event: &Envelope<OrderCancelled>) -> Result<(), UnknownOrder> {
        let order = self
            .orders
            .get_mut(&event.aggregate_id())
            .ok_or(UnknownOrder(event.aggregate_id()))?;
        order.status = "cancelled";
        Ok(())
    }

    #[reset]
    async fn clear(&mut self) {
        self.orders.clear();
    }
}

// ---- A read model of daily metrics ------------------------------------------------------

#[derive(Debug, Default)]
struct DayMetrics {
    orders: u64,
    revenue_cents: u64,
    shipped: u64,
    cancelled: u64,
}

#[derive(Default)]
struct DailyMetrics {
    days: BTreeMap<NaiveDate, DayMetrics>,
}

impl DailyMetrics {
    fn day<E>(&mut self, event: &Envelope<E>) -> &mut DayMetrics {
        self.days
            .entry(event.occurred_at().date_naive())
            .or_default()
    }
}

#[projection(name = "daily-metrics")]
impl DailyMetrics {
    #[handles(OrderCreated)]
    async fn created(&mut self, event: &Envelope<OrderCreated>) {
        let day = self.day(event);
        day.orders += 1;
        day.revenue_cents += event.total_cents;
    }

    #[handles(OrderShipped)]
    async fn shipped(&mut self, event: &Envelope<OrderShipped>) {
        self.day(event).shipped += 1;
    }

    #[handles(OrderCancelled)]
    async fn cancelled(&mut self, event: &Envelope<OrderCancelled>) {
        self.day(event).cancelled += 1;
    }

    #[reset]
    async fn clear(&mut self) {
        self.days.clear();
    }
}

// ---- Wiring it together -----------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let store = Arc::new(InMemoryEventStore::new());
    append_orders(&store).await?;

    // Both projections share one checkpoint table and one dead-letter queue. Retries are
    // short here so the example finishes at once; the default waits 2, 4 and 8 seconds.
    let storage = Repositories::in_memory();
    let retry = RetryConfig::builder()
        .max_retries(2)
        .initial_delay(Duration::from_millis(10))
        .build()?;

    let mut registry = ProjectionRegistry::new();
    registry.register_projection(
        ProjectionRunner::builder(OrderSummary::default())
            .storage(storage.clone())
            .retry_policy(ExponentialBackoffRetryPolicy::new(retry))
            .build(),
    )?;
    registry.register_projection(
        ProjectionRunner::builder(DailyMetrics::default())
            .storage(storage.clone())
            .build(),
    )?;

    let mut coordinator = ProjectionCoordinator::new(registry, store.clone()).batch_size(100);
    let report = coordinator.catch_up().await?;
    println!("== Catch-up ==");
    for projection in &report.projections {
        let name = &projection.name;
        println!(
            "  {name:<14} applied {}, dead-lettered {}",
            projection.applied,
            projection.dead_lettered.len()
        );
        if let Some(error) = &projection.error {
            println!("  {name:<14} FAILED: {error}");
        }
    }

    println!("\n== Order summary (read model) ==");
    if let Some(summary) = coordinator.registry().projection::<OrderSummary>() {
        let mut orders: Vec<_> = summary.orders.iter().collect();
        orders.sort_by(|a, b| a.1.customer_id.cmp(&b.1.customer_id));
        for (id, row) in orders {
            println!(
                "  {}  customer {:<6} {:>8.2}  {:<9} {}",
                &id.to_string()[..8],
                row.customer_id,
                row.total_cents as f64 / 100.0,
                row.status,
                row.tracking_number.as_deref().unwrap_or("")
            );
        }
    }

    println!("\n== Daily metrics (read model) ==");
    if let Some(metrics) = coordinator.registry().projection::<DailyMetrics>() {
        for (day, m) in &metrics.days {
            println!(
                "  {day}  orders {}  revenue {:.2}  shipped {}  cancelled {}",
                m.orders,
                m.revenue_cents as f64 / 100.0,
                m.shipped,
                m.cancelled
            );
        }
        println!(
            "  (daily-metrics counts every shipment event, including the one for an order that\n   \
             does not exist, which order-summary could not apply and dead-lettered)"
        );
    }

    println!("\n== Checkpoints ==");
    for checkpoint in storage
        .checkpoint_repository()
        .get_all_checkpoints()
        .await?
    {
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

/// Three orders; the third is shipped without ever being created: a bad event.
async fn append_orders(store: &InMemoryEventStore) -> anyhow::Result<()> {
    let (a, b, ghost) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let created = |id, customer: &str, total_cents| {
        Envelope::new(
            id,
            OrderCreated {
                customer_id: customer.into(),
                total_cents,
            },
        )
        .into()
    };
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
    store
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
    Ok(())
}

/// The quickstart's projections, tested with the test kit (`projections::testing`).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use projections::testing::{
        event, given, rebuild_equals_incremental, redelivery_changes_nothing,
    };

    fn orders() -> (Uuid, Vec<projections::AnyEvent>) {
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

    #[tokio::test]
    async fn a_shipment_of_an_unknown_order_is_dead_lettered_and_the_rest_applied() {
        let (shipped, events) = orders();
        let outcome = given(events).when(OrderSummary::default()).await;
        let order = &outcome.read_model().orders[&shipped];
        assert_eq!(
            (order.status, order.tracking_number.as_deref()),
            ("shipped", Some("TRK-001"))
        );
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
        let (_, events) = orders();
        let outcome = given(events).when(DailyMetrics::default()).await;
        let day = outcome.read_model().days.values().next().unwrap();
        assert_eq!((day.orders, day.shipped, day.cancelled), (2, 2, 1));
        assert!(outcome.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn both_read_models_rebuild_to_what_they_built_incrementally() {
        let (_, events) = orders();
        let summary = |s: &OrderSummary| {
            let mut rows: Vec<_> = s.orders.iter().map(|(id, r)| (*id, r.status)).collect();
            rows.sort();
            rows
        };
        rebuild_equals_incremental(OrderSummary::default, &events, summary).await;
        redelivery_changes_nothing(OrderSummary::default, &events, summary).await;
        let metrics = |m: &DailyMetrics| {
            m.days
                .values()
                .map(|d| (d.orders, d.revenue_cents, d.shipped, d.cancelled))
                .collect::<Vec<_>>()
        };
        rebuild_equals_incremental(DailyMetrics::default, &events, metrics).await;
        redelivery_changes_nothing(DailyMetrics::default, &events, metrics).await;
    }
}
