//! `#[projection(sync)]` takes plain `fn` handlers and implements `SyncProjection`.

use projections::{AnyEvent, Envelope, Event, SyncProjection, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

#[derive(Default)]
struct Customers {
    names: Vec<String>,
}

#[projection(sync, name = "customers", unregistered = warn)]
impl Customers {
    #[handles(OrderCreated)]
    fn created(&mut self, event: &Envelope<OrderCreated>) {
        self.names.push(event.customer.clone());
    }

    #[reset]
    fn clear(&mut self) {
        self.names.clear();
    }
}

fn main() {
    let mut customers = Customers::default();
    let event: AnyEvent = Envelope::new(
        uuid::Uuid::nil(),
        OrderCreated {
            customer: "ada".into(),
        },
    )
    .into();
    assert!(SyncProjection::handle(&mut customers, &event).is_ok());
    assert_eq!(customers.names, ["ada"]);
    assert!(SyncProjection::reset(&mut customers).is_ok());
    assert!(customers.names.is_empty());
}
