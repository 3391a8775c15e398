//! Registries: fan-out only to subscribers, isolation of a failing projection, ordering, and
//! every outcome reported.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::future::Future;
use std::sync::{Arc, Mutex};

use common::{Balances, Tally, deposit, positioned, rename, withdraw};
use projections::registry::AsyncEventHandler;
use projections::registry::DuplicateProjection;
use projections::{
    AnyEvent, HandlerError, NoRetryPolicy, ProjectionRegistry, ProjectionRunner, SubscriberRegistry,
};
use uuid::Uuid;

fn quick(projection: Balances) -> ProjectionRunner<Balances> {
    ProjectionRunner::builder(projection)
        .retry_policy(NoRetryPolicy)
        .build()
}

#[tokio::test]
async fn a_failing_projection_never_stops_the_others_and_its_failure_is_reported() {
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(quick(Balances::default()))
        .unwrap();
    registry.register_projection(Tally::default()).unwrap();
    let account = Uuid::new_v4();
    // A poison withdrawal dead-letters in `balances`; `tally` applies everything.
    let events = positioned(
        vec![
            deposit(account, 20),
            withdraw(account, 13),
            withdraw(account, 5),
        ],
        1,
    );

    let report = registry.dispatch_many(&events).await;
    assert!(
        report.is_ok(),
        "dead-lettering is an outcome, not a failure"
    );
    let balances = report.projection("balances").unwrap().as_ref().unwrap();
    assert_eq!((balances.applied, balances.dead_lettered.len()), (2, 1));
    let tally = registry.projection::<Tally>().unwrap();
    assert_eq!((tally.deposits, tally.withdrawals), (1, 2));
    assert_eq!(
        registry.projection::<Balances>().unwrap().balances[&account],
        15
    );
}

#[tokio::test]
async fn a_stopped_projection_is_reported_while_the_others_go_on() {
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(Balances::default())
                .retry_policy(NoRetryPolicy)
                .on_failure(projections::FailurePolicy::Stop)
                .build(),
        )
        .unwrap();
    registry.register_projection(Tally::default()).unwrap();
    let account = Uuid::new_v4();
    let events = positioned(vec![withdraw(account, 13), deposit(account, 1)], 1);

    let report = registry.dispatch_many(&events).await;
    assert!(!report.is_ok());
    let failures: Vec<String> = report.failures().map(|f| f.to_string()).collect();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].contains("balances") && failures[0].contains("stopped"),
        "{failures:?}"
    );
    assert_eq!(registry.projection::<Tally>().unwrap().deposits, 1);
}

#[tokio::test]
async fn dispatch_reaches_only_projections_subscribed_to_the_type() {
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Tally::default()).unwrap();
    let report = registry
        .dispatch(&positioned(vec![rename(Uuid::new_v4())], 1)[0])
        .await;
    assert!(
        report.projections.is_empty(),
        "nobody subscribes to Renamed"
    );
    let report = registry
        .dispatch(&positioned(vec![deposit(Uuid::new_v4(), 1)], 2)[0])
        .await;
    assert_eq!(report.projections.len(), 1);
    assert_eq!(report.applied(), 1);
}

#[tokio::test]
async fn dispatch_many_keeps_order_per_projection() {
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(quick(Balances::default()))
        .unwrap();
    let account = Uuid::new_v4();
    // Order matters: a withdrawal before its deposit would give a different history of
    // balances, and the final checkpoint is the last position.
    let events = positioned((1..=50).map(|n| deposit(account, n)).collect(), 1);
    let report = registry.dispatch_many(&events).await;
    let outcome = report.projection("balances").unwrap().as_ref().unwrap();
    assert_eq!(outcome.applied, 50);
    assert_eq!(outcome.checkpoint, Some(50));
    assert_eq!(
        registry.projection::<Balances>().unwrap().balances[&account],
        1275
    );
}

#[tokio::test]
async fn two_projections_with_one_name_are_refused() {
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Tally::default()).unwrap();
    assert_eq!(
        registry.register_projection(Tally::default()),
        Err(DuplicateProjection("tally".into()))
    );
}

#[tokio::test]
async fn register_unregister_and_counts() {
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Tally::default()).unwrap();
    registry
        .register_projection(quick(Balances::default()))
        .unwrap();
    let handler = registry.register_handler(Recorder::default());
    assert_eq!(
        (registry.projection_count(), registry.handler_count()),
        (2, 1)
    );
    assert_eq!(registry.projection_names(), vec!["tally", "balances"]);
    assert!(registry.unregister_projection("tally").is_some());
    assert!(registry.unregister_projection("tally").is_none());
    assert!(registry.unregister_handler(handler));
    assert!(!registry.unregister_handler(handler));
    assert_eq!(
        (registry.projection_count(), registry.handler_count()),
        (1, 0)
    );
}

#[tokio::test]
async fn reset_all_clears_every_projection() {
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Tally::default()).unwrap();
    let report = registry
        .dispatch_many(&positioned(vec![deposit(Uuid::new_v4(), 1)], 1))
        .await;
    assert!(report.is_ok());
    let results = registry.reset_all().await;
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(registry.projection::<Tally>().unwrap().deposits, 0);
}

/// Records what it saw; fails on withdrawals of 13.
#[derive(Default, Clone)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
}

impl AsyncEventHandler for Recorder {
    fn event_types(&self) -> &[&'static str] {
        &["Withdrawn"]
    }

    fn handle(
        &mut self,
        event: &AnyEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let seen = self.seen.clone();
        let amount = event.downcast::<common::Withdrawn>().map(|e| e.amount);
        async move {
            seen.lock().unwrap().push(format!("{amount:?}"));
            if amount == Some(13) {
                return Err(HandlerError::new("handler refused 13"));
            }
            Ok(())
        }
    }
}

