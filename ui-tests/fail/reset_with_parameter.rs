//! A `#[reset]` method takes nothing besides `&mut self`, or a connection.

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
    async fn clear(&mut self, keep: usize) {
        self.count = keep;
    }
}

fn main() {}
