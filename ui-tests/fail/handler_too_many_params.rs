//! A handler takes one parameter before the event at most: the connection.

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
    async fn created(
        &mut self,
        _conn: &mut NoConnection,
        _extra: u32,
        _event: &Envelope<OrderCreated>,
    ) {
    }
}

fn main() {}
