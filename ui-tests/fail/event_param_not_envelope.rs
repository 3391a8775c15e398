//! The event parameter is `&Envelope<E>`, which carries the event's metadata, not `&E`.

use projections::{Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

struct Orders;

#[projection]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &OrderCreated) {}
}

fn main() {}
