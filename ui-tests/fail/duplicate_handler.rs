//! An event type has one handler per projection.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

struct Orders;

#[projection]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {}

    #[handles(OrderCreated)]
    async fn created_again(&mut self, _event: &Envelope<OrderCreated>) {}
}

fn main() {}
