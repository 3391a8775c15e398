//! The slice of a set-based handler holds envelopes of the type in `#[handles]`.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderPlaced {
    cents: i64,
}

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderShipped {
    tracking: String,
}

struct Totals(i64);

#[projection]
impl Totals {
    #[handles(OrderPlaced)]
    async fn placed(&mut self, events: &[Envelope<OrderShipped>]) {
        self.0 += events.len() as i64;
    }
}

fn main() {}
