//! An aggregate type names a stream category, which is stored and filtered on in SQL: a letter,
//! then letters, digits or `_`.

use projections::Event;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order Line")]
struct LineAdded {
    sku: String,
}

#[derive(Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "orders/lines")]
struct LineRemoved {
    sku: String,
}

fn main() {}
