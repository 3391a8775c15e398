//! An event type cannot be generic: its wire name names exactly one type.

use projections::Event;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct Changed<T> {
    value: T,
}

fn main() {}
