//! A projection may be generic: `#[projection]` keeps the impl block's generics and bounds.

use std::marker::PhantomData;

use projections::{Envelope, Event, Projection, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

struct Counter<T> {
    count: usize,
    _store: PhantomData<T>,
}

#[projection(name = "counter")]
impl<T: Send> Counter<T> {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {
        self.count += 1;
    }
}

fn main() {
    let counter = Counter::<u8> {
        count: 0,
        _store: PhantomData,
    };
    assert_eq!(Projection::name(&counter), "counter");
    assert_eq!(Projection::subscribed_to(&counter), ["OrderCreated"]);
    assert_eq!(counter.count, 0);
}
