//! A `#[reset]` method clears the whole read model: it takes no event.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

#[derive(Default)]
struct Orders {
    count: usize,
}

#[projection]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {
        self.count += 1;
    }

    #[reset]
    async fn clear(&mut self, _event: &Envelope<OrderCreated>) {
        self.count = 0;
    }
}

fn main() {}
