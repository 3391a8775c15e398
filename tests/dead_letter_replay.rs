//! Replaying dead letters: a replay interrupted at any point can be run again, and an entry
//! being (or left) `retrying` counts as not applied meanwhile.
//!
//! An interruption is the replaying task dropped while its handler runs (what a killed process
//! leaves in storage: the entry marked `retrying`, the handler's effect lost with the process);
//! a new runner over the same storage then stands for the restarted process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Deposited, positioned};
use projections::coordinator::ProjectionCoordinator;
use projections::runner::{ProjectionRunner, Repositories};
use projections::{
    AnyEvent, DLQRepository, DLQStatus, Envelope, EventStore, ExpectedVersion,
    InMemoryCheckpointRepository, InMemoryDLQRepository, InMemoryEventStore, NoRetryPolicy,
    ProjectionRegistry, projection,
};
use tokio::sync::Notify;
use uuid::Uuid;

/// Balances whose handler fails while `failing` is set and, while `hold` is set, announces
/// itself on `entered` and never returns (the process dies in it).
#[derive(Default)]
struct Gated {
    balances: HashMap<Uuid, i64>,
    failing: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
    entered: Arc<Notify>,
}

#[projection(name = "gated")]
impl Gated {
    #[handles(Deposited)]
    async fn deposited(&mut self, event: &Envelope<Deposited>) -> Result<(), String> {
        if self.failing.load(Ordering::SeqCst) {
            return Err("the ledger service is down".to_owned());
        }
        if self.hold.load(Ordering::SeqCst) {
            self.entered.notify_one();
            std::future::pending::<()>().await;
        }
        *self.balances.entry(event.aggregate_id()).or_default() += event.amount;
        Ok(())
    }
}

fn runner(projection: Gated, storage: &Repositories) -> ProjectionRunner<Gated> {
    ProjectionRunner::builder(projection)
        .storage(storage.clone())
        .retry_policy(NoRetryPolicy)
        .build()
}

/// One deposit of 40 on `account`, dead-lettered; returns the entry's id.
async fn dead_letter_a_deposit(storage: &Repositories, account: Uuid) -> i64 {
    let failing = Gated {
        failing: Arc::new(AtomicBool::new(true)),
        ..Gated::default()
    };
    let mut runner = runner(failing, storage);
    let events = positioned(
        vec![Envelope::new(account, Deposited { amount: 40 }).into()],
        1,
    );
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!(outcome.dead_lettered.len(), 1);
    outcome.dead_lettered[0]
}

#[tokio::test]
async fn a_replay_killed_in_its_handler_leaves_the_entry_unapplied_and_replayable() {
    let dead = Arc::new(InMemoryDLQRepository::new());
    let storage = Repositories::new(Arc::new(InMemoryCheckpointRepository::new()), dead.clone());
    let account = Uuid::new_v4();
    let id = dead_letter_a_deposit(&storage, account).await;

    // The first process replays, and dies inside the handler.
    let holding = Gated {
        hold: Arc::new(AtomicBool::new(true)),
        ..Gated::default()
    };
    let entered = Arc::clone(&holding.entered);
    let mut doomed = runner(holding, &storage);
    let replay = tokio::spawn(async move { doomed.replay_dead_letter(id).await });
    entered.notified().await;
    replay.abort();
    assert!(replay.await.unwrap_err().is_cancelled());

    let entry = dead.get_by_id(id).await.unwrap().unwrap();
    assert_eq!(entry.status, DLQStatus::Retrying);

    // The next process: the entry counts as not applied, health says so.
    let mut restarted = runner(Gated::default(), &storage);
    assert_eq!(restarted.dead_letter_count().await.unwrap(), 1);
    assert_eq!(restarted.unresolved_dead_letters().await.unwrap()[0].id, id);
    let mut registry = ProjectionRegistry::new();
    registry
        .register(runner(Gated::default(), &storage))
        .unwrap();
    let coordinator = ProjectionCoordinator::new(registry, Arc::new(InMemoryEventStore::new()));
    let health = coordinator.health_check().await;
    assert!(!health.is_healthy(), "{:?}", health.status);
    assert_eq!(health.projections[0].dead_letters, 1);

    // And the replay runs again, to the end.
    restarted.replay_dead_letter(id).await.unwrap();
    assert_eq!(restarted.projection().balances[&account], 40);
    let entry = dead.get_by_id(id).await.unwrap().unwrap();
    assert_eq!(entry.status, DLQStatus::Resolved);
    assert_eq!(restarted.dead_letter_count().await.unwrap(), 0);
}

#[tokio::test]
async fn the_coordinator_replays_entries_left_retrying() {
    let dead = Arc::new(InMemoryDLQRepository::new());
    let storage = Repositories::new(Arc::new(InMemoryCheckpointRepository::new()), dead.clone());
    let store = Arc::new(InMemoryEventStore::new());
    let account = Uuid::new_v4();
    let deposit: AnyEvent = Envelope::new(account, Deposited { amount: 40 }).into();
    store
        .append(account, ExpectedVersion::NoStream, vec![deposit])
        .await
        .unwrap();
    let id = dead_letter_a_deposit(&storage, account).await;
    // Left `retrying` by a process that died during the replay.
    dead.mark_retrying(id).await.unwrap();

    let mut registry = ProjectionRegistry::new();
    registry
        .register(runner(Gated::default(), &storage))
        .unwrap();
    let handle = ProjectionCoordinator::new(registry, store).start().unwrap();
    handle.wait_for_checkpoint("gated", 1).await.unwrap();
    assert_eq!(handle.projection_status("gated").unwrap().dead_letters, 1);
    assert!(!handle.health().is_healthy());

    let report = handle.replay_dead_letters("gated").await.unwrap();
    assert_eq!(report.replayed, [id]);
    assert!(report.failed.is_empty());
    assert_eq!(
        handle
            .read(move |gated: &Gated| gated.balances[&account])
            .await
            .unwrap(),
        40
    );
    assert_eq!(handle.projection_status("gated").unwrap().dead_letters, 0);
    assert!(handle.health().is_healthy());
}
