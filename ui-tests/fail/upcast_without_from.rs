//! `#[upcast]` names the event and the stored version it reads.

use projections::{Event, upcast};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
#[event(version = 2)]
struct OrderPlaced {
    cents: i64,
}

#[upcast(OrderPlaced)]
fn renamed(payload: serde_json::Value) -> serde_json::Value {
    payload
}

fn main() {}
