//! A handler of an async projection must be an `async fn`.

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
    fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

fn main() {}
