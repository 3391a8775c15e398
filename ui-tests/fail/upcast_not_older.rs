//! An upcaster reads a version older than the event's current one.

use projections::{Event, upcast};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
#[event(version = 2)]
struct OrderPlaced {
    cents: i64,
}

#[upcast(OrderPlaced, from = 2)]
fn renamed(payload: serde_json::Value) -> serde_json::Value {
    payload
}

fn main() {}
