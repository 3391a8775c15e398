//! The object-safe face of a [`ProjectionRunner`], so one registry holds runners of different
//! projection types.

use std::any::Any;

use crate::checkpoint::{CheckpointData, LagMetrics};
use crate::event::AnyEvent;
use crate::projection::{EventHandler, HandlerError, Projection};
use crate::runner::{BatchOutcome, ProjectionRunner, RunnerError, StoppedAt};
use crate::storage::BoxFuture;
use crate::store::{EventStore, StoredEvent};

/// A registered projection: a [`ProjectionRunner`] whose projection type is erased.
pub trait RegisteredProjection: Send + Any {
    /// The projection's stable name.
    fn name(&self) -> &str;
    /// The wire names it subscribes to.
    fn subscribed_to(&self) -> &[&'static str];
    /// Handles decoded events in order.
    fn handle_events<'a>(
        &'a mut self,
        events: &'a [AnyEvent],
    ) -> BoxFuture<'a, Result<BatchOutcome, RunnerError>>;
    /// Handles stored events in order.
    fn handle_stored<'a>(
        &'a mut self,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<BatchOutcome, RunnerError>>;
    /// Clears checkpoint and read model.
    fn reset(&mut self) -> BoxFuture<'_, Result<(), RunnerError>>;
    /// The current checkpoint position.
    fn checkpoint(&mut self) -> BoxFuture<'_, Result<Option<u64>, RunnerError>>;
    /// The stored checkpoint.
    fn checkpoint_data(&self) -> BoxFuture<'_, Result<Option<CheckpointData>, RunnerError>>;
    /// Lag against `store`.
    fn lag_metrics<'a>(
        &'a self,
        store: &'a dyn EventStore,
    ) -> BoxFuture<'a, Result<LagMetrics, RunnerError>>;
    /// Failed dead-letter entries of this projection.
    fn dead_letter_count(&self) -> BoxFuture<'_, Result<u64, RunnerError>>;
    /// Replays one dead-letter entry.
    fn replay_dead_letter(&mut self, entry_id: i64) -> BoxFuture<'_, Result<(), RunnerError>>;
    /// Where it stopped, under the stop policy.
    fn stopped(&self) -> Option<&StoppedAt>;
    /// Lets a stopped projection go on.
    fn resume(&mut self);
    /// For downcasting to the concrete runner.
    fn as_any(&self) -> &dyn Any;
    /// For downcasting to the concrete runner.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<P: Projection + 'static> RegisteredProjection for ProjectionRunner<P> {
    fn name(&self) -> &str {
        ProjectionRunner::name(self)
    }

    fn subscribed_to(&self) -> &[&'static str] {
        ProjectionRunner::subscribed_to(self)
    }

    fn handle_events<'a>(
        &'a mut self,
        events: &'a [AnyEvent],
    ) -> BoxFuture<'a, Result<BatchOutcome, RunnerError>> {
        Box::pin(self.handle_batch(events))
    }

    fn handle_stored<'a>(
        &'a mut self,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<BatchOutcome, RunnerError>> {
        Box::pin(self.handle_batch(events))
    }

    fn reset(&mut self) -> BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(ProjectionRunner::reset(self))
    }

    fn checkpoint(&mut self) -> BoxFuture<'_, Result<Option<u64>, RunnerError>> {
        Box::pin(ProjectionRunner::checkpoint(self))
    }

    fn checkpoint_data(&self) -> BoxFuture<'_, Result<Option<CheckpointData>, RunnerError>> {
        Box::pin(ProjectionRunner::checkpoint_data(self))
    }

    fn lag_metrics<'a>(
        &'a self,
        store: &'a dyn EventStore,
    ) -> BoxFuture<'a, Result<LagMetrics, RunnerError>> {
        Box::pin(ProjectionRunner::lag_metrics(self, store))
    }

    fn dead_letter_count(&self) -> BoxFuture<'_, Result<u64, RunnerError>> {
        let failed = self.failed_events();
        Box::pin(async move { Ok(failed.await?.len() as u64) })
    }

    fn replay_dead_letter(&mut self, entry_id: i64) -> BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(ProjectionRunner::replay_dead_letter(self, entry_id))
    }

    fn stopped(&self) -> Option<&StoppedAt> {
        ProjectionRunner::stopped(self)
    }

    fn resume(&mut self) {
        ProjectionRunner::resume(self);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The object-safe face of an [`EventHandler`].
pub(crate) trait RegisteredHandler: Send {
    fn can_handle(&self, event: &AnyEvent) -> bool;
    fn handle<'a>(&'a mut self, event: &'a AnyEvent) -> BoxFuture<'a, Result<(), HandlerError>>;
    fn type_name(&self) -> &'static str;
}

pub(crate) struct HandlerBox<H>(pub(crate) H);

impl<H: EventHandler + 'static> RegisteredHandler for HandlerBox<H> {
    fn can_handle(&self, event: &AnyEvent) -> bool {
        self.0.can_handle(event)
    }

    fn handle<'a>(&'a mut self, event: &'a AnyEvent) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(self.0.handle(event))
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<H>()
    }
}
