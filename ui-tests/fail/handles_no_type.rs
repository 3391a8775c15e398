//! `#[handles]` names the event type the method handles.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

struct Orders;

#[projection]
impl Orders {
    #[handles]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

fn main() {}
