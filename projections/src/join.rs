//! Polls several futures concurrently on the current task, at most `limit` at a time, and
//! returns their outputs in order. Enough for fan-out without a dependency on `futures`.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

/// Runs `futures` concurrently, starting at most `limit` at once (`None` = all), and returns
/// their outputs in the order given.
pub(crate) async fn join_all<'a, T>(
    futures: Vec<Pin<Box<dyn Future<Output = T> + Send + 'a>>>,
    limit: Option<usize>,
) -> Vec<T> {
    let total = futures.len();
    let limit = limit.unwrap_or(total).max(1);
    let mut slots: Vec<Option<Pin<Box<dyn Future<Output = T> + Send + 'a>>>> =
        futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = (0..total).map(|_| None).collect();
    let mut started = 0;
    let mut running = 0;
    let mut done = 0;
    poll_fn(|cx| {
        while running < limit && started < total {
            started += 1;
            running += 1;
        }
        for index in 0..started {
            if let Some(future) = slots[index].as_mut()
                && let Poll::Ready(output) = future.as_mut().poll(cx)
            {
                outputs[index] = Some(output);
                slots[index] = None;
                running -= 1;
                done += 1;
            }
        }
        // Start more as soon as some finished, without waiting for another wake-up.
        if running < limit && started < total {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if done == total {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
