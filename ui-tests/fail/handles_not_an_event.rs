//! `#[handles(E)]` names a type that implements `Event`.

use projections::{Envelope, projection};

struct Orders;

#[projection]
impl Orders {
    #[handles(String)]
    async fn created(&mut self, _event: &Envelope<String>) {}
}

fn main() {}
