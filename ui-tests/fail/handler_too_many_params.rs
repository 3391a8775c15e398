//! A handler takes at most two parameters besides `&mut self`: a connection, then the event.

use projections::{Envelope, Event, NoConnection, projection};
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
        _event: &Envelope<OrderCreated>,
        _extra: u32,
    ) {
    }
}

fn main() {}
