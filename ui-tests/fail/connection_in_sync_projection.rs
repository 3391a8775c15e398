//! A `#[projection(sync)]` projection takes no connection: only async projections run inside
//! the batch's transaction.

use projections::{Envelope, Event, projection};
use projections::projection::{NoConnection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

struct Orders;

#[projection(sync)]
impl Orders {
    #[handles(OrderCreated)]
    fn created(&mut self, _conn: &mut NoConnection, _event: &Envelope<OrderCreated>) {}
}

fn main() {}