#[tokio::test]
async fn handlers_get_what_can_handle_accepts_and_their_failures_are_reported() {
    let mut registry = ProjectionRegistry::new();
    let recorder = Recorder::default();
    registry.register_handler(recorder.clone());
    registry.register_projection(Tally::default()).unwrap();
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 1),
            withdraw(account, 13),
            withdraw(account, 2),
        ],
        1,
    );
    let report = registry.dispatch_many(&events).await;

    assert_eq!(*recorder.seen.lock().unwrap(), vec!["Some(13)", "Some(2)"]);
    assert_eq!(report.handlers.len(), 2);
    let failures: Vec<String> = report.failures().map(|f| f.to_string()).collect();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains("handler refused 13"), "{failures:?}");
    assert_eq!(registry.projection::<Tally>().unwrap().withdrawals, 2);
}

#[tokio::test]
async fn a_concurrency_limit_still_delivers_to_everyone() {
    let mut registry = ProjectionRegistry::new().with_concurrency_limit(1);
    registry.register_projection(Tally::default()).unwrap();
    registry
        .register_projection(quick(Balances::default()))
        .unwrap();
    let events = positioned(vec![deposit(Uuid::new_v4(), 4)], 1);
    let report = registry.dispatch_many(&events).await;
    assert_eq!(report.applied(), 2);
}

#[tokio::test]
async fn subscriber_registry_dispatches_only_to_interested_subscribers() {
    let mut subscribers = SubscriberRegistry::new();
    let tally = subscribers.register(Tally::default());
    let balances = subscribers.register(Balances::default());
    assert_eq!(subscribers.subscribers_for("Deposited"), &[tally, balances]);
    assert!(subscribers.subscribers_for("Renamed").is_empty());

    let account = Uuid::new_v4();
    let results = subscribers.dispatch(&rename(account)).await;
    assert!(results.is_empty());
    let results = subscribers
        .dispatch_many(&[deposit(account, 1), withdraw(account, 13)])
        .await;
    assert_eq!(results.len(), 4);
    assert!(
        results[3].1.is_err(),
        "the poison withdrawal fails in balances"
    );
    assert!(results[0].1.is_ok() && results[1].1.is_ok() && results[2].1.is_ok());

    assert!(subscribers.unregister(tally));
    assert_eq!(subscribers.subscribers_for("Deposited"), &[balances]);
    assert_eq!(subscribers.len(), 1);
}

// --- Push mode: events without a position ------------------------------------------------

#[tokio::test]
async fn push_mode_skips_the_immediate_repeat_of_an_event_without_a_position() {
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Tally::default()).unwrap();
    let account = Uuid::new_v4();
    let event = deposit(account, 1);
    assert_eq!(event.position(), None);

    let first = registry.dispatch(&event).await;
    let first = first.projection("tally").unwrap().as_ref().unwrap();
    assert_eq!((first.applied, first.skipped), (1, 0));
    // Delivered again (a caller retrying its delivery): the handler does not run again.
    let second = registry.dispatch(&event).await;
    let second = second.projection("tally").unwrap().as_ref().unwrap();
    assert_eq!((second.applied, second.skipped), (0, 1));
    assert_eq!(registry.projection::<Tally>().unwrap().deposits, 1);

    // The same event twice in a row in one delivery.
    let twice = deposit(account, 2);
    let report = registry.dispatch_many(&[twice.clone(), twice]).await;
    let outcome = report.projection("tally").unwrap().as_ref().unwrap();
    assert_eq!((outcome.applied, outcome.skipped), (1, 1));
    assert_eq!(registry.projection::<Tally>().unwrap().deposits, 2);
}

#[tokio::test]
async fn push_mode_runs_a_repeat_that_is_not_immediate_again() {
    // The documented limit: the runner remembers only the last event it moved past, so a
    // repeat after another event is applied again (at least once).
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Tally::default()).unwrap();
    let account = Uuid::new_v4();
    let (a, b) = (deposit(account, 1), withdraw(account, 2));
    let report = registry.dispatch_many(&[a.clone(), b, a]).await;
    assert_eq!(report.applied(), 3);
    let tally = registry.projection::<Tally>().unwrap();
    assert_eq!((tally.deposits, tally.withdrawals), (2, 1));
}

#[tokio::test]
async fn push_mode_skips_the_immediate_repeat_of_a_dead_lettered_event() {
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(quick(Balances::default()))
        .unwrap();
    let poison = withdraw(Uuid::new_v4(), 13);
    let first = registry.dispatch(&poison).await;
    let first = first.projection("balances").unwrap().as_ref().unwrap();
    assert_eq!(first.dead_lettered.len(), 1);
    let second = registry.dispatch(&poison).await;
    let second = second.projection("balances").unwrap().as_ref().unwrap();
    assert_eq!((second.dead_lettered.len(), second.skipped), (0, 1));
    let runner = registry.projection_runner::<Balances>().unwrap();
    assert_eq!(runner.dead_letter_count().await.unwrap(), 1);
    assert_eq!(
        runner
            .projection()
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the handler ran once"
    );
}

#[tokio::test]
async fn a_runner_alone_skips_the_immediate_repeat_of_an_event_without_a_position() {
    let mut runner = ProjectionRunner::new(Tally::default());
    let event = deposit(Uuid::new_v4(), 1);
    assert_eq!(
        runner.handle(&event).await.unwrap(),
        projections::runner::EventOutcome::Applied
    );
    assert_eq!(
        runner.handle(&event).await.unwrap(),
        projections::runner::EventOutcome::Skipped
    );
    assert_eq!(runner.projection().deposits, 1);
}
