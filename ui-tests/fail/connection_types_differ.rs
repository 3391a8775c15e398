//! The handlers of one projection share one connection type: the runner holds one connection
//! per batch.

use projections::{Envelope, Event, projection};
use projections::projection::{NoConnection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderShipped {
    tracking: String,
}

struct Other;

struct Orders;

#[projection]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, _conn: &mut NoConnection, _event: &Envelope<OrderCreated>) {}

    #[handles(OrderShipped)]
    async fn shipped(&mut self, _conn: &mut Other, _event: &Envelope<OrderShipped>) {}
}

fn main() {}
