//! `live_only` is a flag: it takes no value.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderPlaced {
    cents: i64,
}

struct Mailer;

#[projection]
impl Mailer {
    #[handles(OrderPlaced, live_only = true)]
    async fn placed(&mut self, _event: &Envelope<OrderPlaced>) {}
}

fn main() {}
