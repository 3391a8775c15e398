//! A projection handles at least one event type.

use projections::projection;

#[derive(Default)]
struct Orders {
    count: usize,
}

#[projection]
impl Orders {
    async fn created(&mut self) {
        self.count += 1;
    }
}

fn main() {}
