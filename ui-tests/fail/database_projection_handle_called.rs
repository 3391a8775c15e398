//! `Projection::handle` runs a projection without a connection; a database projection is
//! handled through `DatabaseProjection::handle`, by its `TransactionalRunner`.

use projections::{AnyEvent, Envelope, Event, Projection, projection};
use projections::projection::{Injectable};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

/// A database connection, as `projections::PgConnection` is with the `postgres` feature.
struct Connection;

impl Injectable for Connection {}

struct Orders;

#[projection]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, _conn: &mut Connection, _event: &Envelope<OrderCreated>) {}
}

async fn apply(orders: &mut Orders, event: &AnyEvent) {
    let _ = Projection::handle(orders, event).await;
}

fn main() {}
