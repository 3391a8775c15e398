//! An upcaster takes one argument: the payload of the version it reads.

use projections::{Event, upcast};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
#[event(version = 2)]
struct OrderPlaced {
    cents: i64,
}

#[upcast(OrderPlaced, from = 1)]
fn renamed(payload: serde_json::Value, _version: u32) -> serde_json::Value {
    payload
}

fn main() {}
