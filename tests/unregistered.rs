//! The unregistered-event policy at run time: a projection that follows an aggregate type
//! (`Runner::follows_aggregates`, or `Projection::aggregates`) meets its
//! `#[projection(unregistered = ...)]` policy for an event of that aggregate it has no
//! handler for; events of other aggregates are passed over silently. Driven through the
//! coordinator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "common/captured.rs"]
mod captured;

use std::sync::Arc;
use std::time::Duration;

use captured::Captured;
use projections::coordinator::{ProjectionCoordinator, WorkerState};
use projections::projection::UnregisteredEventPolicy;
use projections::runner::Repositories;
use projections::{
    AnyEvent, DLQRepository, Envelope, Event, EventStore, ExpectedVersion, FailurePolicy,
    HandlerError, InMemoryCheckpointRepository, InMemoryDLQRepository, InMemoryEventStore,
    Projection, ProjectionRegistry, ProjectionRunner, projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "policy.order_placed", aggregate = "Order")]
struct OrderPlaced {
    cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "policy.order_cancelled", aggregate = "Order")]
struct OrderCancelled;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "policy.customer_renamed", aggregate = "Customer")]
struct CustomerRenamed;

#[derive(Debug, Default)]
struct Strict {
    cents: u64,
}

#[projection(name = "strict", unregistered = error)]
impl Strict {
    #[handles(OrderPlaced)]
    async fn placed(&mut self, event: &Envelope<OrderPlaced>) {
        self.cents += event.cents;
    }
}

#[derive(Debug, Default)]
struct Loud {
    cents: u64,
}

#[projection(name = "loud", unregistered = warn)]
impl Loud {
    #[handles(OrderPlaced)]
    async fn placed(&mut self, event: &Envelope<OrderPlaced>) {
        self.cents += event.cents;
    }
}

#[derive(Debug, Default)]
struct Quiet {
    cents: u64,
}

#[projection(name = "quiet")]
impl Quiet {
    #[handles(OrderPlaced)]
    async fn placed(&mut self, event: &Envelope<OrderPlaced>) {
        self.cents += event.cents;
    }
}

/// Written by hand: follows `Order` through `Projection::aggregates`, strict about it.
#[derive(Debug, Default)]
struct Audited {
    placed: u32,
}

impl Projection for Audited {
    fn name(&self) -> &str {
        "audited"
    }

    fn subscribed_to(&self) -> &[&'static str] {
        &[OrderPlaced::EVENT_TYPE]
    }

    fn aggregates(&self) -> &[&'static str] {
        &["Order"]
    }

    async fn handle(&mut self, event: &AnyEvent) -> Result<(), HandlerError> {
        if event.is::<OrderPlaced>() {
            self.placed += 1;
            return Ok(());
        }
        UnregisteredEventPolicy::Error.apply("audited", &[OrderPlaced::EVENT_TYPE], event)
    }

    async fn reset(&mut self) -> Result<(), HandlerError> {
        self.placed = 0;
        Ok(())
    }
}

