//! `#[reset]` only works inside an impl block marked `#[projection]`.

use projections::reset;

#[derive(Default)]
struct Orders {
    count: u64,
}

impl Orders {
    #[reset]
    async fn clear(&mut self) {
        self.count = 0;
    }
}

fn main() {}
