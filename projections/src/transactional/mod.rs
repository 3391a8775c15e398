//! Database projections applied one transaction per batch: read-model writes, the checkpoint
//! and any dead-letter row commit together, so each event's effect happens exactly once.

#[cfg(feature = "postgres")]
mod postgres;
mod unit;

#[cfg(feature = "postgres")]
pub use postgres::PgTransactionUnit;
pub use unit::TransactionUnit;

use std::future::Future;
use std::sync::Arc;

use tracing::Instrument;
use uuid::Uuid;

use crate::checkpoint::{CheckpointData, CheckpointUpdate, LagMetrics};
use crate::dlq::FailedEvent;
use crate::event::AnyEvent;
use crate::projection::{DatabaseProjection, HandlerError};
use crate::retry::{ExponentialBackoffRetryPolicy, RetryPolicy};
use crate::runner::reads;
use crate::runner::step::{DecodeFailure, Step, classify, event_data};
use crate::runner::{BatchItem, BatchOutcome, FailurePolicy, RunnerError, StoppedAt};
use crate::storage::StorageError;
use crate::store::EventStore;

/// Runs a [`DatabaseProjection`] whose handlers write through the batch's transaction.
///
/// A batch is applied in one transaction that also locks and moves the checkpoint. When a
/// handler fails, the transaction is rolled back; the events before the failing one are
/// applied again in a fresh transaction and committed; the failing event is retried as the
/// retry policy says, each attempt in a fresh transaction (an aborted transaction never
/// poisons the next attempt); when the policy gives up, the dead-letter row and the checkpoint
/// move past the event commit together (or, under [`FailurePolicy::Stop`], the runner stops
/// before it).
///
/// Handlers that take no connection run inside the same transaction but cannot write through
/// it; their side effects happen again when a batch is re-applied. For projections whose
/// handlers take no connection at all, use [`ProjectionRunner`](crate::ProjectionRunner) with
/// database repositories: it holds no transaction open while handlers run.
pub struct TransactionalRunner<P, U> {
    projection: P,
    name: String,
    unit: Arc<U>,
    retry: Arc<dyn RetryPolicy>,
    on_failure: FailurePolicy,
    tracing: bool,
    stopped: Option<StoppedAt>,
    /// The checkpoint as last read or written in a transaction (`None` until then), so a batch
    /// reports its checkpoint without another round trip.
    known: Option<Option<u64>>,
}

/// Progress inside one transaction.
#[derive(Default)]
struct Progress {
    position: Option<u64>,
    event_id: Option<Uuid>,
    /// The type of the event at `position`; a buffer reused from event to event.
    event_type: String,
    applied: u64,
    moved: bool,
}

impl Progress {
    fn advance(&mut self, position: Option<u64>, event_id: Uuid, event_type: &str, applied: bool) {
        if let Some(position) = position
            && self.position.is_none_or(|p| position > p)
        {
            self.position = Some(position);
            self.event_id = Some(event_id);
            self.event_type.clear();
            self.event_type.push_str(event_type);
            self.moved = true;
        }
        if applied {
            self.applied += 1;
            self.moved = true;
        }
    }

    fn update(&self) -> Option<CheckpointUpdate> {
        if !self.moved {
            return None;
        }
        let mut update =
            CheckpointUpdate::new(self.position.unwrap_or(0)).with_events_applied(self.applied);
        if let Some(id) = self.event_id {
            update = update.with_event(id, self.event_type.clone());
        }
        Some(update)
    }
}

/// How one attempt in a transaction of its own ended.
enum Attempt {
    Applied,
    /// Another runner of the projection had already passed the event.
    AlreadyDone,
    Failed(HandlerError),
}

/// How a segment of a batch ended.
enum Segment {
    /// Committed up to the segment's end.
    Committed,
    /// Rolled back: the item at `at` failed with `error` (`retryable` is false for events
    /// that do not decode).
    Failed {
        at: usize,
        error: HandlerError,
        retryable: bool,
    },
}