/// Positions 1 to 5: placed, cancelled (order 1); renamed (a customer); placed, cancelled
/// (order 2).
async fn store() -> Arc<InMemoryEventStore> {
    let store = Arc::new(InMemoryEventStore::new());
    let (first, second, customer) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for (stream, events) in [
        (
            first,
            vec![
                AnyEvent::from(Envelope::new(first, OrderPlaced { cents: 100 })),
                Envelope::new(first, OrderCancelled).into(),
            ],
        ),
        (
            customer,
            vec![Envelope::new(customer, CustomerRenamed).into()],
        ),
        (
            second,
            vec![
                AnyEvent::from(Envelope::new(second, OrderPlaced { cents: 20 })),
                Envelope::new(second, OrderCancelled).into(),
            ],
        ),
    ] {
        store
            .append(stream, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
    }
    store
}

fn storage() -> (Repositories, Arc<InMemoryDLQRepository>) {
    let dead_letters = Arc::new(InMemoryDLQRepository::new());
    let storage = Repositories::new(
        Arc::new(InMemoryCheckpointRepository::new()),
        dead_letters.clone(),
    );
    (storage, dead_letters)
}

async fn coordinator(
    runner: impl projections::registry::RegisteredProjection,
) -> ProjectionCoordinator {
    let mut registry = ProjectionRegistry::new();
    registry.register(runner).unwrap();
    ProjectionCoordinator::new(registry, store().await)
}

#[tokio::test]
async fn error_dead_letters_each_unhandled_event_of_a_followed_aggregate_without_retrying() {
    let (storage, dead_letters) = storage();
    // The default retry policy (2, 4, 8 s): an unhandled event is not retried, so this
    // finishes at once and each entry records one attempt.
    let runner = ProjectionRunner::builder(Strict::default())
        .storage(storage)
        .follows_aggregates(["Order"])
        .build();
    let mut coordinator = coordinator(runner).await;
    let report = tokio::time::timeout(Duration::from_secs(5), coordinator.catch_up_all())
        .await
        .expect("no retry delays")
        .unwrap();

    let strict = report.projection("strict").unwrap();
    assert_eq!(strict.applied, 2);
    assert_eq!(strict.dead_lettered.len(), 2);
    assert_eq!(
        strict.not_subscribed, 0,
        "the customer's event is not its business: the store's filtered read leaves it out"
    );
    assert!(strict.error.is_none() && strict.stopped.is_none());
    let entries = dead_letters
        .get_failed_events(projections::dlq::DLQFilter::failed_in("strict"))
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    for entry in &entries {
        assert_eq!(entry.event_type, "policy.order_cancelled");
        assert_eq!(entry.attempts, 1);
        assert!(
            entry
                .error_message
                .contains("has no handler for event `policy.order_cancelled`"),
            "{}",
            entry.error_message
        );
    }
    assert_eq!(
        entries.iter().map(|e| e.position).collect::<Vec<_>>(),
        [Some(2), Some(5)]
    );
    assert_eq!(
        coordinator.registry().projection::<Strict>().unwrap().cents,
        120
    );
}

#[tokio::test]
async fn error_with_the_stop_policy_stops_the_worker_before_the_unhandled_event() {
    let (storage, dead_letters) = storage();
    let runner = ProjectionRunner::builder(Strict::default())
        .storage(storage)
        .on_failure(FailurePolicy::Stop)
        .build()
        .follows_aggregates(["Order"]);
    let handle = coordinator(runner).await.start().unwrap();
    let mut status = handle.watch("strict").unwrap();
    let snapshot = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| matches!(s.state, WorkerState::Stopped { .. })),
    )
    .await
    .expect("the worker stops")
    .unwrap()
    .clone();
    let WorkerState::Stopped { at } = snapshot.state else {
        unreachable!()
    };
    assert_eq!(at.position, Some(2));
    assert_eq!(at.event_type.as_deref(), Some("policy.order_cancelled"));
    assert!(at.error.contains("has no handler"), "{}", at.error);
    assert_eq!(snapshot.checkpoint, Some(1));
    assert_eq!(
        dead_letters
            .get_failed_events(projections::dlq::DLQFilter::all())
            .await
            .unwrap()
            .len(),
        0
    );
    let report = handle.shutdown(Duration::from_secs(5)).await;
    assert!(report.projection("strict").unwrap().stopped.is_some());
}

#[tokio::test]
async fn warn_logs_once_per_event_type_and_passes_over() {
    let captured = Captured::default();
    let _guard = captured.install();
    let (storage, dead_letters) = storage();
    let runner = ProjectionRunner::builder(Loud::default())
        .storage(storage)
        .build()
        .follows_aggregates(["Order"]);
    let mut coordinator = coordinator(runner).await;
    let report = coordinator.catch_up_all().await.unwrap();

    let loud = report.projection("loud").unwrap();
    assert!(loud.is_ok(), "{loud:?}");
    // Both cancellations passed over; the customer's event left out by the filtered read.
    assert_eq!((loud.applied, loud.not_subscribed), (2, 2));
    assert_eq!(
        dead_letters
            .get_failed_events(projections::dlq::DLQFilter::all())
            .await
            .unwrap()
            .len(),
        0
    );
    let log = captured.text();
    assert_eq!(
        log.matches("WARN").count(),
        1,
        "once for two cancellations: {log}"
    );
    assert!(log.contains("policy.order_cancelled"), "{log}");
    assert!(log.contains("`loud`"), "{log}");
    assert!(!log.contains("policy.customer_renamed"), "{log}");
    assert_eq!(
        coordinator.registry().projection::<Loud>().unwrap().cents,
        120
    );
}

