//! Set-based handlers: a run of consecutive events of one type in a single handler call.
//!
//! Within a segment of a batch, the events of a type whose handler is set-based are gathered
//! into runs: consecutive items, each an event of that type that the runner would apply. A run
//! ends at any other item (another type, an event to skip or pass over, an undecodable one),
//! so the handler sees exactly the events it would have seen one by one, in the same order.
//!
//! When a run's call fails the runner cannot tell which event is at fault. The batch loop
//! (`batch.rs`) then narrows it down: the events before the run are committed, the run's first
//! half is tried on its own (in a fresh transaction where the strategy has them), and so on,
//! until a run of one event fails alone: that event, and only it, goes to the retry and
//! failure policies; every other event is applied once.

use tracing::Instrument;

use super::panic::caught;
use super::progress::Progress;
use super::step::is_listed;
use super::{BatchItem, CommitStrategy, Runner};
use crate::event::AnyEvent;
use crate::projection::{DatabaseProjection, HandlerError, HandlerInfo};

/// The event types of a projection whose handlers the batch loop treats apart.
#[derive(Debug, Default, Clone)]
pub(super) struct SpecialHandlers {
    /// Types with a set-based handler.
    pub(super) set_based: Vec<&'static str>,
    /// Types with a live-only handler.
    pub(super) live_only: Vec<&'static str>,
}

impl SpecialHandlers {
    pub(super) fn of(handlers: &[HandlerInfo]) -> Self {
        Self {
            set_based: handlers
                .iter()
                .filter(|h| h.set_based)
                .map(|h| h.event_type)
                .collect(),
            live_only: handlers
                .iter()
                .filter(|h| h.live_only)
                .map(|h| h.event_type)
                .collect(),
        }
    }

    /// Whether any handler is set-based or live-only: when none is, the batch loop is the
    /// per-event loop with one more branch, never taken.
    #[inline]
    pub(super) fn any(&self) -> bool {
        !self.set_based.is_empty() || !self.live_only.is_empty()
    }

    pub(super) fn is_set_based(&self, event_type: &str) -> bool {
        is_listed(&self.set_based, event_type)
    }

    pub(super) fn is_live_only(&self, event_type: &str) -> bool {
        is_listed(&self.live_only, event_type)
    }
}

/// The end (exclusive, at most `until`) of the run that starts with `first` at `start`: the
/// consecutive decoded events of its type that come after it in order (strictly increasing
/// positions; without positions, no immediate repeat), which the runner would all apply.
pub(super) fn run_end<T: BatchItem>(
    events: &[T],
    start: usize,
    until: usize,
    first: &AnyEvent,
) -> usize {
    let mut previous = first;
    let mut end = start + 1;
    while end < until {
        let Ok(next) = events[end].decoded() else {
            break;
        };
        let same_type = std::ptr::eq(next.event_type(), first.event_type())
            || next.event_type() == first.event_type();
        let in_order = match (previous.position(), next.position()) {
            (Some(before), Some(after)) => after > before,
            (None, None) => next.event_id() != previous.event_id(),
            _ => false,
        };
        if !same_type || !in_order {
            break;
        }
        previous = next;
        end += 1;
    }
    end
}

impl<P, S> Runner<P, S>
where
    P: DatabaseProjection,
    S: CommitStrategy<Connection = P::Connection>,
{
    /// Runs the set-based handler once for `events[start..end]` through `tx`; a panic is the
    /// run's failure. On success, moves `progress` past every event of the run.
    pub(super) async fn apply_run<T: BatchItem>(
        &mut self,
        tx: &mut S::Transaction,
        events: &[T],
        (start, end): (usize, usize),
        progress: &mut Progress,
    ) -> Result<(), HandlerError> {
        let run: Vec<&AnyEvent> = events[start..end]
            .iter()
            .filter_map(|item| item.decoded().ok())
            .collect();
        let (projection, conn) = (&mut self.projection, &mut **tx);
        let call = caught(|| projection.handle_set(conn, &run));
        let result = if self.tracing {
            let span = tracing::debug_span!(
                "projection.handle_set",
                projection = %self.name,
                event_type = run.first().map(|e| e.event_type()),
                events = run.len(),
                first_position = run.first().and_then(|e| e.position()),
                last_position = run.last().and_then(|e| e.position()),
            );
            call.instrument(span).await
        } else {
            call.await
        };
        if result.is_ok() {
            for event in &run {
                progress.advance(event.position(), event.event_id(), event.event_type(), true);
            }
        }
        result
    }
}
