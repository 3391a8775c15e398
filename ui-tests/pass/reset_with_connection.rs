//! A `#[reset]` method may take the connection, like a handler.

use projections::{DatabaseProjection, Envelope, Event, projection};
use projections::projection::{NoConnection};
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
    async fn created(&mut self, _conn: &mut NoConnection, _event: &Envelope<OrderCreated>) {
        self.count += 1;
    }

    #[reset]
    async fn clear(&mut self, _conn: &mut NoConnection) -> Result<(), std::io::Error> {
        self.count = 0;
        Ok(())
    }
}

fn main() {
    let orders = Orders::default();
    assert_eq!(DatabaseProjection::name(&orders), "Orders");
    assert_eq!(orders.count, 0);
}
