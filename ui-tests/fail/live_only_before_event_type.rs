//! The event type comes first in `#[handles]`, then `live_only`.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderPlaced {
    cents: i64,
}

struct Mailer;

#[projection]
impl Mailer {
    #[handles(live_only, OrderPlaced)]
    async fn placed(&mut self, _event: &Envelope<OrderPlaced>) {}
}

fn main() {}
