//! Properties: a rebuild gives the same read model as incremental processing, and
//! redelivering any prefix of the history changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;

use common::{Balances, Tally, deposit, rename, withdraw};
use projections::coordinator::ProjectionCoordinator;
use projections::{
    AnyEvent, EventStore, ExpectedVersion, InMemoryEventStore, NoRetryPolicy, ProjectionRegistry,
    ProjectionRunner,
};
use proptest::prelude::*;
use uuid::Uuid;

/// One step of a generated history: (account index, kind, amount).
fn history() -> impl Strategy<Value = Vec<(usize, u8, i64)>> {
    prop::collection::vec((0usize..3, 0u8..3, 1i64..30), 0..60)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(future)
}

async fn store_of(steps: &[(usize, u8, i64)]) -> (Arc<InMemoryEventStore>, [Uuid; 3]) {
    let accounts = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let store = Arc::new(InMemoryEventStore::new());
    for &(account, kind, amount) in steps {
        let id = accounts[account];
        let event: AnyEvent = match kind {
            0 => deposit(id, amount),
            1 => withdraw(id, amount), // amount 13 is a poison event: dead-lettered
            _ => rename(id),
        };
        store
            .append(id, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
    (store, accounts)
}

fn registry() -> ProjectionRegistry {
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(Balances::default())
                .retry_policy(NoRetryPolicy)
                .build(),
        )
        .unwrap();
    registry.register_projection(Tally::default()).unwrap();
    registry
}

fn snapshot(coordinator: &ProjectionCoordinator) -> (Vec<(Uuid, i64)>, (u32, u32)) {
    let mut balances: Vec<_> = coordinator
        .registry()
        .projection::<Balances>()
        .unwrap()
        .balances
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    balances.sort();
    let tally = coordinator.registry().projection::<Tally>().unwrap();
    (balances, (tally.deposits, tally.withdrawals))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_rebuild_equals_incremental_processing(steps in history(), cut in 0usize..60, batch in 1usize..8) {
        block_on(async {
            let (store, _) = store_of(&steps).await;
            // Incremental: two passes, the first over a prefix of the store.
            let mut incremental = ProjectionCoordinator::new(registry(), store.clone()).batch_size(batch);
            let all = store.read_all(0, usize::MAX).await.unwrap();
            let cut = cut.min(all.len());
            let prefix: Vec<AnyEvent> = all[..cut].iter().filter_map(|e| e.event().cloned()).collect();
            let (_, report) = incremental.dispatch_events(&prefix).await;
            prop_assert!(report.is_ok());
            incremental.catch_up_all().await.unwrap();

            let mut rebuilt = ProjectionCoordinator::new(registry(), store.clone()).batch_size(batch);
            rebuilt.catch_up_all().await.unwrap();
            rebuilt.rebuild_all().await.unwrap();
            prop_assert_eq!(snapshot(&incremental), snapshot(&rebuilt));
            Ok(())
        })?;
    }

    #[test]
    fn redelivering_any_prefix_changes_nothing(steps in history(), cut in 0usize..60) {
        block_on(async {
            let (store, _) = store_of(&steps).await;
            let mut coordinator = ProjectionCoordinator::new(registry(), store.clone());
            coordinator.catch_up_all().await.unwrap();
            let before = snapshot(&coordinator);
            let all: Vec<AnyEvent> = store
                .read_all(0, usize::MAX)
                .await
                .unwrap()
                .iter()
                .filter_map(|e| e.event().cloned())
                .collect();
            let prefix = &all[..cut.min(all.len())];
            let (applied, report) = coordinator.dispatch_events(prefix).await;
            prop_assert_eq!(applied, 0);
            prop_assert!(report.is_ok());
            prop_assert_eq!(snapshot(&coordinator), before);
            Ok(())
        })?;
    }
}
