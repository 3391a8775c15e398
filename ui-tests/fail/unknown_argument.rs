//! `#[projection]` takes `name`, `version`, `unregistered` and `sync`, nothing else.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

struct Orders;

#[projection(batch_size = 100)]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

fn main() {}
