//! The coordinator: catch-up from the store per projection, rebuilds, independence of
//! projections, health and live tailing (paused time).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Balances, Tally, deposit, withdraw};
use projections::coordinator::{CoordinatorError, ProjectionCoordinator, ProjectionStatus};
use projections::{
    EventStore, ExpectedVersion, FailurePolicy, InMemoryEventStore, NoRetryPolicy,
    ProjectionRegistry, ProjectionRunner,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn registry(on_failure: FailurePolicy) -> ProjectionRegistry {
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(Balances::default())
                .retry_policy(NoRetryPolicy)
                .on_failure(on_failure)
                .build(),
        )
        .unwrap();
    registry.register_projection(Tally::default()).unwrap();
    registry
}

async fn store_with(events: Vec<(Uuid, Vec<projections::AnyEvent>)>) -> Arc<InMemoryEventStore> {
    let store = Arc::new(InMemoryEventStore::new());
    for (account, batch) in events {
        store
            .append(account, ExpectedVersion::Any, batch)
            .await
            .unwrap();
    }
    store
}

#[tokio::test]
async fn catch_up_reads_in_batches_until_the_head() {
    let account = Uuid::new_v4();
    let store = store_with(vec![(
        account,
        (1..=25).map(|n| deposit(account, n)).collect(),
    )])
    .await;
    let mut coordinator =
        ProjectionCoordinator::new(registry(FailurePolicy::DeadLetter), store.clone())
            .batch_size(7);
    let report = coordinator.catch_up_all().await.unwrap();
    assert!(report.is_ok());
    assert_eq!(report.applied(), 50);
    assert_eq!(
        coordinator
            .registry()
            .projection::<Balances>()
            .unwrap()
            .balances[&account],
        325
    );

    // A second pass finds nothing new; new events are picked up from the checkpoint.
    assert_eq!(coordinator.catch_up_all().await.unwrap().applied(), 0);
    store
        .append(
            account,
            ExpectedVersion::Exact(25),
            vec![withdraw(account, 25)],
        )
        .await
        .unwrap();
    assert_eq!(coordinator.catch_up_all().await.unwrap().applied(), 2);
    assert_eq!(
        coordinator
            .registry()
            .projection::<Balances>()
            .unwrap()
            .balances[&account],
        300
    );
}

#[tokio::test]
async fn a_stopped_projection_does_not_hold_back_the_others() {
    let account = Uuid::new_v4();
    let store = store_with(vec![(
        account,
        vec![
            withdraw(account, 13),
            deposit(account, 4),
            deposit(account, 6),
        ],
    )])
    .await;
    let mut coordinator =
        ProjectionCoordinator::new(registry(FailurePolicy::Stop), store).batch_size(1);
    let report = coordinator.catch_up_all().await.unwrap();
    let failures: Vec<_> = report.failures().map(|(name, _)| name.to_owned()).collect();
    assert_eq!(failures, vec!["balances"]);
    let tally = coordinator.registry().projection::<Tally>().unwrap();
    assert_eq!((tally.deposits, tally.withdrawals), (2, 1));

    let health = coordinator.health_check().await;
    assert!(matches!(health.status, ProjectionStatus::Stopped { .. }));
    let balances = &health.projections[0];
    assert!(
        matches!(&balances.status, ProjectionStatus::Stopped { reason } if reason.contains("unlucky"))
    );
    assert_eq!(health.projections[1].status, ProjectionStatus::Healthy);
}

