//! A program whose upcasters leave a gap (version 1 upcasts, version 2 does not): it compiles,
//! but nothing may run on it. The coordinator refuses to start and a runner refuses every
//! batch, naming the type and the missing version, before any event is read.
//!
//! The global registry is process-wide, so this program lives in a test binary of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use projections::coordinator::{CoordinatorError, ProjectionCoordinator};
use projections::event::UpcasterError;
use projections::runner::RunnerError;
use projections::{
    Envelope, Event, EventRegistry, InMemoryEventStore, ProjectionRegistry, ProjectionRunner,
    projection, upcast,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(version = 3)]
struct Signup {
    email: String,
}

#[upcast(Signup, from = 1)]
fn one(payload: serde_json::Value) -> serde_json::Value {
    payload
}

#[derive(Default)]
struct Signups(u32);

#[projection]
impl Signups {
    #[handles(Signup)]
    async fn signup(&mut self, _event: &Envelope<Signup>) {
        self.0 += 1;
    }
}

fn assert_names_the_gap(problem: &UpcasterError) {
    assert_eq!(
        problem,
        &UpcasterError::Gap {
            event_type: "Signup",
            current: 3,
            lowest: 1,
            missing: 2
        }
    );
    assert!(
        problem
            .to_string()
            .contains("add `#[upcast(Signup, from = 2)]`"),
        "{problem}"
    );
}

#[test]
fn the_registry_reports_the_missing_upcaster() {
    let problem = EventRegistry::global().check_upcasters().err().unwrap();
    assert_names_the_gap(&problem);
}

#[tokio::test]
async fn the_coordinator_refuses_to_start() {
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Signups::default()).unwrap();
    let coordinator = ProjectionCoordinator::new(registry, Arc::new(InMemoryEventStore::new()));
    let Err(CoordinatorError::InvalidUpcasters(problem)) = coordinator.start() else {
        panic!("the coordinator started");
    };
    assert_names_the_gap(&problem);
}

#[tokio::test]
async fn a_runner_refuses_every_batch() {
    let mut runner = ProjectionRunner::new(Signups::default());
    let Err(RunnerError::InvalidUpcasters { projection, source }) =
        runner.handle_batch::<projections::AnyEvent>(&[]).await
    else {
        panic!("the runner ran");
    };
    assert_eq!(projection, "Signups");
    assert_names_the_gap(&source);
}
