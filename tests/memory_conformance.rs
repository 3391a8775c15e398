//! The storage conformance suite against the in-memory backends: every check of
//! `conformance/` is one test, named after the behaviour it pins.
//!
//! Each check runs twice: against a fresh instance of its own, and against one instance that
//! every check of the binary shares while they run concurrently and that already holds
//! unrelated data, as a database shared by several tests would. The second run keeps the
//! suite itself honest about never assuming an empty or private backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod conformance;

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use projections::checkpoint::CheckpointUpdate;
use projections::dlq::FailedEvent;
use projections::storage::BoxFuture;
use projections::store::{AppendError, AppendResult, Backlog};
use projections::{
    AnyEvent, CheckpointRepository, DLQRepository, Envelope, EventStore, ExpectedVersion,
    InMemoryCheckpointRepository, InMemoryDLQRepository, InMemoryEventStore, StorageError,
    StoredEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use uuid::Uuid;

conformance::checkpoint_tests!(checkpoint, async {
    Arc::new(InMemoryCheckpointRepository::new())
});
conformance::dlq_tests!(dlq, async { Arc::new(InMemoryDLQRepository::new()) });
conformance::store_tests!(store, async { Arc::new(InMemoryEventStore::new()) });

conformance::checkpoint_tests!(shared_checkpoint, shared_checkpoints());
conformance::dlq_tests!(shared_dlq, shared_dlq_repository());
conformance::store_tests!(shared_store, shared_event_store());

/// The trait's default filtered read, over the in-memory store's `read_all` (its default
/// backlog counts event types only, by design, so the tenant count is not checked).
mod default_filtered_store {
    use super::*;

    fn store() -> Arc<dyn EventStore> {
        Arc::new(Unfiltered(InMemoryEventStore::new()))
    }

    #[tokio::test]
    async fn read_filtered_selects_types_aggregates_and_tenants() {
        conformance::store::read_filtered_selects_types_aggregates_and_tenants(store()).await;
    }

    #[tokio::test]
    async fn read_filtered_reads_on_over_what_it_does_not_select() {
        conformance::store::read_filtered_reads_on_over_what_it_does_not_select(store()).await;
    }
}

/// A store that implements only what [`EventStore`] requires, so that it reads and counts
/// through the trait's defaults.
struct Unfiltered(InMemoryEventStore);

impl EventStore for Unfiltered {
    fn append(
        &self,
        aggregate_id: Uuid,
        expected: ExpectedVersion,
        events: Vec<AnyEvent>,
    ) -> BoxFuture<'_, Result<AppendResult, AppendError>> {
        self.0.append(aggregate_id, expected, events)
    }
    fn read_stream(
        &self,
        aggregate_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        self.0.read_stream(aggregate_id)
    }
    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        self.0.read_all(after, limit)
    }
    fn head_position(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        self.0.head_position()
    }
    fn backlog<'a>(
        &'a self,
        after: u64,
        event_types: &'a [&'static str],
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        self.0.backlog(after, event_types)
    }
}

/// Data that belongs to no check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "memory_conformance.unrelated")]
struct Unrelated {
    n: u32,
}

#[derive(Debug)]
struct UnrelatedError;

impl std::fmt::Display for UnrelatedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unrelated failure")
    }
}

impl std::error::Error for UnrelatedError {}

async fn shared_checkpoints() -> Arc<InMemoryCheckpointRepository> {
    static SHARED: OnceCell<Arc<InMemoryCheckpointRepository>> = OnceCell::const_new();
    let repo = SHARED
        .get_or_init(|| async {
            let repo = InMemoryCheckpointRepository::new();
            for (position, name) in (1..).zip(["Zeta", "alpha", "_unrelated", "conformance"]) {
                repo.update_checkpoint(name, CheckpointUpdate::new(position))
                    .await
                    .unwrap();
            }
            Arc::new(repo)
        })
        .await;
    Arc::clone(repo)
}

async fn shared_dlq_repository() -> Arc<InMemoryDLQRepository> {
    static SHARED: OnceCell<Arc<InMemoryDLQRepository>> = OnceCell::const_new();
    let repo = SHARED
        .get_or_init(|| async {
            let repo = InMemoryDLQRepository::new();
            for (n, projection) in ["Unrelated", "unrelated", "Unrelated"].iter().enumerate() {
                let mut failure = FailedEvent::new(
                    Uuid::new_v4(),
                    *projection,
                    "memory_conformance.unrelated",
                    serde_json::json!({}),
                    &UnrelatedError,
                    1,
                );
                failure.failed_at = Utc::now() - TimeDelta::days(2);
                let id = repo.add_failed_event(failure).await.unwrap();
                if n == 2 {
                    repo.mark_resolved(id, "someone").await.unwrap();
                }
            }
            Arc::new(repo)
        })
        .await;
    Arc::clone(repo)
}

async fn shared_event_store() -> Arc<InMemoryEventStore> {
    static SHARED: OnceCell<Arc<InMemoryEventStore>> = OnceCell::const_new();
    let store = SHARED
        .get_or_init(|| async {
            let store = InMemoryEventStore::new();
            let aggregate = Uuid::new_v4();
            let events = (0..3)
                .map(|n| AnyEvent::new(Envelope::new(aggregate, Unrelated { n })))
                .collect();
            store
                .append_now(aggregate, ExpectedVersion::NoStream, events)
                .unwrap();
            Arc::new(store)
        })
        .await;
    Arc::clone(store)
}
