//! The event parameter is a shared reference, `&Envelope<E>`: a handler reads the event.

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
    async fn created(&mut self, _event: &mut Envelope<OrderCreated>) {}
}

fn main() {}
