//! Handlers with and without a connection parameter live in one projection.

use projections::{DatabaseProjection, Envelope, Event, projection};
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

#[derive(Default)]
struct Orders {
    customers: Vec<String>,
    shipped: usize,
}

#[projection]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, event: &Envelope<OrderCreated>) {
        self.customers.push(event.customer.clone());
    }

    #[handles(OrderShipped)]
    async fn shipped(
        &mut self,
        _conn: &mut NoConnection,
        event: &Envelope<OrderShipped>,
    ) -> Result<(), std::io::Error> {
        if !event.tracking.is_empty() {
            self.shipped += 1;
        }
        Ok(())
    }

    #[reset]
    async fn clear(&mut self) {
        self.customers.clear();
        self.shipped = 0;
    }
}

fn assert_database_projection<P: DatabaseProjection<Connection = NoConnection>>(_: &P) {}

fn main() {
    let orders = Orders::default();
    assert_database_projection(&orders);
    assert_eq!(
        DatabaseProjection::subscribed_to(&orders),
        ["OrderCreated", "OrderShipped"]
    );
    assert!(orders.customers.is_empty());
    assert_eq!(orders.shipped, 0);
}
