//! A handler's connection comes before the event: `(&mut self, conn, event)`.

use projections::{Envelope, Event, projection};
use projections::projection::{NoConnection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

struct Orders;

#[projection]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>, _conn: &mut NoConnection) {}
}

fn main() {}
