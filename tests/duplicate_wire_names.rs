//! Two event types of one wire name, declared in different modules: the program compiles,
//! but nothing may run on it. The coordinator refuses to start and every runner refuses to
//! run, naming both Rust types, before anything is applied or recorded.
//!
//! The global event registry is process-wide, so this conflict lives in a test binary of its
//! own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use projections::coordinator::{CoordinatorError, ProjectionCoordinator};
use projections::runner::RunnerError;
use projections::{
    AnyEvent, CheckpointRepository, Envelope, EventRegistry, EventStore, ExpectedVersion,
    InMemoryCheckpointRepository, InMemoryDLQRepository, InMemoryEventStore, ProjectionRegistry,
    ProjectionRunner, RegistryError, projection,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod billing {
    /// Billing's idea of a placed order.
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, projections::Event)]
    #[event(aggregate = "Order")]
    pub struct OrderPlaced {
        pub cents: u64,
    }
}

mod shipping {
    /// Shipping's idea of a placed order: the same default wire name, `OrderPlaced`.
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, projections::Event)]
    #[event(aggregate = "Order")]
    pub struct OrderPlaced {
        pub address: String,
    }
}

#[derive(Debug, Default)]
struct Revenue {
    cents: u64,
}

#[projection(name = "revenue")]
impl Revenue {
    #[handles(billing::OrderPlaced)]
    async fn placed(&mut self, event: &Envelope<billing::OrderPlaced>) {
        self.cents += event.cents;
    }

    #[reset]
    async fn clear(&mut self) {
        self.cents = 0;
    }
}

const BILLING: &str = "duplicate_wire_names::billing::OrderPlaced";
const SHIPPING: &str = "duplicate_wire_names::shipping::OrderPlaced";

fn placed(order: Uuid, cents: u64) -> AnyEvent {
    Envelope::new(order, billing::OrderPlaced { cents }).into()
}

fn shipped_to(order: Uuid, address: &str) -> AnyEvent {
    let payload = shipping::OrderPlaced {
        address: address.into(),
    };
    Envelope::new(order, payload).into()
}

fn assert_names_both(conflict: &RegistryError) {
    assert_eq!(conflict.event_type, "OrderPlaced");
    assert_eq!(conflict.types, [BILLING, SHIPPING]);
    let message = conflict.to_string();
    assert!(
        message.contains(BILLING) && message.contains(SHIPPING),
        "{message}"
    );
}

fn assert_coordinator_refuses(error: &CoordinatorError) {
    let CoordinatorError::AmbiguousEventType(conflict) = error else {
        panic!("expected a refusal, got {error:?}");
    };
    assert_names_both(conflict);
    let message = error.to_string();
    assert!(message.contains("refuse to start"), "{message}");
    assert!(
        message.contains(BILLING) && message.contains(SHIPPING),
        "{message}"
    );
}

fn assert_runner_refuses(error: &RunnerError) {
    let RunnerError::AmbiguousEventType { projection, source } = error else {
        panic!("expected a refusal, got {error:?}");
    };
    assert_eq!(projection, "revenue");
    assert_names_both(source);
    assert!(error.to_string().contains("refuses to run"), "{error}");
}

/// A store holding an event of each type, and a coordinator whose runner keeps its
/// checkpoint in `checkpoints`.
async fn coordinator(checkpoints: Arc<InMemoryCheckpointRepository>) -> ProjectionCoordinator {
    let store = Arc::new(InMemoryEventStore::new());
    let order = Uuid::new_v4();
    store
        .append(
            order,
            ExpectedVersion::Any,
            vec![placed(order, 1200), shipped_to(order, "1 Quay St")],
        )
        .await
        .unwrap();
    let storage =
        projections::runner::Repositories::new(checkpoints, Arc::new(InMemoryDLQRepository::new()));
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(Revenue::default())
                .storage(storage)
                .build(),
        )
        .unwrap();
    ProjectionCoordinator::new(registry, store)
}

