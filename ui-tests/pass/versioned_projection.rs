//! `version = N` gives the projection its version; without it, the version is 1.

use projections::{DatabaseProjection, Envelope, Event, Projection, SyncProjection, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

struct OrdersV1;

#[projection(name = "orders")]
impl OrdersV1 {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

struct OrdersV3;

#[projection(name = "orders", version = 3, sync)]
impl OrdersV3 {
    #[handles(OrderCreated)]
    fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

fn main() {
    assert_eq!(Projection::version(&OrdersV1), 1);
    assert_eq!(SyncProjection::version(&OrdersV3), 3);
    // The version reaches every face of the projection, as its name does.
    assert_eq!(DatabaseProjection::version(&OrdersV3), 3);
    assert_eq!(DatabaseProjection::name(&OrdersV3), "orders");
}
