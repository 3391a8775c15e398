//! In-memory storage: for tests, examples and single-process use. Nothing survives the process.

mod checkpoint;
mod dlq;
mod store;

pub use checkpoint::InMemoryCheckpointRepository;
pub use dlq::InMemoryDLQRepository;
pub use store::InMemoryEventStore;

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, carrying on with the data if a panicking thread poisoned it: every
/// operation here leaves the data consistent before anything that could panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
