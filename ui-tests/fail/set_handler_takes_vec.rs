//! A set-based handler takes its events by shared slice, not as a `Vec` it would own.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderPlaced {
    cents: i64,
}

struct Totals(i64);

#[projection]
impl Totals {
    #[handles(OrderPlaced)]
    async fn placed(&mut self, events: Vec<Envelope<OrderPlaced>>) {
        self.0 += events.len() as i64;
    }
}

fn main() {}
