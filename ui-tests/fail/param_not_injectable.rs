//! The connection parameter of a handler is a type that implements `Injectable`.

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
    async fn created(&mut self, _conn: &mut String, _event: &Envelope<OrderCreated>) {}
}

fn main() {}
