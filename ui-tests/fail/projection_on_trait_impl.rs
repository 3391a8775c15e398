//! `#[projection]` goes on an inherent impl block, not on a trait impl.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

trait Handlers {
    async fn created(&mut self, event: &Envelope<OrderCreated>);
}

struct Orders;

#[projection]
impl Handlers for Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

fn main() {}
