//! A handler handles exactly one event type.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderShipped {
    tracking: String,
}

struct Orders;

#[projection]
impl Orders {
    #[handles(OrderCreated, OrderShipped)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

fn main() {}
