//! A projection whose handlers take a connection is a database projection: it runs inside a
//! `TransactionalRunner`, not as a plain `Projection`.

use projections::{Envelope, Event, ProjectionRegistry, projection};
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

fn main() {
    let mut registry = ProjectionRegistry::new();
    let _ = registry.register_projection(Orders);
}
