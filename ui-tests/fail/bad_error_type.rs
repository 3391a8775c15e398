//! The error of a handler's `Result<(), E>` converts into `Box<dyn Error + Send + Sync>`.

use std::rc::Rc;

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

struct Orders;

#[projection]
impl Orders {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) -> Result<(), Rc<str>> {
        Ok(())
    }
}

fn main() {}
