//! `#[projection]` goes on the impl block that holds the handlers, not on the struct.

use projections::projection;

#[projection]
struct Orders {
    count: usize,
}

fn main() {}