#[tokio::test]
async fn ignore_passes_over_without_a_word() {
    let captured = Captured::default();
    let _guard = captured.install();
    let runner = ProjectionRunner::new(Quiet::default()).follows_aggregates(["Order"]);
    let mut coordinator = coordinator(runner).await;
    let report = coordinator.catch_up_all().await.unwrap();
    let quiet = report.projection("quiet").unwrap();
    assert!(quiet.is_ok(), "{quiet:?}");
    // Both cancellations passed over; the customer's event left out by the filtered read.
    assert_eq!((quiet.applied, quiet.not_subscribed), (2, 2));
    assert_eq!(captured.text(), "");
}

#[tokio::test]
async fn a_strict_projection_follows_the_aggregates_of_the_events_it_handles() {
    // `#[projection(unregistered = error)]` handling `OrderPlaced` follows `Order`: no runner
    // option needed. `ignore` (the default) follows nothing.
    assert_eq!(Projection::aggregates(&Strict::default()), ["Order"]);
    assert_eq!(Projection::aggregates(&Loud::default()), ["Order"]);
    assert!(Projection::aggregates(&Quiet::default()).is_empty());
    let (storage, dead_letters) = storage();
    let runner = ProjectionRunner::builder(Strict::default())
        .storage(storage)
        .build();
    assert_eq!(runner.followed_aggregates(), ["Order"]);
    let mut coordinator = coordinator(runner).await;
    let report = coordinator.catch_up_all().await.unwrap();
    let strict = report.projection("strict").unwrap();
    assert_eq!(strict.applied, 2);
    assert_eq!(strict.dead_lettered.len(), 2, "{strict:?}");
    let entries = dead_letters
        .get_failed_events(Default::default())
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.event_type == "policy.order_cancelled")
    );
}

#[tokio::test]
async fn without_followed_aggregates_every_unhandled_event_is_passed_over() {
    // Following nothing, by the runner option: the projection is never asked.
    let runner = ProjectionRunner::new(Strict::default()).follows_aggregates(Vec::<String>::new());
    assert!(runner.followed_aggregates().is_empty());
    let mut coordinator = coordinator(runner).await;
    let report = coordinator.catch_up_all().await.unwrap();
    let strict = report.projection("strict").unwrap();
    assert!(strict.is_ok(), "{strict:?}");
    // Following nothing, the projection reads only the types it handles.
    assert_eq!((strict.applied, strict.not_subscribed), (2, 0));
}

#[tokio::test]
async fn a_projection_may_declare_the_aggregates_it_follows() {
    let (storage, dead_letters) = storage();
    let runner = ProjectionRunner::builder(Audited::default())
        .storage(storage)
        .build();
    assert_eq!(runner.followed_aggregates(), ["Order"]);
    let mut coordinator = coordinator(runner).await;
    let report = coordinator.catch_up_all().await.unwrap();
    let audited = report.projection("audited").unwrap();
    assert_eq!(
        (
            audited.applied,
            audited.dead_lettered.len(),
            audited.not_subscribed
        ),
        // The customer's event is left out by the filtered read.
        (2, 2, 0)
    );
    assert_eq!(
        dead_letters
            .get_failed_events(projections::dlq::DLQFilter::all())
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn push_mode_dispatch_meets_the_policy_too() {
    let (storage, dead_letters) = storage();
    let mut registry = ProjectionRegistry::new();
    registry
        .register(
            ProjectionRunner::builder(Strict::default())
                .storage(storage)
                .follows_aggregates(["Order"])
                .build(),
        )
        .unwrap();
    let order = Uuid::new_v4();
    // `dispatch` hands an event only to the projections it concerns: those that handle its
    // type, and those that follow its aggregate type.
    let report = registry
        .dispatch(&Envelope::new(order, OrderCancelled).into())
        .await;
    let outcome = report.projection("strict").unwrap().as_ref().unwrap();
    assert_eq!(outcome.dead_lettered.len(), 1);
    let report = registry
        .dispatch(&Envelope::new(Uuid::new_v4(), CustomerRenamed).into())
        .await;
    assert!(report.projection("strict").is_none(), "not its business");
    assert_eq!(
        dead_letters
            .get_failed_events(projections::dlq::DLQFilter::all())
            .await
            .unwrap()
            .len(),
        1
    );
}
