//! `#[event]` takes `name`, `aggregate` and `version`, nothing else.

use projections::Event;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
#[event(name = "order.created", stream = "orders")]
struct OrderCreated {
    customer: String,
}

fn main() {}