#[tokio::test]
async fn health_reports_failing_with_its_dead_letter_count_and_lagging() {
    let account = Uuid::new_v4();
    let store = store_with(vec![(
        account,
        vec![deposit(account, 1), withdraw(account, 13)],
    )])
    .await;
    let mut coordinator =
        ProjectionCoordinator::new(registry(FailurePolicy::DeadLetter), store.clone());
    let health = coordinator.health_check().await;
    assert_eq!(
        health.projections[1].status,
        ProjectionStatus::Lagging { events_behind: 2 }
    );

    coordinator.catch_up_all().await.unwrap();
    let health = coordinator.health_check().await;
    assert_eq!(health.status, ProjectionStatus::Failing { dead_letters: 1 });
    assert_eq!(health.projections[0].dead_letters, 1);
    assert_eq!(
        health.projections[0].checkpoint.as_ref().unwrap().position,
        2
    );
    assert_eq!(health.projections[1].status, ProjectionStatus::Healthy);
    assert!(health.projections[1].lag.as_ref().unwrap().is_caught_up());
}

#[tokio::test]
async fn rebuild_gives_the_same_read_model_and_counts_what_it_applied() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let store = store_with(vec![
        (a, vec![deposit(a, 10), withdraw(a, 3)]),
        (b, vec![deposit(b, 7)]),
    ])
    .await;
    let mut coordinator = ProjectionCoordinator::new(registry(FailurePolicy::DeadLetter), store);
    coordinator.catch_up_all().await.unwrap();
    let before = coordinator
        .registry()
        .projection::<Balances>()
        .unwrap()
        .balances
        .clone();

    assert_eq!(
        coordinator
            .rebuild_projection("balances")
            .await
            .unwrap()
            .applied,
        3
    );
    assert_eq!(
        coordinator
            .registry()
            .projection::<Balances>()
            .unwrap()
            .balances,
        before
    );
    let report = coordinator.rebuild_all().await.unwrap();
    assert_eq!(report.applied(), 6);
    assert_eq!(
        coordinator
            .registry()
            .projection::<Balances>()
            .unwrap()
            .balances,
        before
    );
    assert_eq!(
        coordinator
            .registry()
            .projection::<Tally>()
            .unwrap()
            .deposits,
        2
    );
    assert!(matches!(
        coordinator.rebuild_projection("nope").await,
        Err(CoordinatorError::UnknownProjection(_))
    ));
}

#[tokio::test]
async fn catchup_of_one_projection_leaves_the_others_alone() {
    let account = Uuid::new_v4();
    let store = store_with(vec![(account, vec![deposit(account, 1)])]).await;
    let mut coordinator = ProjectionCoordinator::new(registry(FailurePolicy::DeadLetter), store);
    assert_eq!(coordinator.catchup("tally").await.unwrap().applied, 1);
    assert!(
        coordinator
            .registry()
            .projection::<Balances>()
            .unwrap()
            .balances
            .is_empty()
    );
}

#[tokio::test]
async fn dispatch_events_counts_applications() {
    let account = Uuid::new_v4();
    let mut coordinator = ProjectionCoordinator::new(
        registry(FailurePolicy::DeadLetter),
        Arc::new(InMemoryEventStore::new()),
    );
    let (applied, report) = coordinator
        .dispatch_events(&[deposit(account, 2), withdraw(account, 13)])
        .await;
    assert_eq!(
        applied, 3,
        "two by tally, one by balances (the other is dead-lettered)"
    );
    assert!(report.is_ok());
}

#[tokio::test(start_paused = true)]
async fn run_follows_the_store_live_until_shutdown() {
    let account = Uuid::new_v4();
    let store = store_with(vec![(account, vec![deposit(account, 1)])]).await;
    let mut coordinator =
        ProjectionCoordinator::new(registry(FailurePolicy::DeadLetter), store.clone())
            .poll_interval(Duration::from_secs(3600));
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            store
                .append(
                    account,
                    ExpectedVersion::Exact(1),
                    vec![deposit(account, 10)],
                )
                .await
                .unwrap();
            // The append notifies the coordinator; well before the hour-long poll interval,
            // the event is applied.
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        })
    };
    coordinator.run(shutdown).await.unwrap();
    writer.await.unwrap();
    assert_eq!(
        coordinator
            .registry()
            .projection::<Balances>()
            .unwrap()
            .balances[&account],
        11
    );
}
