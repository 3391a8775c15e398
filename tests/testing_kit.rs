//! The test kit users test their projections with: it must catch the mistakes it names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Deposited, Withdrawn};
use projections::testing::{event, given, rebuild_equals_incremental, redelivery_changes_nothing};
use projections::{Envelope, projection};
use uuid::Uuid;

/// Forgets to clear its total on reset: a rebuild counts everything twice.
#[derive(Default)]
struct Leaky {
    total: i64,
}

#[projection(name = "leaky")]
impl Leaky {
    #[handles(Deposited)]
    async fn deposited(&mut self, event: &Envelope<Deposited>) {
        self.total += event.amount;
    }

    #[reset]
    async fn clear(&mut self) {}
}

/// Correct.
#[derive(Default)]
struct Total {
    total: i64,
}

#[projection(name = "total")]
impl Total {
    #[handles(Deposited)]
    async fn deposited(&mut self, event: &Envelope<Deposited>) {
        self.total += event.amount;
    }

    #[handles(Withdrawn)]
    async fn withdrawn(&mut self, event: &Envelope<Withdrawn>) -> Result<(), String> {
        if event.amount > self.total {
            return Err(format!("overdrawn by {}", event.amount - self.total));
        }
        self.total -= event.amount;
        Ok(())
    }

    #[reset]
    async fn clear(&mut self) {
        self.total = 0;
    }
}

fn events() -> Vec<projections::AnyEvent> {
    let account = Uuid::new_v4();
    vec![
        event(account, Deposited { amount: 5 }),
        event(account, Withdrawn { amount: 9 }),
        event(account, Deposited { amount: 7 }),
        event(account, Withdrawn { amount: 2 }),
    ]
}

#[tokio::test]
async fn given_when_then_reports_the_read_model_and_the_dead_letters() {
    let outcome = given(events())
        .batch_size(1)
        .when(Total::default())
        .await
        .then(|t| assert_eq!(t.total, 10));
    assert_eq!(outcome.report().applied, 3);
    assert_eq!(outcome.dead_letters().len(), 1);
    assert!(
        outcome.dead_letters()[0]
            .error_message
            .contains("overdrawn by 4")
    );
    assert_eq!(outcome.runner().stopped(), None);
}

#[tokio::test]
async fn a_correct_projection_passes_both_properties() {
    rebuild_equals_incremental(Total::default, &events(), |t| t.total).await;
    redelivery_changes_nothing(Total::default, &events(), |t| t.total).await;
}

#[tokio::test]
#[should_panic(expected = "incremental processing differs from a rebuild")]
async fn a_reset_that_forgets_state_is_caught() {
    rebuild_equals_incremental(Leaky::default, &events(), |l| l.total).await;
}
