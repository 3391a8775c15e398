//! `#[handles]` takes the event type, then `live_only`, and nothing else.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderPlaced {
    cents: i64,
}

struct Mailer;

#[projection]
impl Mailer {
    #[handles(OrderPlaced, live)]
    async fn placed(&mut self, _event: &Envelope<OrderPlaced>) {}
}

fn main() {}
