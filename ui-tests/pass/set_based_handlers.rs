//! Set-based handlers (`events: &[Envelope<E>]`) mix with per-event ones, in async, database
//! and synchronous projections; `live_only` marks a handler that replays pass over.

use projections::{AnyEvent, DatabaseProjection, Envelope, Event, Projection, SyncProjection, projection};
use projections::projection::{NoConnection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderPlaced {
    cents: i64,
}

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderShipped {
    tracking: String,
}

type Placed = Envelope<OrderPlaced>;

#[derive(Default)]
struct Totals {
    cents: i64,
    calls: usize,
    shipped: usize,
}

#[projection]
impl Totals {
    #[handles(OrderPlaced)]
    async fn placed(&mut self, events: &[Placed]) {
        self.calls += 1;
        self.cents += events.iter().map(|e| e.cents).sum::<i64>();
    }

    #[handles(OrderShipped, live_only)]
    async fn shipped(&mut self, event: &Envelope<OrderShipped>) -> Result<(), String> {
        if event.tracking.is_empty() {
            return Err("no tracking number".into());
        }
        self.shipped += 1;
        Ok(())
    }
}

#[derive(Default)]
struct Stored(i64);

#[projection]
impl Stored {
    #[handles(OrderPlaced, live_only)]
    async fn placed(
        &mut self,
        _conn: &mut NoConnection,
        events: &[projections::Envelope<OrderPlaced>],
    ) -> Result<(), std::io::Error> {
        self.0 += events.len() as i64;
        Ok(())
    }

    #[handles(OrderShipped)]
    async fn shipped(&mut self, _conn: &mut NoConnection, _event: &Envelope<OrderShipped>) {}
}

#[derive(Default)]
struct Counted(usize);

#[projection(sync)]
impl Counted {
    #[handles(OrderPlaced)]
    fn placed(&mut self, events: &[Envelope<OrderPlaced>]) {
        self.0 += events.len();
    }
}

fn assert_database_projection<P: DatabaseProjection<Connection = NoConnection>>(_: &P) {}

fn main() {
    let totals = Totals::default();
    let handlers = Projection::handlers(&totals);
    assert!(handlers[0].set_based && !handlers[0].live_only);
    assert!(!handlers[1].set_based && handlers[1].live_only);

    let stored = Stored::default();
    assert_database_projection(&stored);
    assert!(stored.handlers()[0].set_based && stored.handlers()[0].live_only);

    let mut counted = Counted::default();
    let events: Vec<AnyEvent> = (0..3)
        .map(|cents| Envelope::new(uuid::Uuid::nil(), OrderPlaced { cents }).into())
        .collect();
    let refs: Vec<&AnyEvent> = events.iter().collect();
    SyncProjection::handle_set(&mut counted, &refs).unwrap();
    SyncProjection::handle(&mut counted, &events[0]).unwrap();
    assert_eq!(counted.0, 4);
}
