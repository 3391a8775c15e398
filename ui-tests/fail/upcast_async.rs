//! An upcaster is a plain `fn`: it runs while a stored event is decoded.

use projections::{Event, upcast};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
#[event(version = 2)]
struct OrderPlaced {
    cents: i64,
}

#[upcast(OrderPlaced, from = 1)]
async fn renamed(payload: serde_json::Value) -> serde_json::Value {
    payload
}

fn main() {}