impl<P, U> TransactionalRunner<P, U>
where
    P: DatabaseProjection,
    U: TransactionUnit<Connection = P::Connection>,
{
    /// A runner over `unit` with the default retry policy, dead-lettering on terminal failure.
    pub fn new(projection: P, unit: Arc<U>) -> Self {
        let name = projection.name().to_owned();
        Self {
            projection,
            name,
            unit,
            retry: Arc::new(ExponentialBackoffRetryPolicy::default()),
            on_failure: FailurePolicy::DeadLetter,
            tracing: true,
            stopped: None,
            known: None,
        }
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn retry_policy(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.retry = Arc::new(policy);
        self
    }

    /// Sets what happens when the retry policy gives up.
    #[must_use]
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// Whether to open `tracing` spans per event.
    #[must_use]
    pub fn tracing(mut self, enabled: bool) -> Self {
        self.tracing = enabled;
        self
    }

    /// The projection's stable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The projection, mutably.
    pub fn projection_mut(&mut self) -> &mut P {
        &mut self.projection
    }

    /// The transaction unit.
    pub fn unit(&self) -> &Arc<U> {
        &self.unit
    }

    /// Where the projection stopped, under the stop policy.
    pub fn stopped(&self) -> Option<&StoppedAt> {
        self.stopped.as_ref()
    }

    /// Lets a stopped projection go on: the next batch tries the failed event again.
    pub fn resume(&mut self) {
        self.stopped = None;
    }

    fn storage(&self, source: StorageError) -> RunnerError {
        RunnerError::Storage {
            projection: self.name.clone(),
            source,
        }
    }

    /// The stored checkpoint position.
    pub fn checkpoint(
        &self,
    ) -> impl Future<Output = Result<Option<u64>, RunnerError>> + Send + 'static {
        let (checkpoints, name) = (self.unit.checkpoints(), self.name.clone());
        async move {
            checkpoints
                .get_checkpoint(&name)
                .await
                .map_err(|source| RunnerError::Storage {
                    projection: name.clone(),
                    source,
                })
        }
    }

    /// The stored checkpoint.
    pub fn checkpoint_data(
        &self,
    ) -> impl Future<Output = Result<Option<CheckpointData>, RunnerError>> + Send + 'static {
        reads::checkpoint_data(self.unit.checkpoints(), self.name.clone())
    }

    /// How far the projection is behind `store`.
    pub fn lag_metrics<'a>(
        &self,
        store: &'a dyn EventStore,
    ) -> impl Future<Output = Result<LagMetrics, RunnerError>> + Send + 'a {
        let subscribed = self.projection.subscribed_to().to_vec();
        reads::lag_metrics(
            self.unit.checkpoints(),
            self.name.clone(),
            subscribed,
            store,
        )
    }

    /// The number of failed dead-letter entries of this projection.
    pub fn dead_letter_count(
        &self,
    ) -> impl Future<Output = Result<u64, RunnerError>> + Send + 'static {
        let failed = reads::failed_events(self.unit.dead_letters(), self.name.clone());
        async move { Ok(failed.await?.len() as u64) }
    }

    /// Applies `events` in order, one transaction for the batch (more only around failures).
    pub async fn handle_batch<T: BatchItem>(
        &mut self,
        events: &[T],
    ) -> Result<BatchOutcome, RunnerError> {
        if let Some(at) = &self.stopped {
            return Err(RunnerError::Stopped {
                projection: self.name.clone(),
                at: at.clone(),
                source: None,
            });
        }
        let mut outcome = BatchOutcome::default();
        let mut from = 0;
        while from < events.len() {
            let (at, error, retryable) = match self
                .segment(events, from, events.len(), &mut outcome)
                .await?
            {
                Segment::Committed => break,
                Segment::Failed {
                    at,
                    error,
                    retryable,
                } => (at, error, retryable),
            };
            self.commit_before(events, from, at, &mut outcome).await?;
            self.settle_failure(events, at, error, retryable, &mut outcome)
                .await?;
            from = at + 1;
        }
        outcome.checkpoint = match self.known {
            Some(known) => known,
            None => self.checkpoint().await?,
        };
        Ok(outcome)
    }

    /// Applies `events[from..until]` in one transaction and commits, or rolls back at the first
    /// failure.
    async fn segment<T: BatchItem>(
        &mut self,
        events: &[T],
        from: usize,
        until: usize,
        outcome: &mut BatchOutcome,
    ) -> Result<Segment, RunnerError> {
        let (mut tx, checkpoint) = self.begin_locked().await?;
        let mut progress = Progress {
            position: checkpoint,
            ..Progress::default()
        };
        let mut counts = BatchOutcome::default();
        for (index, item) in events.iter().enumerate().take(until).skip(from) {
            match classify(item, progress.position, self.projection.subscribed_to()) {
                Step::Skip => counts.skipped += 1,
                Step::PassOver {
                    position,
                    event_id,
                    event_type,
                } => {
                    progress.advance(position, event_id, event_type, false);
                    counts.not_subscribed += 1;
                }
                Step::Undecodable(raw) => {
                    self.unit.rollback(tx).await.map_err(|e| self.storage(e))?;
                    let error = HandlerError::new(DecodeFailure(raw.error.to_string()));
                    return Ok(Segment::Failed {
                        at: index,
                        error,
                        retryable: false,
                    });
                }
                Step::Apply(event) => match self.apply(&mut tx, event, 1).await {
                    Ok(()) => {
                        progress.advance(
                            event.position(),
                            event.event_id(),
                            event.event_type(),
                            true,
                        );
                        counts.applied += 1;
                    }
                    Err(error) => {
                        self.unit.rollback(tx).await.map_err(|e| self.storage(e))?;
                        return Ok(Segment::Failed {
                            at: index,
                            error,
                            retryable: true,
                        });
                    }
                },
            }
        }
        if let Some(update) = progress.update() {
            self.unit
                .write_checkpoint(&mut tx, &self.name, &update)
                .await
                .map_err(|source| RunnerError::Checkpoint {
                    projection: self.name.clone(),
                    position: progress.position,
                    source,
                })?;
        }
        self.unit
            .commit(tx)
            .await
            .map_err(|source| RunnerError::Checkpoint {
                projection: self.name.clone(),
                position: progress.position,
                source,
            })?;
        self.known = Some(progress.position);
        outcome.applied += counts.applied;
        outcome.skipped += counts.skipped;
        outcome.not_subscribed += counts.not_subscribed;
        Ok(Segment::Committed)
    }

    /// Commits the events before a failure at `at`. A handler that fails now where it had
    /// succeeded moves the failure earlier; the range shrinks each time, so this ends.
    async fn commit_before<T: BatchItem>(
        &mut self,
        events: &[T],
        from: usize,
        mut at: usize,
        outcome: &mut BatchOutcome,
    ) -> Result<(), RunnerError> {
        while at > from {
            match self.segment(events, from, at, outcome).await? {
                Segment::Committed => return Ok(()),
                Segment::Failed { at: earlier, .. } => at = earlier,
            }
        }
        Ok(())
    }

    /// Retries the failed item at `at`, each attempt in a fresh transaction, then applies the
    /// failure policy.
    async fn settle_failure<T: BatchItem>(
        &mut self,
        events: &[T],
        at: usize,
        mut error: HandlerError,
        retryable: bool,
        outcome: &mut BatchOutcome,
    ) -> Result<(), RunnerError> {
        let item = &events[at];
        let mut attempts: u32 = 1;
        if let (true, Ok(event)) = (retryable, item.decoded()) {
            let max_retries = self.retry.max_retries();
            while attempts <= max_retries && self.retry.should_retry(attempts - 1, &error) {
                tokio::time::sleep(self.retry.backoff(attempts - 1)).await;
                attempts += 1;
                match self.attempt_alone(event, attempts).await? {
                    Attempt::Applied => {
                        outcome.applied += 1;
                        return Ok(());
                    }
                    Attempt::AlreadyDone => {
                        outcome.skipped += 1;
                        return Ok(());
                    }
                    Attempt::Failed(again) => error = again,
                }
            }
        }
        let (position, event_id, event_type, data) = match item.decoded() {
            Ok(event) => (
                event.position(),
                event.event_id(),
                event.event_type(),
                event_data(event),
            ),
            Err(raw) => (
                Some(raw.position),
                raw.event_id,
                raw.event_type.as_str(),
                raw.raw.clone(),
            ),
        };
        match self.on_failure {
            FailurePolicy::DeadLetter => {
                let failure =
                    FailedEvent::new(event_id, &self.name, event_type, data, &error, attempts)
                        .with_position(position);
                let entry_id = self
                    .dead_letter_and_advance(&failure, position)
                    .await
                    .map_err(|source| RunnerError::DeadLetter {
                        projection: self.name.clone(),
                        event_id,
                        handler_error: error.to_string(),
                        source,
                    })?;
                let Some(entry_id) = entry_id else {
                    // Another runner of this projection got past the event meanwhile.
                    outcome.skipped += 1;
                    return Ok(());
                };
                tracing::error!(
                    projection = %self.name, %event_id, event_type, attempts, entry_id, %error,
                    "event sent to the dead-letter queue",
                );
                outcome.dead_lettered.push(entry_id);
                Ok(())
            }
            FailurePolicy::Stop => {
                let at = StoppedAt::new(error.kind(), error.to_string())
                    .with_event(position, event_id, event_type)
                    .with_attempts(attempts);
                tracing::error!(projection = %self.name, stopped_at = %at, "projection stopped");
                self.stopped = Some(at.clone());
                Err(RunnerError::Stopped {
                    projection: self.name.clone(),
                    at,
                    source: Some(error),
                })
            }
        }
    }

    /// One attempt at one event in its own transaction.
    async fn attempt_alone(
        &mut self,
        event: &AnyEvent,
        attempt: u32,
    ) -> Result<Attempt, RunnerError> {
        let (mut tx, checkpoint) = self.begin_locked().await?;
        if let (Some(position), Some(checkpoint)) = (event.position(), checkpoint)
            && position <= checkpoint
        {
            // Another runner of this projection got there first.
            self.unit.rollback(tx).await.map_err(|e| self.storage(e))?;
            return Ok(Attempt::AlreadyDone);
        }
        if let Err(error) = self.apply(&mut tx, event, attempt).await {
            self.unit.rollback(tx).await.map_err(|e| self.storage(e))?;
            return Ok(Attempt::Failed(error));
        }
        let mut progress = Progress::default();
        progress.advance(event.position(), event.event_id(), event.event_type(), true);
        if let Some(update) = progress.update() {
            self.unit
                .write_checkpoint(&mut tx, &self.name, &update)
                .await
                .map_err(|source| RunnerError::Checkpoint {
                    projection: self.name.clone(),
                    position: event.position(),
                    source,
                })?;
        }
        self.unit
            .commit(tx)
            .await
            .map_err(|source| RunnerError::Checkpoint {
                projection: self.name.clone(),
                position: event.position(),
                source,
            })?;
        self.known = Some(checkpoint.max(event.position()));
        Ok(Attempt::Applied)
    }

    async fn dead_letter_and_advance(
        &mut self,
        failure: &FailedEvent,
        position: Option<u64>,
    ) -> Result<Option<i64>, StorageError> {
        let mut tx = self.unit.begin().await?;
        let checkpoint = self.unit.lock_checkpoint(&mut tx, &self.name).await?;
        self.known = Some(checkpoint);
        if let (Some(position), Some(checkpoint)) = (position, checkpoint)
            && position <= checkpoint
        {
            self.unit.rollback(tx).await?;
            return Ok(None);
        }
        let entry_id = self.unit.dead_letter(&mut tx, failure).await?;
        if let Some(position) = position {
            let update = CheckpointUpdate::new(position)
                .with_event(failure.event_id, failure.event_type.clone());
            self.unit
                .write_checkpoint(&mut tx, &self.name, &update)
                .await?;
        }
        self.unit.commit(tx).await?;
        self.known = Some(checkpoint.max(position));
        Ok(Some(entry_id))
    }

    /// Opens a transaction and locks the projection's checkpoint in it; returns both.
    async fn begin_locked(&mut self) -> Result<(U::Transaction, Option<u64>), RunnerError> {
        let mut tx = self.unit.begin().await.map_err(|e| self.storage(e))?;
        let checkpoint = self
            .unit
            .lock_checkpoint(&mut tx, &self.name)
            .await
            .map_err(|e| self.storage(e))?;
        self.known = Some(checkpoint);
        Ok((tx, checkpoint))
    }

    /// Runs the handler for `event` through `tx`.
    async fn apply(
        &mut self,
        tx: &mut U::Transaction,
        event: &AnyEvent,
        attempt: u32,
    ) -> Result<(), HandlerError> {
        if !self.tracing {
            return self.projection.handle(&mut **tx, event).await;
        }
        let span = tracing::info_span!(
            "projection.handle",
            projection = %self.name,
            event_type = event.event_type(),
            event_id = %event.event_id(),
            position = event.position(),
            attempts = attempt,
        );
        self.projection
            .handle(&mut **tx, event)
            .instrument(span)
            .await
    }

    /// Runs dead-letter entry `entry_id` again in a transaction of its own, and marks it
    /// resolved by `"replay"` in that same transaction. On failure the entry goes back to
    /// `failed` with the attempt added, and the error is returned.
    pub async fn replay_dead_letter(&mut self, entry_id: i64) -> Result<(), RunnerError> {
        let name = self.name.clone();
        let replay_error = |reason: String| RunnerError::Replay {
            projection: name.clone(),
            entry_id,
            reason,
        };
        let dead_letters = self.unit.dead_letters();
        let entry = dead_letters
            .get_by_id(entry_id)
            .await
            .map_err(|e| self.storage(e))?
            .ok_or_else(|| replay_error("no such entry".into()))?;
        if entry.projection_name != self.name {
            return Err(replay_error(format!(
                "it belongs to projection `{}`",
                entry.projection_name
            )));
        }
        if entry.status == crate::dlq::DLQStatus::Resolved {
            return Err(replay_error("it is already resolved".into()));
        }
        let event = crate::runner::decode_dead_letter(&entry.event_data).map_err(&replay_error)?;
        let mut tx = self.unit.begin().await.map_err(|e| self.storage(e))?;
        match self.apply(&mut tx, &event, 1).await {
            Ok(()) => {
                self.unit
                    .resolve_dead_letter(&mut tx, entry_id, "replay")
                    .await
                    .map_err(|e| self.storage(e))?;
                self.unit.commit(tx).await.map_err(|e| self.storage(e))
            }
            Err(error) => {
                self.unit.rollback(tx).await.map_err(|e| self.storage(e))?;
                let failure = FailedEvent::new(
                    entry.event_id,
                    &self.name,
                    &entry.event_type,
                    entry.event_data.clone(),
                    &error,
                    1,
                )
                .with_position(entry.position);
                dead_letters
                    .add_failed_event(failure)
                    .await
                    .map_err(|e| self.storage(e))?;
                Err(replay_error(error.to_string()))
            }
        }
    }

    /// Clears the read model and the checkpoint in one transaction.
    pub async fn reset(&mut self) -> Result<(), RunnerError> {
        let mut tx = self.unit.begin().await.map_err(|e| self.storage(e))?;
        self.unit
            .reset_checkpoint(&mut tx, &self.name)
            .await
            .map_err(|e| self.storage(e))?;
        if let Err(source) = self.projection.reset(&mut *tx).await {
            self.unit.rollback(tx).await.map_err(|e| self.storage(e))?;
            return Err(RunnerError::Reset {
                projection: self.name.clone(),
                source,
            });
        }
        self.unit.commit(tx).await.map_err(|e| self.storage(e))?;
        self.stopped = None;
        self.known = Some(None);
        Ok(())
    }
}

