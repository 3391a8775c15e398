//! A projection's version is a whole number from 1, written as a literal.

use projections::{Envelope, Event, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct OrderCreated {
    customer: String,
}

struct OrdersFromZero;

#[projection(name = "orders", version = 0)]
impl OrdersFromZero {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

struct OrdersAsText;

#[projection(name = "orders", version = "2")]
impl OrdersAsText {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

struct OrdersTwice;

#[projection(name = "orders", version = 2, version = 3)]
impl OrdersTwice {
    #[handles(OrderCreated)]
    async fn created(&mut self, _event: &Envelope<OrderCreated>) {}
}

fn main() {}
