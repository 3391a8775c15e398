//! The events of a set-based handler are lent as a shared slice: it cannot change them.

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
    async fn placed(&mut self, events: &mut [Envelope<OrderPlaced>]) {
        self.0 += events.len() as i64;
    }
}

fn main() {}