impl<P, U> crate::registry::RegisteredProjection for TransactionalRunner<P, U>
where
    P: DatabaseProjection + 'static,
    U: TransactionUnit<Connection = P::Connection>,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn subscribed_to(&self) -> &[&'static str] {
        self.projection.subscribed_to()
    }

    fn handle_events<'a>(
        &'a mut self,
        events: &'a [AnyEvent],
    ) -> crate::storage::BoxFuture<'a, Result<BatchOutcome, RunnerError>> {
        Box::pin(self.handle_batch(events))
    }

    fn handle_stored<'a>(
        &'a mut self,
        events: &'a [crate::store::StoredEvent],
    ) -> crate::storage::BoxFuture<'a, Result<BatchOutcome, RunnerError>> {
        Box::pin(self.handle_batch(events))
    }

    fn reset(&mut self) -> crate::storage::BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(TransactionalRunner::reset(self))
    }

    fn checkpoint(&mut self) -> crate::storage::BoxFuture<'_, Result<Option<u64>, RunnerError>> {
        Box::pin(TransactionalRunner::checkpoint(self))
    }

    fn checkpoint_data(
        &self,
    ) -> crate::storage::BoxFuture<'_, Result<Option<CheckpointData>, RunnerError>> {
        Box::pin(TransactionalRunner::checkpoint_data(self))
    }

    fn lag_metrics<'a>(
        &'a self,
        store: &'a dyn EventStore,
    ) -> crate::storage::BoxFuture<'a, Result<LagMetrics, RunnerError>> {
        Box::pin(TransactionalRunner::lag_metrics(self, store))
    }

    fn dead_letter_count(&self) -> crate::storage::BoxFuture<'_, Result<u64, RunnerError>> {
        Box::pin(TransactionalRunner::dead_letter_count(self))
    }

    fn replay_dead_letter(
        &mut self,
        entry_id: i64,
    ) -> crate::storage::BoxFuture<'_, Result<(), RunnerError>> {
        Box::pin(TransactionalRunner::replay_dead_letter(self, entry_id))
    }

    fn stopped(&self) -> Option<&StoppedAt> {
        self.stopped.as_ref()
    }

    fn resume(&mut self) {
        self.stopped = None;
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
