//! Generated dispatch: routing, the subscribed-to list, the handler table and the
//! unregistered-event policies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};

use projections::projection::UnhandledEventError;
use projections::{
    AnyEvent, Envelope, Event, HandlerError, Projection, SyncProjection, projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderCreated {
    customer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "order.shipped", aggregate = "Order")]
struct OrderShipped {
    tracking: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderCancelled {
    reason: String,
}

/// Records which handler saw which event.
#[derive(Default)]
struct Recorder {
    seen: Vec<(&'static str, Uuid)>,
}

#[projection]
impl Recorder {
    #[handles(OrderCreated)]
    async fn created(&mut self, event: &Envelope<OrderCreated>) {
        self.seen.push(("created", event.event_id()));
    }

    #[handles(OrderShipped)]
    async fn shipped(&mut self, event: &Envelope<OrderShipped>) -> Result<(), std::io::Error> {
        self.seen.push(("shipped", event.event_id()));
        Ok(())
    }

    #[reset]
    async fn clear(&mut self) {
        self.seen.clear();
    }
}

fn created() -> AnyEvent {
    Envelope::new(
        Uuid::new_v4(),
        OrderCreated {
            customer: "c1".into(),
        },
    )
    .into()
}

fn shipped() -> AnyEvent {
    Envelope::new(
        Uuid::new_v4(),
        OrderShipped {
            tracking: "T1".into(),
        },
    )
    .into()
}

fn cancelled() -> AnyEvent {
    Envelope::new(Uuid::new_v4(), OrderCancelled { reason: "r".into() }).into()
}

#[tokio::test]
async fn each_event_reaches_exactly_its_handler_once() {
    let mut projection = Recorder::default();
    let (a, b, c) = (created(), shipped(), created());
    for event in [&a, &b, &c] {
        Projection::handle(&mut projection, event).await.unwrap();
    }
    assert_eq!(
        projection.seen,
        vec![
            ("created", a.event_id()),
            ("shipped", b.event_id()),
            ("created", c.event_id())
        ]
    );
}

#[tokio::test]
async fn subscribed_to_and_handler_table_follow_declaration_order() {
    let projection = Recorder::default();
    assert_eq!(Projection::name(&projection), "Recorder");
    assert_eq!(
        Projection::subscribed_to(&projection),
        ["OrderCreated", "order.shipped"]
    );
    let table: Vec<_> = Projection::handlers(&projection)
        .iter()
        .map(|h| (h.method, h.event_type, h.takes_connection))
        .collect();
    assert_eq!(
        table,
        vec![
            ("created", "OrderCreated", false),
            ("shipped", "order.shipped", false)
        ]
    );
}

#[tokio::test]
async fn reset_runs_the_reset_method() {
    let mut projection = Recorder::default();
    Projection::handle(&mut projection, &created())
        .await
        .unwrap();
    Projection::reset(&mut projection).await.unwrap();
    assert!(projection.seen.is_empty());
}

#[tokio::test]
async fn ignore_policy_skips_unhandled_events_silently() {
    let mut projection = Recorder::default();
    Projection::handle(&mut projection, &cancelled())
        .await
        .unwrap();
    assert!(projection.seen.is_empty());
}

#[derive(Default)]
struct Strict {
    count: usize,
}

#[projection(name = "strict-orders", unregistered = error)]
impl Strict {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {
        self.count += 1;
    }
}

#[tokio::test]
async fn error_policy_reports_type_id_projection_and_handled_types() {
    let mut projection = Strict::default();
    let event = cancelled();
    let error = Projection::handle(&mut projection, &event)
        .await
        .unwrap_err();
    let HandlerError::Unhandled(unhandled) = error else {
        panic!("expected an unhandled-event error, got {error:?}");
    };
    let UnhandledEventError {
        event_type,
        event_id,
        projection: name,
        handled_types,
        ..
    } = *unhandled;
    assert_eq!(event_type, "OrderCancelled");
    assert_eq!(event_id, event.event_id());
    assert_eq!(name, "strict-orders");
    assert_eq!(handled_types, vec!["OrderCreated"]);
    assert_eq!(projection.count, 0);
}

#[derive(Default)]
struct Loud;

#[projection(unregistered = "warn")]
impl Loud {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

/// Captures formatted tracing output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn warn_policy_logs_event_type_projection_and_handled_types() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut projection = Loud;
    Projection::handle(&mut projection, &cancelled())
        .await
        .unwrap();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("OrderCancelled"), "{log}");
    assert!(log.contains("Loud"), "{log}");
    assert!(log.contains("OrderCreated"), "{log}");
}

#[derive(Default)]
struct Counter {
    created: u32,
}

#[projection(sync)]
impl Counter {
    #[handles(OrderCreated)]
    fn created(&mut self, _event: &Envelope<OrderCreated>) {
        self.created += 1;
    }

    #[reset]
    fn clear(&mut self) {
        self.created = 0;
    }
}

#[tokio::test]
async fn synchronous_handlers_give_a_sync_projection_usable_as_async() {
    let mut projection = Counter::default();
    SyncProjection::handle(&mut projection, &created()).unwrap();
    Projection::handle(&mut projection, &created())
        .await
        .unwrap();
    SyncProjection::handle(&mut projection, &shipped()).unwrap();
    assert_eq!(projection.created, 2);
    SyncProjection::reset(&mut projection).unwrap();
    assert_eq!(projection.created, 0);
}

/// Routing is by exact type: a type with the same field shape is a different event.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct OrderCreatedV2 {
    customer: String,
}

#[tokio::test]
async fn routing_is_by_exact_type() {
    let mut projection = Recorder::default();
    let lookalike: AnyEvent = Envelope::new(
        Uuid::new_v4(),
        OrderCreatedV2 {
            customer: "c".into(),
        },
    )
    .into();
    Projection::handle(&mut projection, &lookalike)
        .await
        .unwrap();
    assert!(projection.seen.is_empty());
}

fn assert_send<T: Send>(_: T) {}

#[test]
fn handler_futures_can_be_spawned() {
    let mut projection = Recorder::default();
    let event = created();
    assert_send(Projection::handle(&mut projection, &event));
}

/// A projection declared by a `macro_rules!` macro, as a user generating several similar
/// projections would.
macro_rules! counting_projection {
    ($name:ident, $event:ty) => {
        #[derive(Default)]
        struct $name {
            count: u32,
        }

        #[projection]
        impl $name {
            #[handles($event)]
            async fn on(&mut self, _event: &Envelope<$event>) {
                self.count += 1;
            }
        }
    };
}

counting_projection!(CreatedCounter, OrderCreated);

#[tokio::test]
async fn projections_can_be_declared_from_macro_rules() {
    let mut projection = CreatedCounter::default();
    Projection::handle(&mut projection, &created())
        .await
        .unwrap();
    Projection::handle(&mut projection, &shipped())
        .await
        .unwrap();
    assert_eq!(projection.count, 1);
    assert_eq!(Projection::name(&projection), "CreatedCounter");
}
