//! The type an upcaster names is an event.

use projections::upcast;

struct OrderPlaced {
    _cents: i64,
}

#[upcast(OrderPlaced, from = 1)]
fn renamed(payload: serde_json::Value) -> serde_json::Value {
    payload
}

fn main() {}
