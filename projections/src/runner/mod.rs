//! Checkpoint tracking around a projection: skip what is done, retry what fails, dead-letter
//! or stop when the retry policy gives up, record progress.

mod builder;
mod item;
mod outcome;
pub(crate) mod reads;
pub(crate) mod step;

pub use builder::RunnerBuilder;
pub use item::BatchItem;
pub use outcome::{BatchOutcome, EventOutcome, RunnerError, StoppedAt};

use std::future::Future;
use std::sync::Arc;

use tracing::Instrument;
use uuid::Uuid;

use crate::checkpoint::{CheckpointData, CheckpointRepository, CheckpointUpdate, LagMetrics};
use crate::dlq::{DLQRepository, DLQStatus, FailedEvent};
use crate::event::{AnyEvent, EventMetadata, EventRegistry};
use crate::projection::{HandlerError, Projection};
use crate::retry::RetryPolicy;
use crate::storage::StorageError;
use crate::store::EventStore;
use step::{DecodeFailure, Step, classify, event_data};

/// What the runner does when the retry policy gives up on an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Record the event in the dead-letter queue and move the checkpoint past it (default).
    #[default]
    DeadLetter,
    /// Return the error and apply nothing further until [`ProjectionRunner::resume`]; the
    /// checkpoint stays before the event.
    Stop,
}

/// Progress not yet written to the checkpoint repository.
#[derive(Debug, Default)]
struct Pending {
    position: Option<u64>,
    event_id: Option<Uuid>,
    /// The type of the event at `position`; kept as a reused buffer.
    event_type: String,
    applied: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.position.is_none() && self.applied == 0
    }

    /// Forgets what was written, keeping the buffer.
    fn clear(&mut self) {
        self.position = None;
        self.event_id = None;
        self.event_type.clear();
        self.applied = 0;
    }
}

/// Checkpoint tracking around a projection (the seed's `CheckpointTrackingProjection`).
///
/// For each event:
/// - at or below the checkpoint: skipped, nothing runs;
/// - of a type the projection does not subscribe to: passed over;
/// - otherwise the handler runs under the retry policy, sleeping its backoff between attempts;
///   on success the checkpoint moves forward (never backwards);
/// - when the policy gives up, the [`FailurePolicy`] decides.
///
/// Progress is written once per batch. A checkpoint write that fails is returned as
/// [`RunnerError::Checkpoint`]; the handler is not run again and nothing is dead-lettered.
///
/// A runner drives one projection from one ordered loop; it takes `&mut self` and no lock.
pub struct ProjectionRunner<P> {
    projection: P,
    name: String,
    checkpoints: Arc<dyn CheckpointRepository>,
    dead_letters: Arc<dyn DLQRepository>,
    retry: Arc<dyn RetryPolicy>,
    on_failure: FailurePolicy,
    tracing: bool,
    /// The checkpoint as this runner knows it, ahead of the repository by `pending`.
    position: Option<u64>,
    loaded: bool,
    pending: Pending,
    stopped: Option<StoppedAt>,
}

impl<P: Projection> From<P> for ProjectionRunner<P> {
    fn from(projection: P) -> Self {
        Self::new(projection)
    }
}

impl<P: Projection> ProjectionRunner<P> {
    /// A runner with every default (see [`RunnerBuilder`]).
    pub fn new(projection: P) -> Self {
        Self::builder(projection).build()
    }

    /// Configures a runner.
    pub fn builder(projection: P) -> RunnerBuilder<P> {
        RunnerBuilder::new(projection)
    }

    /// The projection's stable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The projection (its read model).
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The projection, mutably.
    pub fn projection_mut(&mut self) -> &mut P {
        &mut self.projection
    }

    /// The projection, giving up the runner.
    pub fn into_inner(self) -> P {
        self.projection
    }

    /// The wire names the projection subscribes to.
    pub fn subscribed_to(&self) -> &[&'static str] {
        self.projection.subscribed_to()
    }

    /// The checkpoint repository.
    pub fn checkpoints(&self) -> &Arc<dyn CheckpointRepository> {
        &self.checkpoints
    }

    /// The dead-letter repository.
    pub fn dead_letters(&self) -> &Arc<dyn DLQRepository> {
        &self.dead_letters
    }

    /// Where the projection stopped, under the stop policy.
    pub fn stopped(&self) -> Option<&StoppedAt> {
        self.stopped.as_ref()
    }

    /// Lets a stopped projection go on: the next batch tries the failed event again.
    pub fn resume(&mut self) {
        self.stopped = None;
    }

