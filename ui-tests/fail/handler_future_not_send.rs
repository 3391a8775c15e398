//! The future of an async handler is `Send`: projections run on a multi-threaded runtime.

use std::rc::Rc;

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

async fn save(_customer: &str) {}

struct Orders;

#[projection]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, event: &Envelope<OrderCreated>) {
        let customer: Rc<str> = event.customer.as_str().into();
        save(&customer).await;
    }
}

fn main() {}
