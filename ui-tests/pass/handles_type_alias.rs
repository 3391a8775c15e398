//! `#[handles]` accepts what the type system accepts: an alias of the event type.

use projections::{Envelope, Event, Projection, projection};
use serde::{Deserialize, Serialize};

mod events {
    #[derive(Clone, serde::Serialize, serde::Deserialize, projections::Event)]
    pub struct OrderCreated {
        pub customer: String,
    }
}

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderShipped {
    tracking: String,
}

type Created = events::OrderCreated;
type Shipped = OrderShipped;

#[derive(Default)]
struct Orders {
    created: usize,
    shipped: usize,
}

#[projection]
impl Orders {
    #[handles(Created)]
    async fn created(&mut self, _event: &Envelope<events::OrderCreated>) {
        self.created += 1;
    }

    #[handles(OrderShipped)]
    async fn shipped(&mut self, _event: &Envelope<Shipped>) {
        self.shipped += 1;
    }
}

fn main() {
    let orders = Orders::default();
    assert_eq!(
        Projection::subscribed_to(&orders),
        ["OrderCreated", "OrderShipped"]
    );
    assert_eq!((orders.created, orders.shipped), (0, 0));
}
