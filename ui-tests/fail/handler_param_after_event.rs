//! The event is a handler's last parameter: nothing comes after it.

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
    async fn created(&mut self, _event: &Envelope<OrderCreated>, _extra: Option<u32>) {}
}

fn main() {}
