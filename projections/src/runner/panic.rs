//! A handler's panic is that event's failure, never the worker's or the process's.

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Poll;

use crate::projection::HandlerError;

/// Runs the future `make` builds, turning a panic (while building or polling it) into
/// [`HandlerError::Panicked`]. No allocation, nothing per event beyond the unwinding landing
/// pad.
///
/// `AssertUnwindSafe`: after a panic the projection may hold a half-applied change in memory.
/// A database projection's writes are rolled back with the transaction; an in-memory read
/// model keeps whatever the handler did before panicking, as with any handler that fails
/// midway.
#[inline]
pub(crate) async fn caught<F>(make: impl FnOnce() -> F) -> Result<(), HandlerError>
where
    F: Future<Output = Result<(), HandlerError>>,
{
    // One landing pad per poll, around building the future (a synchronous handler runs
    // while its future is built) and polling it.
    let mut make = Some(make);
    let mut slot = std::pin::pin!(None::<F>);
    poll_fn(move |cx| {
        let polled = catch_unwind(AssertUnwindSafe(|| {
            if let Some(make) = make.take() {
                slot.set(Some(make()));
            }
            slot.as_mut().as_pin_mut().map(|future| future.poll(cx))
        }));
        match polled {
            Ok(Some(poll)) => poll,
            Ok(None) => Poll::Ready(Err(HandlerError::Panicked(
                "handler future polled after a panic".to_owned(),
            ))),
            Err(payload) => Poll::Ready(Err(panicked(payload))),
        }
    })
    .await
}

fn panicked(payload: Box<dyn Any + Send>) -> HandlerError {
    HandlerError::Panicked(crate::failure::panic_message(payload.as_ref()))
}
