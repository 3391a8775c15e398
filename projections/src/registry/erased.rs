//! The object-safe face of a [`Runner`], so one registry holds runners of different
//! projection types and commit strategies.

use std::any::Any;

use crate::checkpoint::Halt;
use crate::event::AnyEvent;
use crate::projection::{DatabaseProjection, EventHandler, HandlerError};
use crate::runner::{BatchOutcome, CommitStrategy, Runner, RunnerError, RunnerReads, StoppedAt};
use crate::storage::BoxFuture;
use crate::store::{EventStore, ReadFilter, StoredEvent};

/// A registered projection: a [`Runner`] whose projection type and commit strategy are erased.
/// Implemented once, for every runner.
pub trait RegisteredProjection: Send + Any {
    /// The projection's stable name.
    fn name(&self) -> &str;
    /// The wire names it subscribes to.
    fn subscribed_to(&self) -> &[&'static str];
    /// The aggregate types it follows (see
    /// [`Runner::follows_aggregates`](crate::runner::Runner::follows_aggregates)): none by
    /// default.
    fn followed_aggregates(&self) -> &[String] {
        &[]
    }
    /// Handles decoded events in order.
    fn handle_events<'a>(
        &'a mut self,
        events: &'a [AnyEvent],
    ) -> BoxFuture<'a, Result<BatchOutcome, RunnerError>>;
    /// Handles stored events in order, adding what was done to `outcome` (also on error).
    fn handle_stored<'a>(
        &'a mut self,
        events: &'a [StoredEvent],
        outcome: &'a mut BatchOutcome,
    ) -> BoxFuture<'a, Result<(), RunnerError>>;
    /// What its reads select (see [`Runner::read_filter`]): by default the types it
    /// subscribes to and the aggregate types it follows.
    fn read_filter(&self) -> ReadFilter {
        ReadFilter::event_types(self.subscribed_to().iter().copied())
            .with_aggregate_types(self.followed_aggregates().iter().cloned())
    }
    /// Handles the events of a page read up to `read_to`, then moves the checkpoint there
    /// (see [`Runner::handle_page_into`]). By default, only handles the events.
    fn handle_page<'a>(
        &'a mut self,
        events: &'a [StoredEvent],
        read_to: u64,
        outcome: &'a mut BatchOutcome,
    ) -> BoxFuture<'a, Result<(), RunnerError>> {
        let _ = read_to;
        self.handle_stored(events, outcome)
    }
    /// Clears checkpoint and read model.
    fn reset(&mut self) -> BoxFuture<'_, Result<(), RunnerError>>;
    /// Reads the checkpoint and halt from storage, the first time.
    fn load(&mut self) -> BoxFuture<'_, Result<(), RunnerError>>;
    /// Takes the replay horizon from `store` if the projection needs one (see
    /// [`Runner::prepare_replay`]): before reading a batch.
    fn prepare_replay<'a>(
        &'a mut self,
        store: &'a dyn EventStore,
    ) -> BoxFuture<'a, Result<(), RunnerError>> {
        let _ = store;
        Box::pin(std::future::ready(Ok(())))
    }
    /// The checkpoint position, as last read or written.
    fn checkpoint(&mut self) -> BoxFuture<'_, Result<Option<u64>, RunnerError>>;
    /// Owned handles to read its state from storage.
    fn reads(&self) -> RunnerReads;
    /// Replays one dead-letter entry.
    fn replay_dead_letter(&mut self, entry_id: i64) -> BoxFuture<'_, Result<(), RunnerError>>;
    /// Marks a dead-letter entry done with, without applying it (releasing the events held
    /// behind it under the park policy).
    fn resolve_dead_letter<'a>(
        &'a mut self,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), RunnerError>>;
    /// Paused or stopped.
    fn halt(&self) -> Option<&Halt>;
    /// Where it stopped, if stopped.
    fn stopped(&self) -> Option<&StoppedAt>;
    /// Halts it durably (pause or stop).
    fn halt_with(&mut self, halt: Halt) -> BoxFuture<'_, Result<(), RunnerError>>;
    /// Lets a paused or stopped projection go on.
    fn resume(&mut self) -> BoxFuture<'_, Result<(), RunnerError>>;
    /// Reads the stored halt again (a pause or resume recorded by another process).
    fn refresh_halt(&mut self) -> BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// The version it builds, when it is one of a blue/green projection.
    fn version(&self) -> Option<crate::bluegreen::VersionStatus> {
        None
    }
    /// Writes under `fence` from now on (this node took the projection's lease), or under
    /// none; its state is read from storage again before the next batch.
    fn set_fence(&mut self, fence: Option<crate::cluster::Fence>);
    /// The lease it writes under, if any.
    fn fence(&self) -> Option<&crate::cluster::Fence>;
    /// For downcasting to the concrete runner.
    fn as_any(&self) -> &dyn Any;
    /// For downcasting to the concrete runner.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<P, S> RegisteredProjection for Runner<P, S>
where
    P: DatabaseProjection + 'static,
    S: CommitStrategy<Connection = P::Connection>,
{
    fn name(&self) -> &str {
        Runner::name(self)
    }

    fn subscribed_to(&self) -> &[&'static str] {
        Runner::subscribed_to(self)
    }

    fn followed_aggregates(&self) -> &[String] {
        Runner::followed_aggregates(self)
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
        outcome: &'a mut BatchOutcome,
    ) -> BoxFuture<'a, Result<(), RunnerError>> {
        Box::pin(self.handle_batch_into(events, outcome))
    }

    fn read_filter(&self) -> ReadFilter {
        Runner::read_filter(self)
    }

    fn handle_page<'a>(
        &'a mut self,
        events: &'a [StoredEvent],
        read_to: u64,
        outcome: &'a mut BatchOutcome,
    ) -> BoxFuture<'a, Result<(), RunnerError>> {
        Box::pin(self.handle_page_into(events, read_to, outcome))
    }

    fn reset(&mut self) -> BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(Runner::reset(self))
    }

    fn load(&mut self) -> BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(Runner::load(self))
    }

    fn checkpoint(&mut self) -> BoxFuture<'_, Result<Option<u64>, RunnerError>> {
        Box::pin(Runner::checkpoint(self))
    }

    fn prepare_replay<'a>(
        &'a mut self,
        store: &'a dyn EventStore,
    ) -> BoxFuture<'a, Result<(), RunnerError>> {
        Box::pin(Runner::prepare_replay(self, store))
    }

    fn reads(&self) -> RunnerReads {
        Runner::reads(self)
    }

    fn replay_dead_letter(&mut self, entry_id: i64) -> BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(Runner::replay_dead_letter(self, entry_id))
    }

    fn resolve_dead_letter<'a>(
        &'a mut self,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), RunnerError>> {
        Box::pin(Runner::resolve_dead_letter(self, entry_id, resolved_by))
    }

    fn halt(&self) -> Option<&Halt> {
        Runner::halt(self)
    }

    fn stopped(&self) -> Option<&StoppedAt> {
        Runner::stopped(self)
    }

    fn halt_with(&mut self, halt: Halt) -> BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(Runner::halt_with(self, halt))
    }

    fn resume(&mut self) -> BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(Runner::resume(self))
    }

    fn refresh_halt(&mut self) -> BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(Runner::refresh_halt(self))
    }

    fn version(&self) -> Option<crate::bluegreen::VersionStatus> {
        Runner::version_status(self)
    }

    fn set_fence(&mut self, fence: Option<crate::cluster::Fence>) {
        Runner::set_fence(self, fence);
    }

    fn fence(&self) -> Option<&crate::cluster::Fence> {
        Runner::fence(self)
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