#[test]
fn the_global_registry_reports_the_conflict() {
    assert_names_both(&EventRegistry::global().check().unwrap_err());
    let conflicts = EventRegistry::global().conflicts();
    assert_eq!(conflicts.len(), 1);
    assert_names_both(&conflicts[0]);
}

#[tokio::test]
async fn the_coordinator_refuses_to_start() {
    let checkpoints = Arc::new(InMemoryCheckpointRepository::new());
    let error = coordinator(checkpoints.clone()).await.start().unwrap_err();
    assert_coordinator_refuses(&error);
    assert_eq!(checkpoints.get_checkpoint("revenue").await.unwrap(), None);
}

#[tokio::test]
async fn run_refuses_at_once_without_waiting_for_the_token() {
    let checkpoints = Arc::new(InMemoryCheckpointRepository::new());
    let mut coordinator = coordinator(checkpoints.clone()).await;
    let never = CancellationToken::new();
    let result = tokio::time::timeout(Duration::from_secs(10), coordinator.run(never))
        .await
        .expect("run returns at once");
    assert_coordinator_refuses(&result.unwrap_err());
    // The projection is still in the registry, untouched.
    assert_eq!(
        coordinator
            .registry()
            .projection::<Revenue>()
            .unwrap()
            .cents,
        0
    );
    assert_eq!(checkpoints.get_checkpoint("revenue").await.unwrap(), None);
}

#[tokio::test]
async fn every_one_shot_pass_refuses_and_applies_nothing() {
    let checkpoints = Arc::new(InMemoryCheckpointRepository::new());
    let mut coordinator = coordinator(checkpoints.clone()).await;
    assert_coordinator_refuses(&coordinator.catch_up_all().await.unwrap_err());
    assert_coordinator_refuses(&coordinator.rebuild_all().await.unwrap_err());
    assert_coordinator_refuses(&coordinator.catchup("revenue").await.unwrap_err());
    assert_coordinator_refuses(&coordinator.rebuild_projection("revenue").await.unwrap_err());
    assert_eq!(
        coordinator
            .registry()
            .projection::<Revenue>()
            .unwrap()
            .cents,
        0
    );
    assert_eq!(checkpoints.get_checkpoint("revenue").await.unwrap(), None);
}

#[tokio::test]
async fn a_runner_alone_refuses_every_batch_reset_and_replay() {
    let checkpoints = Arc::new(InMemoryCheckpointRepository::new());
    let storage = projections::runner::Repositories::new(
        checkpoints.clone(),
        Arc::new(InMemoryDLQRepository::new()),
    );
    let mut runner = ProjectionRunner::builder(Revenue::default())
        .storage(storage)
        .build();
    let event = placed(Uuid::new_v4(), 5).map_metadata(|m| m.position = Some(1));
    assert_runner_refuses(&runner.handle(&event).await.unwrap_err());
    // Still refused on the next batch: nothing was marked as checked.
    assert_runner_refuses(&runner.handle_batch(&[event]).await.unwrap_err());
    assert_runner_refuses(&runner.reset().await.unwrap_err());
    assert_runner_refuses(&runner.replay_dead_letter(1).await.unwrap_err());
    assert_eq!(runner.projection().cents, 0);
    assert_eq!(checkpoints.get_checkpoint("revenue").await.unwrap(), None);
    // A refusal is the program's fault, not the storage's: nothing is halted durably.
    assert!(runner.halt().is_none());
}

#[tokio::test]
async fn push_mode_dispatch_reports_the_refusal_per_projection() {
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Revenue::default()).unwrap();
    let report = registry.dispatch(&placed(Uuid::new_v4(), 7)).await;
    assert!(!report.is_ok());
    let Some(Err(error)) = report.projection("revenue") else {
        panic!("expected the projection's refusal in {report:?}");
    };
    assert_runner_refuses(error);
    assert_eq!(registry.projection::<Revenue>().unwrap().cents, 0);
}
