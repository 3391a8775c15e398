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
pub(super) async fn caught<F>(make: impl FnOnce() -> F) -> Result<(), HandlerError>
where
    F: Future<Output = Result<(), HandlerError>>,
{
    let future = match catch_unwind(AssertUnwindSafe(make)) {
        Ok(future) => future,
        Err(payload) => return Err(panicked(payload)),
    };
    let mut future = std::pin::pin!(future);
    poll_fn(
        move |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(panicked(payload))),
        },
    )
    .await
}

fn panicked(payload: Box<dyn Any + Send>) -> HandlerError {
    let message = if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    };
    HandlerError::Panicked(message)
}
