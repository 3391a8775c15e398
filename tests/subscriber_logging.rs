//! `SubscriberRegistry` failures are logged. Alone in its test binary: the warning's callsite
//! caches whether anyone listens, and a test on another thread of the same binary (with no
//! subscriber) could cache "nobody" while this test installs its own, silencing it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::captured::Captured;
use common::{Balances, Tally, withdraw};
use projections::SubscriberRegistry;
use uuid::Uuid;

#[tokio::test]
async fn subscriber_failures_are_logged_with_the_subscriber_the_event_and_the_error() {
    let captured = Captured::default();
    let _guard = captured.install();
    let mut subscribers = SubscriberRegistry::new();
    subscribers.register(Tally::default());
    subscribers.register(Balances::default());
    let poison = withdraw(Uuid::new_v4(), 13);
    let results = subscribers.dispatch(&poison).await;
    assert_eq!(results.iter().filter(|(_, r)| r.is_err()).count(), 1);

    let log = captured.text();
    assert_eq!(log.matches("WARN").count(), 1, "{log}");
    assert!(log.contains("subscriber failed"), "{log}");
    assert!(log.contains("common::Balances"), "{log}");
    assert!(log.contains(&poison.event_id().to_string()), "{log}");
    assert!(log.contains("Withdrawn"), "{log}");
    assert!(log.contains("unlucky withdrawal"), "{log}");

    // `dispatch_many` logs each failure too.
    let again = subscribers
        .dispatch_many(&[withdraw(Uuid::new_v4(), 13), withdraw(Uuid::new_v4(), 13)])
        .await;
    assert_eq!(again.iter().filter(|(_, r)| r.is_err()).count(), 2);
    assert_eq!(captured.text().matches("subscriber failed").count(), 3);
}