    fn storage_error(&self, source: StorageError) -> RunnerError {
        RunnerError::Storage {
            projection: self.name.clone(),
            source,
        }
    }

    async fn ensure_loaded(&mut self) -> Result<(), RunnerError> {
        if !self.loaded {
            let stored = self.checkpoints.get_checkpoint(&self.name).await;
            self.position = stored.map_err(|e| self.storage_error(e))?;
            self.loaded = true;
        }
        Ok(())
    }

    /// The current checkpoint position, including progress not yet written.
    pub async fn checkpoint(&mut self) -> Result<Option<u64>, RunnerError> {
        self.ensure_loaded().await?;
        Ok(self.position)
    }

    /// The stored checkpoint.
    pub fn checkpoint_data(
        &self,
    ) -> impl Future<Output = Result<Option<CheckpointData>, RunnerError>> + Send + 'static {
        reads::checkpoint_data(Arc::clone(&self.checkpoints), self.name.clone())
    }

    /// How far the projection is behind `store`; see [`LagMetrics`] for the definitions.
    pub fn lag_metrics<'a>(
        &self,
        store: &'a dyn EventStore,
    ) -> impl Future<Output = Result<LagMetrics, RunnerError>> + Send + 'a {
        let subscribed = self.projection.subscribed_to().to_vec();
        reads::lag_metrics(
            Arc::clone(&self.checkpoints),
            self.name.clone(),
            subscribed,
            store,
        )
    }

    /// Handles one event (a batch of one).
    pub async fn handle(&mut self, event: &AnyEvent) -> Result<EventOutcome, RunnerError> {
        let outcome = self.handle_batch(std::slice::from_ref(event)).await?;
        Ok(outcome.single())
    }

    /// Handles events in order and writes the checkpoint once at the end.
    ///
    /// On an error, the progress made before the failing event is written first, so nothing
    /// applied is applied again and nothing unapplied is passed over.
    pub async fn handle_batch<T: BatchItem>(
        &mut self,
        events: &[T],
    ) -> Result<BatchOutcome, RunnerError> {
        self.ensure_loaded().await?;
        if let Some(at) = &self.stopped {
            return Err(RunnerError::Stopped {
                projection: self.name.clone(),
                at: at.clone(),
                source: None,
            });
        }
        let mut outcome = BatchOutcome::default();
        for item in events {
            let step = classify(item, self.position, self.projection.subscribed_to());
            // The common steps are handled here, without entering the (large) future of the
            // retry and tracing machinery until a handler fails.
            let result = match step {
                Step::Skip => Ok(EventOutcome::Skipped),
                Step::PassOver {
                    position,
                    event_id,
                    event_type,
                } => {
                    self.advance(position, event_id, event_type, false);
                    Ok(EventOutcome::NotSubscribed)
                }
                Step::Apply(event) if !self.tracing => match self.projection.handle(event).await {
                    Ok(()) => {
                        self.advance(event.position(), event.event_id(), event.event_type(), true);
                        Ok(EventOutcome::Applied)
                    }
                    Err(error) => self.after_failure(event, error).await,
                },
                step => self.handle_step(step).await,
            };
            match result {
                Ok(event_outcome) => outcome.record(event_outcome),
                Err(error) => {
                    // Keep what was done before the failure; report the failure itself.
                    if let Err(flush_error) = self.flush().await {
                        tracing::error!(projection = %self.name, error = %flush_error, "could not record progress after a failure");
                    }
                    return Err(error);
                }
            }
        }
        self.flush().await?;
        outcome.checkpoint = self.position;
        Ok(outcome)
    }

    async fn handle_step(&mut self, step: Step<'_>) -> Result<EventOutcome, RunnerError> {
        match step {
            Step::Skip => Ok(EventOutcome::Skipped),
            Step::PassOver {
                position,
                event_id,
                event_type,
            } => {
                self.advance(position, event_id, event_type, false);
                Ok(EventOutcome::NotSubscribed)
            }
            Step::Undecodable(raw) => {
                let error = HandlerError::new(DecodeFailure(raw.error.to_string()));
                self.give_up(
                    Some(raw.position),
                    raw.event_id,
                    &raw.event_type,
                    raw.raw.clone(),
                    error,
                    1,
                )
                .await
            }
            Step::Apply(event) => match self.apply_with_retry(event).await {
                Ok(()) => {
                    self.advance(event.position(), event.event_id(), event.event_type(), true);
                    Ok(EventOutcome::Applied)
                }
                Err((error, attempts)) => self.give_up_on(event, error, attempts).await,
            },
        }
    }

    /// The first attempt at `event` failed with `error` (tracing off): retries, then the
    /// failure policy.
    async fn after_failure(
        &mut self,
        event: &AnyEvent,
        error: HandlerError,
    ) -> Result<EventOutcome, RunnerError> {
        match self.retry_after(event, error, None).await {
            Ok(_) => {
                self.advance(event.position(), event.event_id(), event.event_type(), true);
                Ok(EventOutcome::Applied)
            }
            Err((error, attempts)) => self.give_up_on(event, error, attempts).await,
        }
    }

    async fn give_up_on(
        &mut self,
        event: &AnyEvent,
        error: HandlerError,
        attempts: u32,
    ) -> Result<EventOutcome, RunnerError> {
        self.give_up(
            event.position(),
            event.event_id(),
            event.event_type(),
            event_data(event),
            error,
            attempts,
        )
        .await
    }

    fn advance(&mut self, position: Option<u64>, event_id: Uuid, event_type: &str, applied: bool) {
        if let Some(position) = position
            && self.position.is_none_or(|p| position > p)
        {
            self.position = Some(position);
            self.pending.position = Some(position);
            self.pending.event_id = Some(event_id);
            // Reuses the buffer: no allocation per event.
            self.pending.event_type.clear();
            self.pending.event_type.push_str(event_type);
        }
        if applied {
            self.pending.applied += 1;
        }
    }

    async fn flush(&mut self) -> Result<(), RunnerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let position = self.pending.position.or(self.position).unwrap_or(0);
        let mut update = CheckpointUpdate::new(position).with_events_applied(self.pending.applied);
        if let Some(event_id) = self.pending.event_id {
            update = update.with_event(event_id, self.pending.event_type.clone());
        }
        match self.checkpoints.update_checkpoint(&self.name, update).await {
            Ok(()) => {
                self.pending.clear();
                Ok(())
            }
            Err(source) => Err(RunnerError::Checkpoint {
                projection: self.name.clone(),
                position: self.pending.position,
                source,
            }),
        }
    }

    /// Runs the handler under the retry policy; on failure returns the last error and the
    /// number of attempts made.
    async fn apply_with_retry(&mut self, event: &AnyEvent) -> Result<(), (HandlerError, u32)> {
        if !self.tracing {
            return match self.projection.handle(event).await {
                Ok(()) => Ok(()),
                Err(error) => self.retry_after(event, error, None).await.map(|_| ()),
            };
        }
        let span = tracing::info_span!(
            "projection.handle",
            projection = %self.name,
            event_type = event.event_type(),
            event_id = %event.event_id(),
            position = event.position(),
            attempts = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let traced = async {
            let handler = tracing::debug_span!("projection.handler", attempt = 1);
            match self.projection.handle(event).instrument(handler).await {
                Ok(()) => Ok(1),
                Err(error) => self.retry_after(event, error, Some(&span)).await,
            }
        };
        let result = traced.instrument(span.clone()).await;
        match &result {
            Ok(attempts) => {
                span.record("attempts", attempts);
                span.record("outcome", "applied");
            }
            Err((_, attempts)) => {
                span.record("attempts", attempts);
                span.record("outcome", "failed");
            }
        }
        result.map(|_| ())
    }

    /// Attempt 1 failed with `error`: retries as the policy says. Returns the number of
    /// attempts on success, the last error and the attempts on failure.
    async fn retry_after(
        &mut self,
        event: &AnyEvent,
        mut error: HandlerError,
        span: Option<&tracing::Span>,
    ) -> Result<u32, (HandlerError, u32)> {
        let max_retries = self.retry.max_retries();
        let mut attempt: u32 = 0;
        loop {
            tracing::warn!(
                projection = %self.name,
                event_type = event.event_type(),
                event_id = %event.event_id(),
                attempt = attempt + 1,
                max_attempts = max_retries + 1,
                %error,
                "projection handler failed",
            );
            // The cap holds even for a policy that always answers "retry".
            if attempt >= max_retries || !self.retry.should_retry(attempt, &error) {
                return Err((error, attempt + 1));
            }
            tokio::time::sleep(self.retry.backoff(attempt)).await;
            attempt += 1;
            let result = match span {
                Some(_) => {
                    let handler = tracing::debug_span!("projection.handler", attempt = attempt + 1);
                    self.projection.handle(event).instrument(handler).await
                }
                None => self.projection.handle(event).await,
            };
            match result {
                Ok(()) => return Ok(attempt + 1),
                Err(next) => error = next,
            }
        }
    }

    async fn give_up(
        &mut self,
        position: Option<u64>,
        event_id: Uuid,
        event_type: &str,
        event_data: serde_json::Value,
        error: HandlerError,
        attempts: u32,
    ) -> Result<EventOutcome, RunnerError> {
        match self.on_failure {
            FailurePolicy::DeadLetter => {
                let failure = FailedEvent::new(
                    event_id, &self.name, event_type, event_data, &error, attempts,
                )
                .with_position(position);
                match self.dead_letters.add_failed_event(failure).await {
                    Ok(entry_id) => {
                        tracing::error!(
                            projection = %self.name, %event_id, event_type, attempts, entry_id, %error,
                            "event sent to the dead-letter queue",
                        );
                        self.advance(position, event_id, event_type, false);
                        Ok(EventOutcome::DeadLettered { entry_id })
                    }
                    Err(source) => Err(RunnerError::DeadLetter {
                        projection: self.name.clone(),
                        event_id,
                        handler_error: error.to_string(),
                        source,
                    }),
                }
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

    /// Clears the checkpoint, then the read model.
    ///
    /// The checkpoint goes first: if the process dies in between, the projection restarts from
    /// the beginning over a stale read model, which the next `reset` (or rebuild) repairs; the
    /// other order would leave an empty read model behind a checkpoint that claims it is full.
    pub async fn reset(&mut self) -> Result<(), RunnerError> {
        self.checkpoints
            .reset_checkpoint(&self.name)
            .await
            .map_err(|e| self.storage_error(e))?;
        self.position = None;
        self.loaded = true;
        self.pending.clear();
        self.stopped = None;
        self.projection
            .reset()
            .await
            .map_err(|source| RunnerError::Reset {
                projection: self.name.clone(),
                source,
            })
    }

    /// Runs dead-letter entry `entry_id` through the projection again (under the retry
    /// policy) and marks it resolved by `"replay"` on success. On failure the entry goes back
    /// to `failed` with the attempts added, and the error is returned.
    pub async fn replay_dead_letter(&mut self, entry_id: i64) -> Result<(), RunnerError> {
        let name = self.name.clone();
        let replay_error = move |reason: String| RunnerError::Replay {
            projection: name.clone(),
            entry_id,
            reason,
        };
        let entry = self
            .dead_letters
            .get_by_id(entry_id)
            .await
            .map_err(|e| self.storage_error(e))?
            .ok_or_else(|| replay_error("no such entry".into()))?;
        if entry.projection_name != self.name {
            return Err(replay_error(format!(
                "it belongs to projection `{}`",
                entry.projection_name
            )));
        }
        if entry.status == DLQStatus::Resolved {
            return Err(replay_error("it is already resolved".into()));
        }
        let event = decode_dead_letter(&entry.event_data).map_err(&replay_error)?;
        self.dead_letters
            .mark_retrying(entry_id)
            .await
            .map_err(|e| self.storage_error(e))?;
        match self.apply_with_retry(&event).await {
            Ok(()) => self
                .dead_letters
                .mark_resolved(entry_id, "replay")
                .await
                .map_err(|e| self.storage_error(e)),
            Err((error, attempts)) => {
                let failure = FailedEvent::new(
                    entry.event_id,
                    &self.name,
                    &entry.event_type,
                    entry.event_data.clone(),
                    &error,
                    attempts,
                )
                .with_position(entry.position);
                self.dead_letters
                    .add_failed_event(failure)
                    .await
                    .map_err(|e| self.storage_error(e))?;
                Err(replay_error(error.to_string()))
            }
        }
    }

    /// The failed dead-letter entries of this projection, oldest first.
    pub fn failed_events(
        &self,
    ) -> impl Future<Output = Result<Vec<crate::dlq::DLQEntry>, RunnerError>> + Send + 'static {
        reads::failed_events(Arc::clone(&self.dead_letters), self.name.clone())
    }
}

/// Decodes the `{"metadata", "payload"}` JSON of a dead-letter entry.
pub(crate) fn decode_dead_letter(data: &serde_json::Value) -> Result<AnyEvent, String> {
    let metadata = data
        .get("metadata")
        .ok_or("its event data has no metadata (the stored event never decoded)")?;
    let payload = data
        .get("payload")
        .ok_or("its event data has no payload (the stored event never decoded)")?;
    let metadata: EventMetadata = serde_json::from_value(metadata.clone())
        .map_err(|e| format!("its metadata does not decode: {e}"))?;
    EventRegistry::global()
        .decode(metadata, payload)
        .map_err(|e| e.to_string())
}
