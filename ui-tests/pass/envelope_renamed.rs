//! `Envelope` may be imported under another name, or named by its full path.

use projections::Envelope as Env;
use projections::{Event, Projection, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderShipped {
    tracking: String,
}

#[derive(Default)]
struct Orders {
    count: usize,
}

#[projection]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Env<OrderCreated>) {
        self.count += 1;
    }

    #[handles(OrderShipped)]
    async fn shipped(&mut self, _event: &projections::event::Envelope<OrderShipped>) {
        self.count += 1;
    }
}

fn main() {
    let orders = Orders::default();
    assert_eq!(Projection::name(&orders), "Orders");
    assert_eq!(orders.count, 0);
}
